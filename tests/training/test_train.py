"""Training: the loss goes down, checkpoints resume, export loads, DDP on gloo, `limnet train`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_limnet import cli
from napari_limnet.engine import model as model_mod
from napari_limnet.engine.networks import InteractionNet, LimNet
from napari_limnet.engine.preprocess import click_maps, norm_stats, normalise
from napari_limnet.training import batches as B
from napari_limnet.training import config as C
from napari_limnet.training import interaction, perturb
from napari_limnet.training import losses as L
from napari_limnet.training import train as T
from napari_limnet.training import weights as W
from napari_limnet.training.real_bank import LabelledVolume, build_bank
from napari_limnet.training.synthetic import generate

torch.set_num_threads(2)


def _tiny_config(out: Path, steps: int = 2, batch: int = 4) -> C.TrainConfig:
    cfg = C.TrainConfig(out=str(out), seed=0, device="cpu", threads=2, checkpoint_every=1e9)
    for s in C.STAGES:
        cfg.stages[s] = C.stage_config(s, steps=steps, batch=batch, real_fraction=0.0, frames=3)
    return cfg


def _write_config(path: Path, out: Path, steps: int, batch: int) -> Path:
    stage = {"steps": steps, "batch": batch, "real_fraction": 0.0, "frames": 3}
    raw = {
        "out": str(out),
        "seed": 0,
        "device": "cpu",
        "threads": 1,
        "cases": "",
        "checkpoint_every": 1e9,
        "stages": {s: dict(stage) for s in C.STAGES},
    }
    path.write_text(json.dumps(raw))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- (a) a few steps lower the loss ----------------------------------------------------------


def test_a_few_steps_lower_the_loss() -> None:
    # a fixed batch of synthetic slices (48 px windows keep it fast), one click each, built
    # with the training code's own pre-processing and loss
    size = 48
    g = torch.Generator().manual_seed(3)
    syn = generate(12, 1, size, g)
    keep = syn.target[:, 0].sum((1, 2)) >= 8
    raw, gt = syn.image[keep][:6], syn.target[keep][:6]
    assert len(raw) == 6
    pts = perturb.first_clicks(gt, g, jitter=0.0)[:, None]
    yy = torch.arange(size, dtype=torch.float32)
    d2 = (yy[None, :, None] - pts[:, 0, 0, None, None]) ** 2 + (
        yy[None, None, :] - pts[:, 0, 1, None, None]
    ) ** 2
    img = normalise(raw, norm_stats(raw, (d2 < 9)[:, None]))
    ones = torch.ones(len(raw), 1, dtype=torch.bool)
    empty = torch.zeros_like(gt, dtype=torch.float32)
    x = torch.cat([img, click_maps(pts, ones, size), empty, empty, empty], 1)

    torch.manual_seed(0)
    net = InteractionNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)

    def held_loss() -> float:
        with torch.no_grad():
            return float(L.seg_loss(net(x), gt))

    before = held_loss()
    for _ in range(15):
        opt.zero_grad()
        L.seg_loss(net(x), gt).backward()
        opt.step()
    after = held_loss()
    assert after < 0.7 * before, f"loss {before:.3f} -> {after:.3f}"


# --- (b) checkpoints resume ------------------------------------------------------------------


def test_train_stage_writes_and_resumes_checkpoints(tmp_path: Path, monkeypatch) -> None:
    calls = []
    step_fn = T.STEP["scorer"]

    def counting(*args):
        out = step_fn(*args)
        calls.append(bool(out))
        return out

    monkeypatch.setitem(T.STEP, "scorer", counting)
    cfg = _tiny_config(tmp_path / "run", steps=2, batch=4)
    ckpt = T.train_stage(cfg, "scorer", progress=False)
    assert ckpt == tmp_path / "run" / "scorer.ckpt"
    first = torch.load(ckpt, weights_only=True)
    assert first["step"] == 2 and sum(calls) == 2
    assert first["config"]["stages"]["scorer"]["steps"] == 2
    log = [json.loads(line) for line in (tmp_path / "run" / "scorer.log.jsonl").open()]
    assert log[0]["step"] == 1 and np.isfinite(log[0]["loss"])

    # the same budget again: nothing to do, the weights stay
    calls.clear()
    T.train_stage(cfg, "scorer", progress=False)
    assert sum(calls) == 0
    same = torch.load(ckpt, weights_only=True)
    assert same["step"] == 2
    assert all(torch.equal(same["model"][k], first["model"][k]) for k in first["model"])

    # a larger budget resumes at step 2 and runs only the 2 missing steps
    cfg.stages["scorer"].steps = 4
    T.train_stage(cfg, "scorer", progress=False)
    assert sum(calls) == 2
    second = torch.load(ckpt, weights_only=True)
    assert second["step"] == 4
    assert second["elapsed"] >= first["elapsed"]
    assert any(not torch.equal(second["model"][k], first["model"][k]) for k in first["model"])
    # the optimiser state came back too (Adam has taken 4 steps)
    steps = {int(s["step"]) for s in second["optim"]["state"].values()}
    assert steps == {4}


def test_compact_checkpoint_resumes_with_a_new_warm_up(tmp_path: Path) -> None:
    cfg = _tiny_config(tmp_path / "run", steps=2, batch=4)
    full = torch.load(T.train_stage(cfg, "scorer", progress=False), weights_only=True)

    small = W.compact_checkpoint(tmp_path / "run" / "scorer.ckpt", tmp_path / "c" / "scorer.ckpt")
    saved = torch.load(small, weights_only=True)
    assert "optim" not in saved and saved["step"] == 2
    assert saved["config"] == full["config"]
    for k, v in full["model"].items():
        w = saved["model"][k]
        if v.is_floating_point():
            assert w.dtype == torch.float16
            torch.testing.assert_close(w.float(), v, atol=2e-3, rtol=1e-3)
        else:
            assert torch.equal(w, v)
    assert small.stat().st_size < 0.4 * (tmp_path / "run" / "scorer.ckpt").stat().st_size

    # resumed from it (a fresh machine): 2 more steps, the learning rate warming up afresh
    cfg.out = str(tmp_path / "c")
    cfg.stages["scorer"].steps = 4
    T.train_stage(cfg, "scorer", progress=False)
    resumed = torch.load(small, weights_only=True)
    assert resumed["step"] == 4 and "optim" in resumed
    assert {int(s["step"]) for s in resumed["optim"]["state"].values()} == {2}
    log = [json.loads(line) for line in (tmp_path / "c" / "scorer.log.jsonl").open()]
    assert log[0]["step"] == 3
    # step 3 of 4: the first of the new warm-up, halfway down the cosine
    lr = cfg.stages["scorer"].lr
    assert log[0]["lr"] == pytest.approx(lr / T.REWARM_STEPS * 0.5)


def test_erode_and_dilate_match_max_pooling() -> None:
    pool = torch.nn.functional.max_pool2d
    pad = torch.nn.functional.pad
    g = torch.Generator().manual_seed(4)
    for shape in ((6, 1, 40, 33), (2, 1, 128, 128)):
        x = (torch.rand(shape, generator=g) > 0.35).float()
        assert torch.equal(perturb.dilate(x), pool(pad(x, (1, 1, 1, 1), value=0.0), 3, 1))
        # the border counts as outside: a full mask loses its outer ring
        want = 1 - pool(pad(1 - x, (1, 1, 1, 1), value=1.0), 3, 1)
        assert torch.equal(perturb.erode(x), want)
    full = torch.ones(1, 1, 5, 5)
    assert perturb.erode(full).sum() == 9 and perturb.erode(full, 2).sum() == 1


def test_cpu_bf16_training_steps(tmp_path: Path) -> None:
    cfg = _tiny_config(tmp_path / "run", steps=2, batch=4)
    cfg.cpu_bf16 = True
    cfg.stages["interaction"].realistic_prev = 0.5
    torch.manual_seed(cfg.seed)  # train_stage seeds the same way, so both start alike
    before = LimNet().interaction.state_dict()
    ckpt = torch.load(T.train_stage(cfg, "interaction", progress=False), weights_only=True)
    assert ckpt["step"] == 2 and ckpt["config"]["cpu_bf16"] is True
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert any(not torch.equal(ckpt["model"][k], before[k]) for k in before)
    # the channels-last weights load into a plain network
    InteractionNet().load_state_dict(ckpt["model"])


def test_cpu_bf16_memory_training_steps(tmp_path: Path) -> None:
    # the memory network crashed the process in bf16 when it was put in channels-last
    cfg = _tiny_config(tmp_path / "run", steps=2, batch=4)
    cfg.cpu_bf16 = True
    torch.manual_seed(cfg.seed)
    before = LimNet().memory.state_dict()
    ckpt = torch.load(T.train_stage(cfg, "memory", progress=False), weights_only=True)
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert any(not torch.equal(ckpt["model"][k], before[k]) for k in before)


def test_unknown_stage_and_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        T.train_stage(_tiny_config(tmp_path), "decoder", progress=False)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stages": {"decoder": {"steps": 1}}}))
    with pytest.raises(ValueError, match="unknown training stage"):
        C.TrainConfig.load(bad)


def test_each_stage_takes_its_own_options(tmp_path: Path) -> None:
    """A config per stage: an option of another stage is refused, naming the stage."""
    assert isinstance(C.stage_config("interaction", box_margin=0.3), C.InteractionConfig)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stages": {"memory": {"steps": 1, "box_margin": 0.3}}}))
    with pytest.raises(ValueError, match=r"memory stage has no option\(s\) \['box_margin'\]"):
        C.TrainConfig.load(bad)
    cfg = _tiny_config(tmp_path)
    cfg.stages["scorer"] = C.MemoryConfig(steps=1)
    with pytest.raises(ValueError, match="must be a ScorerConfig"):
        T.train_stage(cfg, "scorer", progress=False)


def test_config_load(tmp_path: Path) -> None:
    path = _write_config(tmp_path / "c.json", tmp_path / "out", steps=3, batch=5)
    cfg = C.TrainConfig.load(path)
    assert cfg.out == str(tmp_path / "out") and cfg.device == "cpu"
    assert set(cfg.stages) == set(C.STAGES)
    assert cfg.stages["memory"] == C.MemoryConfig(steps=3, batch=5, real_fraction=0.0, frames=3)


# --- (c) export --------------------------------------------------------------------------------


def test_export_writes_weights_that_load(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = LimNet()
    for i, stage in enumerate(C.STAGES):
        part = getattr(net, stage)
        torch.save(
            {
                "model": part.state_dict(),
                "optim": {},
                "step": 10 + i,
                "elapsed": 1.5,
                "config": {},
            },
            tmp_path / f"{stage}.ckpt",
        )
    path = W.export(tmp_path, tmp_path / "w" / "limnet.pt", {"note": "x"})
    loaded = model_mod.load_model(path, device="cpu")
    assert loaded.meta["note"] == "x"
    assert loaded.meta["training"]["memory"] == {"steps": 11, "seconds": 1.5}
    want, got = net.state_dict(), loaded.net.state_dict()
    for k in want:
        if want[k].is_floating_point():
            torch.testing.assert_close(got[k], want[k].half().float())
        else:
            assert torch.equal(got[k], want[k])


def test_export_needs_every_stage(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        W.export(tmp_path, tmp_path / "w.pt")


# --- (d) DistributedDataParallel, two CPU processes on gloo ------------------------------------

_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _torchrun(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        *args,
    ]
    env = {**_ENV, "MASTER_PORT": str(port)}
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_ddp_two_processes_gloo(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path / "tiny.json", tmp_path / "ddp", steps=2, batch=4)
    res = _torchrun(
        [
            "-m",
            "napari_limnet.commands.train",
            "--config",
            str(cfg),
            "--stage",
            "scorer",
            "--no-progress",
        ],
        tmp_path,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    saved = torch.load(tmp_path / "ddp" / "scorer.ckpt", weights_only=True)
    assert saved["step"] == 2
    assert not (tmp_path / "ddp" / "scorer.tmp").exists()


_SYNC_DRIVER = """
import sys
import torch
import torch.distributed as dist
from napari_limnet.training import config as C
from napari_limnet.training import train as T

