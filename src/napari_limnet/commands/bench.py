"""``limnet bench``: speed and memory of one interaction round (a benchmark, not a test).

Usage::

    limnet bench [--threads 2] [--repeats 5] [--slices 200] [--device auto|cpu|cuda]
                 [--weights W.pt] [--memory-slices 400] [--no-memory] [--viewer] [--json OUT.json]

On a synthetic 512 x 512 x ``--slices`` CT-like int16 volume (air, a body of -100..60 HU
with noise, an ellipsoid organ of about 50 HU over most slices) it runs ``--repeats`` fresh
sessions, each with one positive click in the organ, and reports medians of:

* first response: from ``add_click`` + ``run_iter`` to the first ``RoundEvent`` (the
  prompted slice's final 2D mask);
* propagation: slices per second over the remaining events of the round;
* round: seconds for the whole round, committed;
* peak memory: peak RSS of a fresh subprocess that segments a 512 x 512 x
  ``--memory-slices`` int16 volume (one round and ``labels()``);
* the distance to the hardware's limit: the round's floating-point work
  (``torch.utils.flop_counter``, counted in one extra, untimed round) over its median time,
  as GFLOP/s and as a share of the device's matrix-product peak, fp32 and bf16, measured in
  the same run (a 2048 x 2048 matrix product on the same threads);
* with ``--viewer`` (napari and a display needed): the viewer's longest stall, the largest gap
  of a 10 ms Qt timer while the widget runs a round on a 40 x 192 x 192 volume with the
  widget's own engine thread count, and that round's slices per second.

It prints a markdown table with the thread count (``--threads 1`` gives the throughput the
widget gets when it leaves a core to the viewer) and runs on the GPU too when CUDA is
available (``--device auto``). Without the bundled weights it times untrained networks of the
same architecture and says so.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_parser", "make_ct", "matmul_peak", "round_flops", "run_bench"]


def make_ct(shape: tuple[int, int, int] = (200, 512, 512), seed: int = 0) -> np.ndarray:
    """A CT-like int16 volume: air, a noisy body, an ellipsoid organ over most slices."""
    rng = np.random.default_rng(seed)
    Z, Y, X = shape
    yy, xx = np.ogrid[:Y, :X]
    body = ((yy - Y / 2) / (0.42 * Y)) ** 2 + ((xx - X / 2) / (0.46 * X)) ** 2 <= 1
    tissue = np.where(xx < X / 2, -100, 60).astype(np.int16)  # fat left, muscle right
    zz = np.arange(Z)[:, None, None]
    oc = (Z / 2, 0.45 * Y, 0.55 * X)
    organ_r = (0.45 * Z, 0.18 * Y, 0.16 * X)
    vol = np.empty(shape, np.int16)
    for z in range(Z):
        sl = np.where(body, tissue, -1000).astype(np.int16)
        organ = (
            ((zz[z, 0, 0] - oc[0]) / organ_r[0]) ** 2
            + ((yy - oc[1]) / organ_r[1]) ** 2
            + ((xx - oc[2]) / organ_r[2]) ** 2
        ) <= 1
        sl[organ & body] = 50
        sl += rng.normal(0, 12, (Y, X)).astype(np.int16)
        vol[z] = sl
    return vol


def _model(weights: str | None, device: str) -> tuple[Any, str]:
    from ..engine.model import LimNetModel, load_model

    try:
        return load_model(weights, device=device), "bundled" if weights is None else weights
    except FileNotFoundError:
        import torch

        from ..engine.networks import LimNet

        torch.manual_seed(0)
        return LimNetModel(LimNet(), torch.device(device)), "untrained (no weights file)"


def _organ_session(vol: np.ndarray, model: Any, threads: int) -> tuple[Any, int, tuple]:
    """A fresh session on ``make_ct``'s volume, one object, and the click at its organ."""
    from ..engine.session import Session

    Z, Y, X = vol.shape
    s = Session(vol, spacing=(1.0, 0.8, 0.8), model=model, threads=threads)
    return s, s.new_object(), (Z // 2, int(0.45 * Y), int(0.55 * X))


def _one_round(vol: np.ndarray, model: Any, threads: int) -> dict[str, float]:
    s, obj, click = _organ_session(vol, model, threads)
    t0 = time.perf_counter()
    s.add_click(obj, click)
    it = s.run_iter(obj)
    next(it)
    t1 = time.perf_counter()
    n = 1
    for _ in it:
        n += 1
    t2 = time.perf_counter()
    return {
        "first_response_s": t1 - t0,
        "slices_per_s": (n - 1) / (t2 - t1) if n > 1 and t2 > t1 else float("nan"),
        "round_s": t2 - t0,
        "slices": float(n),
        "mask_voxels": float(s.mask(obj).sum()),
    }


def round_flops(vol: np.ndarray, model: Any, threads: int) -> dict[str, float]:
    """Floating-point operations of one round like ``_one_round``'s: of the first response
    (the prompted slice) and of the whole round, and its number of slices."""
    from torch.utils.flop_counter import FlopCounterMode

    s, obj, click = _organ_session(vol, model, threads)
    s.add_click(obj, click)
    counter = FlopCounterMode(display=False)
    with counter:
        it = s.run_iter(obj)
        next(it)
        first = counter.get_total_flops()
        n = 1 + sum(1 for _ in it)
    return {
        "first_flop": float(first),
        "round_flop": float(counter.get_total_flops()),
        "slices": n,
    }


def matmul_peak(dtype: str, threads: int, device: str = "cpu", n: int = 2048) -> float:
    """GFLOP/s of an ``n`` x ``n`` matrix product in ``dtype`` ("fp32" or "bf16"): the best of
    a few repeats after a warm-up (the device's practical peak for dense work). Where a 512
    product alone takes over 0.2 s (bf16 emulated on a CPU without bf16 units), that rate."""
    import torch

    torch.set_num_threads(threads)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    small = torch.randn(512, 512, device=device).to(dt)
    t0 = time.perf_counter()
    small @ small
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter() - t0
    if t > 0.2:
        return 2.0 * 512**3 / t / 1e9
    a = torch.randn(n, n, device=device).to(dt)
    b = torch.randn(n, n, device=device).to(dt)
    best = float("inf")
    for i in range(4):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first is a warm-up
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def two_spheres(shape: tuple[int, int, int] = (40, 192, 192)) -> np.ndarray:
    """Dark noisy volume (HU) with two bright spheres, left (x = 28 %) and right (x = 72 %)."""
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    r = shape[1] / 6
    rng = np.random.default_rng(0)
    vol = -100 + 20 * rng.standard_normal(shape)
    for xc in (shape[2] * 0.28, shape[2] * 0.72):
        d2 = (z - shape[0] / 2) ** 2 * (r / (shape[0] / 3)) ** 2 + (y - shape[1] / 2) ** 2
        vol[d2 + (x - xc) ** 2 < r**2] += 160
    return vol.astype(np.int16)


def viewer_stall(shape: tuple[int, int, int] = (40, 192, 192)) -> dict[str, float]:
    """The viewer's longest stall (ms) during a round run by the docked widget, as the user
    gets it: a shown napari viewer, the bundled weights, the widget's engine thread count.
    A warm-up round loads the model first; the measured round is a second object's."""
    import napari
    from qtpy.QtCore import QTimer

    viewer = napari.Viewer(show=True)
    try:
        viewer.add_image(two_spheres(shape), name="spheres", scale=(2.5, 0.8, 0.8))
        _, w = viewer.window.add_plugin_dock_widget("napari-limnet")
        st = w.state
        z, y = shape[0] // 2, shape[1] // 2
        st.points.add([z, y, int(shape[2] * 0.28)])
        w.wait_idle(300)
        w.new_object()
        gaps: list[float] = []
        last = [time.perf_counter()]

        def tick() -> None:
            now = time.perf_counter()
            gaps.append(now - last[0])
            last[0] = now

        timer = QTimer()
        timer.timeout.connect(tick)
        timer.start(10)
        w.wait_idle(1)
        gaps.clear()
        last[0] = time.perf_counter()
        st.points.add([z, y, int(shape[2] * 0.72)])
        w.wait_idle(300)
        timer.stop()
        return {
            "stall_ms": 1000 * max(gaps, default=float("nan")),
            "ticks": float(len(gaps)),
            "slices_per_s": float(w.last_round.get("slices_per_s", float("nan"))),
            "engine_threads": float(w.settings.engine_threads),
        }
    finally:
        viewer.close()


def _memory_probe(slices: int, threads: int, weights: str | None) -> None:
    """Run in a fresh process: print the peak RSS (MiB) of one round on a 512^2 volume."""
    import resource

    model, _ = _model(weights, "cpu")
    vol = make_ct((slices, 512, 512), seed=1)
    _one_round(vol, model, threads)
    from ..engine.session import Session

    s = Session(vol, model=model, threads=threads)
    o = s.new_object()
    s.add_click(o, (slices // 2, 230, 280))
    s.run(o)
    s.labels()
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _peak_memory(slices: int, threads: int, weights: str | None) -> float:
    code = (
        "from napari_limnet.commands.bench import _memory_probe; "
        f"_memory_probe({slices}, {threads}, {weights!r})"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_rss_mib"])


def run_bench(
    threads: int = 2,
    repeats: int = 5,
    slices: int = 200,
    devices: tuple[str, ...] = ("cpu",),
    weights: str | None = None,
    memory_slices: int | None = 400,
    viewer: bool = False,
) -> dict[str, Any]:
    """Run the benchmark; return the medians per device (and the raw runs)."""
    import torch

    vol = make_ct((slices, 512, 512))
    result: dict[str, Any] = {
        "threads": threads,
        "repeats": repeats,
        "volume": [slices, 512, 512],
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "devices": {},
    }
    for dev in devices:
        model, wname = _model(weights, dev)
        result["weights"] = wname
        _one_round(vol[: min(slices, 8)], model, threads)  # warm-up
        runs = [_one_round(vol, model, threads) for _ in range(repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        flops = round_flops(vol, model, threads)
        peaks = {d: matmul_peak(d, threads, dev) for d in ("fp32", "bf16")}
        med["gflop_per_slice"] = flops["round_flop"] / flops["slices"] / 1e9
        med["gflop_per_s"] = flops["round_flop"] / med["round_s"] / 1e9
        result["devices"][dev] = {"median": med, "runs": runs, "flops": flops, "peak": peaks}
    if memory_slices:
        result["peak_rss_mib"] = _peak_memory(memory_slices, threads, weights)
        result["memory_volume"] = [memory_slices, 512, 512]
    if viewer:
        result["viewer"] = viewer_stall()
    return result


def to_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"LIM-Net round on a {r['volume'][1]} x {r['volume'][2]} x {r['volume'][0]} CT, "
        f"{r['threads']} CPU thread(s), median of {r['repeats']} fresh sessions "
        f"(weights: {r.get('weights')}, torch {r['torch']})",
        "",
        "| device | first response (ms) | propagation (slices/s) | round (s) | slices "
        "| GFLOP/slice | GFLOP/s | of fp32 peak | of bf16 peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for dev, d in r["devices"].items():
        m, pk = d["median"], d.get("peak", {})
        rate = m.get("gflop_per_s", float("nan"))
        # bf16 slower than fp32: no bf16 units, the product is emulated; no peak to compare
        emulated = pk.get("bf16", 0.0) < pk.get("fp32", 0.0)
        bf16 = "- (emulated)" if emulated else f"{100 * rate / pk.get('bf16', float('nan')):.0f} %"
        lines.append(
            f"| {dev} | {1000 * m['first_response_s']:.0f} | {m['slices_per_s']:.1f} "
            f"| {m['round_s']:.2f} | {m['slices']:.0f} | {m.get('gflop_per_slice', 0):.2f} "
            f"| {rate:.0f} | {100 * rate / pk.get('fp32', float('nan')):.0f} % "
            f"| {bf16} |"
        )
    for dev, d in r["devices"].items():
        pk = d.get("peak")
        if pk:
            lines.append(
                f"\n{dev} matrix-product peak (2048 x 2048, {r['threads']} thread(s)): "
                f"fp32 {pk['fp32']:.0f} GFLOP/s, bf16 {pk['bf16']:.0f} GFLOP/s"
            )
    if "peak_rss_mib" in r:
        v = r["memory_volume"]
        lines += [
            "",
            f"Peak memory (RSS of a fresh process, one round + labels on a "
            f"{v[1]} x {v[2]} x {v[0]} int16 volume): {r['peak_rss_mib']:.0f} MiB",
        ]
    if "viewer" in r:
        v = r["viewer"]
        lines += [
            "",
            f"Viewer: longest stall {v['stall_ms']:.0f} ms during a widget round "
            f"({v['slices_per_s']:.1f} slices/s, {v['engine_threads']:.0f} engine thread(s), "
            f"{v['ticks']:.0f} ticks of a 10 ms timer)",
        ]
    return "\n".join(lines)


def _main(args: argparse.Namespace) -> int:
    import torch

    if args.device == "auto":
        devices: tuple[str, ...] = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
    else:
        devices = (args.device,)
    if args.threads < 1 or args.repeats < 1 or args.slices < 2:
        raise ValueError("--threads and --repeats must be >= 1, --slices >= 2")
    r = run_bench(
        threads=args.threads,
        repeats=args.repeats,
        slices=args.slices,
        devices=devices,
        weights=args.weights,
        memory_slices=None if args.no_memory else args.memory_slices,
        viewer=args.viewer,
    )
    print(to_markdown(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``limnet bench``."""
    p = subparsers.add_parser(
        "bench", help="speed and memory benchmark of a round", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="fresh sessions timed (default 5)")
    p.add_argument("--slices", type=int, default=200, help="slices of the timed volume")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--weights", default=None, help="weights file (default: bundled)")
    p.add_argument("--memory-slices", type=int, default=400, help="slices of the memory test")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    p.add_argument(
        "--viewer",
        action="store_true",
        help="also measure the napari viewer's longest stall during a widget round (display)",
    )
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=_main)
    return p
