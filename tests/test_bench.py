"""``limnet bench``'s distance to the hardware: the round's FLOPs and the matrix-product peaks
(the timings themselves belong to the benchmark, not to tests)."""

from __future__ import annotations

from napari_limnet.commands import bench


def test_round_flops_and_matmul_peak() -> None:
    import napari_limnet

    model = napari_limnet.load_model(device="cpu")
    f = bench.round_flops(bench.make_ct((6, 128, 128)), model, threads=1)
    assert f["slices"] >= 2 and 0 < f["first_flop"] < f["round_flop"]
    # the propagated slices cost less than the prompted one's zoom-in passes
    per_slice = (f["round_flop"] - f["first_flop"]) / (f["slices"] - 1)
    assert 0 < per_slice < f["first_flop"]
    assert bench.matmul_peak("fp32", 1, n=256) > 0.1


def test_markdown_shows_the_share_of_the_peaks() -> None:
    med = {
        "first_response_s": 0.05,
        "slices_per_s": 60.0,
        "round_s": 3.0,
        "slices": 181.0,
        "gflop_per_slice": 1.3,
        "gflop_per_s": 80.0,
    }
    r = {
        "volume": [200, 512, 512],
        "threads": 2,
        "repeats": 5,
        "weights": "bundled",
        "torch": "x",
        "devices": {"cpu": {"median": med, "peak": {"fp32": 160.0, "bf16": 640.0}}},
    }
    text = bench.to_markdown(r)
    assert "| 80 | 50 % | 12 % |" in text
    assert "fp32 160 GFLOP/s, bf16 640 GFLOP/s" in text