def rank0_named():  # each rank saves its own checkpoint; DDP itself is unchanged
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return 0, dist.get_world_size()

T._ddp = rank0_named
dist.init_process_group("gloo")
rank = dist.get_rank()
# a different seed per rank: different data and a different initialisation
cfg = C.TrainConfig(out=f"{sys.argv[1]}/r{rank}", seed=rank, device="cpu", threads=1)
for stage in sys.argv[2:]:
    cfg.stages[stage] = C.stage_config(stage, steps=2, batch=2, real_fraction=0.0, frames=3)
    T.train_stage(cfg, stage, progress=False)
"""


def test_ddp_ranks_stay_in_sync(tmp_path: Path) -> None:
    """After training on different data, both ranks hold the same weights (gradients averaged)."""
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(_SYNC_DRIVER))
    stages = ["scorer", "memory"]
    res = _torchrun([str(driver), str(tmp_path), *stages], tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for stage in stages:
        a = torch.load(tmp_path / "r0" / f"{stage}.ckpt", weights_only=True)["model"]
        b = torch.load(tmp_path / "r1" / f"{stage}.ckpt", weights_only=True)["model"]
        diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        assert diff == 0.0, f"{stage}: the ranks' weights differ by {diff}"


# --- (e) `limnet train` end to end -------------------------------------------------------------


def test_limnet_train_all_and_export(tmp_path: Path, capsys) -> None:
    cfg = _write_config(tmp_path / "tiny.json", tmp_path / "run", steps=1, batch=2)
    weights = tmp_path / "W.pt"
    rc = cli.main(
        [
            "train",
            "--config",
            str(cfg),
            "--stage",
            "all",
            "--export",
            str(weights),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "weights written" in capsys.readouterr().out
    for stage in C.STAGES:
        assert torch.load(tmp_path / "run" / f"{stage}.ckpt", weights_only=True)["step"] == 1
    m = model_mod.load_model(weights, device="cpu")
    assert set(m.meta["training"]) == set(C.STAGES)
    assert Path(str(weights) + ".sha256").is_file()


def test_limnet_train_some_stages_from_base_weights(tmp_path: Path) -> None:
    """A fine-tuning run: two stages in parallel processes, the third from the base weights."""
    torch.manual_seed(1)
    base_net = LimNet()
    base = model_mod.save_weights(base_net, tmp_path / "base.pt", {"training": {}})
    cfg = _write_config(tmp_path / "tiny.json", tmp_path / "run", steps=1, batch=2)
    weights = tmp_path / "W.pt"
    args = ["train", "--config", str(cfg), "--stage", "interaction,scorer", "--parallel"]
    args += ["--init-weights", str(base), "--export", str(weights), "--no-progress"]
    assert cli.main(args) == 0
    assert not (tmp_path / "run" / "memory.ckpt").exists()
    m = model_mod.load_model(weights, device="cpu")
    assert set(m.meta["training"]) == {"interaction", "scorer"}
    assert m.meta["training"]["scorer"]["fine_tuned_from"] == "base.pt"
    for k, v in base_net.memory.state_dict().items():
        torch.testing.assert_close(m.net.memory.state_dict()[k], v.half().float())
    tuned = torch.load(tmp_path / "run" / "interaction.ckpt", weights_only=True)["model"]
    k = next(iter(tuned))
    assert not torch.equal(tuned[k].half(), base_net.interaction.state_dict()[k].half())


def test_limnet_train_bad_stage(tmp_path: Path, capsys) -> None:
    cfg = _write_config(tmp_path / "tiny.json", tmp_path / "run", steps=1, batch=2)
    assert cli.main(["train", "--config", str(cfg), "--stage", "decoder"]) == 2
    assert "unknown stage" in capsys.readouterr().err


# --- real bank ---------------------------------------------------------------------------------


def _volume() -> LabelledVolume:
    rng = np.random.default_rng(0)
    img = rng.normal(0.0, 10.0, (16, 48, 40)).astype(np.float32)
    lab = np.zeros(img.shape, np.int16)
    lab[3:13, 10:30, 8:28] = 1  # large enough
    lab[5:7, 35:38, 30:33] = 2  # 18 voxels: too small, never a target
    img[lab == 1] += 200.0
    img[lab == 2] -= 100.0
    return LabelledVolume(img, lab, (3.0, 0.8, 0.8), "tiny")


def test_real_bank() -> None:
    vol = _volume()
    bank = build_bank([vol], n=8, frames=3, size=32, seed=0)
    assert len(bank) == 8
    assert bank.image.shape == (8, 3, 32, 32) and bank.image.dtype == torch.float16
    assert bank.target.shape == (8, 3, 32, 32) and bank.target.dtype == torch.bool
    assert (bank.target[:, 0].sum((1, 2)) >= 4).all()
    img = bank.image.float()
    assert torch.isfinite(img).all()
    assert img.min() >= vol.image.min() - 1 and img.max() <= vol.image.max() + 1
    # the targets are the bright structure: inside them the image is bright
    assert img[bank.target].mean() > 150
    assert img[~bank.target].mean() < 100
    # reproducible from its seed
    again = build_bank([vol], n=8, frames=3, size=32, seed=0)
    assert torch.equal(again.image, bank.image) and torch.equal(again.target, bank.target)


def test_real_bank_without_a_large_structure() -> None:
    vol = _volume()
    vol.labels[vol.labels == 1] = 0
    with pytest.raises(ValueError, match="large enough"):
        build_bank([vol], n=2, frames=3, size=32, seed=0)


def test_export_takes_missing_stages_from_base(tmp_path):
    """A fine-tuning run that trained one stage exports it over the base weights' other stages."""
    from napari_limnet.engine.model import load_model, save_weights
    from napari_limnet.engine.networks import LimNet
    from napari_limnet.training.weights import export

    torch.manual_seed(0)
    base_net = LimNet()
    base = save_weights(
        base_net, tmp_path / "base.pt", {"training": {"interaction": {"steps": 7}}}
    )
    tuned = LimNet().scorer
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": tuned.state_dict(), "step": 3, "elapsed": 1.0}, run / "scorer.ckpt")
    out = export(run, tmp_path / "w.pt", base=base)
    model = load_model(out, device="cpu")
    for k, v in tuned.state_dict().items():
        torch.testing.assert_close(model.net.scorer.state_dict()[k], v.half().float())
    for k, v in base_net.interaction.state_dict().items():
        torch.testing.assert_close(model.net.interaction.state_dict()[k], v.half().float())
    assert model.meta["training"]["scorer"]["fine_tuned_from"] == "base.pt"
    assert model.meta["training"]["interaction"]["steps"] == 7
    with pytest.raises(FileNotFoundError):
        export(run, tmp_path / "w2.pt")  # without base every stage is required
    # the checkpoint's config says where its run started: random weights, or a weights file
    for init, want in (("", None), ("/somewhere/start.pt", "start.pt")):
        torch.save(
            {
                "model": tuned.state_dict(),
                "step": 3,
                "elapsed": 1.0,
                "config": {"init_weights": init},
            },
            run / "scorer.ckpt",
        )
        meta = load_model(export(run, tmp_path / "w3.pt", base=base), device="cpu").meta
        assert meta["training"]["scorer"].get("fine_tuned_from") == want


def test_training_logs_validation_dice(tmp_path: Path) -> None:
    """With ``validate_every``, the log gets val_* records on stacks of the validation cases."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    cases = []
    for cid in ("tr", "va"):
        img = rng.normal(0, 10, (40, 40, 12)).astype(np.float32)
        lab = np.zeros(img.shape, np.uint8)
        lab[10:30, 12:28, 2:10] = 1
        img[lab > 0] += 100
        for name, arr in (("image", img), ("label", lab)):
            nib.save(
                nib.Nifti1Image(arr, np.diag([1.0, 1.0, 3.0, 1.0])),
                tmp_path / f"{cid}_{name}.nii.gz",
            )
        cases.append(
            {"id": cid, "image": f"{cid}_image.nii.gz", "labels": {"label": f"{cid}_label.nii.gz"}}
        )
    (tmp_path / "cases.json").write_text(json.dumps({"cases": cases}))
    (tmp_path / "split.json").write_text(json.dumps({"train": ["tr"], "validation": ["va"]}))
    cfg = C.TrainConfig(
        out=str(tmp_path / "run"),
        device="cpu",
        threads=2,
        cases=str(tmp_path / "cases.json"),
        split=str(tmp_path / "split.json"),
        real_bank=8,
        checkpoint_every=1e9,
        validate_every=1e-9,
        val_stacks=16,
    )
    cfg.stages["interaction"] = C.InteractionConfig(steps=2, batch=4, real_fraction=0.5)
    T.train_stage(cfg, "interaction", progress=False)
    recs = [json.loads(line) for line in (tmp_path / "run" / "interaction.log.jsonl").open()]
    vals = [r for r in recs if "val_dice" in r]
    assert len(vals) == 3  # after steps 1 and 2, and at the end
    assert all(0.0 <= r["val_dice"] <= 1.0 and r["val_loss"] > 0 for r in vals)
    assert vals[-1]["step"] == 2
    # the same fixed stacks and clicks: the last two records (same weights) agree
    assert vals[-1]["val_dice"] == vals[-2]["val_dice"]


def test_propagated_like_masks() -> None:
    """Neighbouring-slice masks, leaks only into similar tissue, seeded."""
    stack = torch.zeros(3, 2, 32, 32, dtype=torch.bool)
    stack[:, 0, 10:20, 10:20] = True  # the object on slice 0
    stack[:, 1, 12:24, 8:18] = True  # ... and on the neighbouring slice
    similar = torch.ones(3, 1, 32, 32)  # nothing looks like the object ...
    similar[:, :, :, :16] = 0.0  # ... except the left half of the slice
    out1 = perturb.propagated_like(stack, similar, torch.Generator().manual_seed(4))
    out2 = perturb.propagated_like(stack, similar, torch.Generator().manual_seed(4))
    assert out1.shape == (3, 1, 32, 32) and out1.dtype == torch.bool
    assert torch.equal(out1, out2)
    union = stack[:, 0] | stack[:, 1]
    # grown only within the left half (similar tissue); no pixel of the right half is added
    assert not (out1[:, 0] & ~union)[:, :, 16:].any()
    many = perturb.propagated_like(
        stack.repeat(40, 1, 1, 1), similar.repeat(40, 1, 1, 1), torch.Generator().manual_seed(1)
    )
    area = many.sum((1, 2, 3))
    assert (area > 120).any()  # leaked or the larger neighbouring mask
    assert (area < 100).any()  # shrunk


def test_leaked_masks_grow_only_into_similar_tissue() -> None:
    x = torch.zeros(4, 1, 48, 48)
    x[:, :, 20:28, 20:28] = 1.0  # an 8 x 8 object
    similar = torch.ones(4, 1, 48, 48)  # nothing looks like the object ...
    similar[:, :, :, :24] = 0.0  # ... except the left half
    out = perturb.leaked(x, similar, torch.Generator().manual_seed(3))
    again = perturb.leaked(x, similar, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and torch.equal(out, again)
    assert (out >= x).all()  # a leak only adds
    assert not (out > x)[..., 24:].any()  # never into dissimilar tissue
    grew = (out > x).flatten(1).any(1)
    assert grew.all()  # each grows by at least one pixel into the similar side
    # by at most 0.8 of the equivalent radius (8 / sqrt(pi) * 0.8 -> 4 pixels)
    assert not out[..., :, : 20 - 4].any() and not out[..., : 20 - 4, :].any()


@pytest.mark.parametrize("option", [{"realistic_prev": 1.0}])
def test_interaction_step_with_option(option: dict) -> None:
    cfg = C.InteractionConfig(batch=4, real_fraction=0.0, **option)
    data = B.Batches(None, 0, torch.device("cpu"))
    out = interaction.step(
        InteractionNet(), data, cfg, lambda: torch.autocast("cpu", enabled=False)
    )
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_correction_start_share(share: float, monkeypatch) -> None:
    # Samples that start from an existing mask get their first click on its error before the
    # network runs; with none of them, the first click on an error follows a forward pass.
    events: list[str] = []
    real_error_clicks = perturb.error_clicks

    def error_clicks(gt, pred, g, *a, **k):
        events.append("click")
        return real_error_clicks(gt, pred, g, *a, **k)

    monkeypatch.setattr(perturb, "error_clicks", error_clicks)
    net = InteractionNet()
    net.register_forward_hook(lambda *_: events.append("net"))
    cfg = C.InteractionConfig(batch=4, real_fraction=0.0, correction_start=share)
    data = B.Batches(None, 0, torch.device("cpu"))
    interaction.step(net, data, cfg, lambda: torch.autocast("cpu", enabled=False))
    assert events[0] == ("click" if share == 1.0 else "net")


def test_seg_loss_is_bce_plus_soft_dice() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 16, 16, requires_grad=True)
    target = torch.rand(3, 1, 16, 16) > 0.5
    bce = F.binary_cross_entropy_with_logits(logits, target.float())
    p, t = torch.sigmoid(logits), target.float()
    dice = (
        1 - (2 * (p * t).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + t.sum((1, 2, 3)) + 1)
    ).mean()
    assert torch.allclose(L.seg_loss(logits, target), bce + dice)
