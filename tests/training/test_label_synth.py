"""SynthSeg-style repainting of real stacks (``label_synth``): the bank's label maps, the
painter, the batches and a training run that uses them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_limnet.engine.networks import CROP, InteractionNet
from napari_limnet.training import batches as B
from napari_limnet.training import config as C
from napari_limnet.training import train as T
from napari_limnet.training.real_bank import LabelledVolume, build_bank
from napari_limnet.training.synthetic import paint_labels

torch.set_num_threads(2)


def _volume() -> LabelledVolume:
    """A bright target box beside a dark box (never a target: too small) in a ramp."""
    rng = np.random.default_rng(1)
    z, y, x = np.meshgrid(np.arange(12), np.arange(40), np.arange(40), indexing="ij")
    img = (x * 3.0 + rng.normal(0.0, 1.0, x.shape)).astype(np.float32)
    lab = np.zeros(img.shape, np.int16)
    lab[2:10, 8:24, 8:22] = 7
    lab[2:10, 26:32, 26:32] = 40
    img[lab == 7] += 300.0
    img[lab == 40] -= 300.0
    return LabelledVolume(img, lab, (2.0, 1.0, 1.0), "boxes")


def test_bank_label_maps_match_the_targets() -> None:
    vol = _volume()
    plain = build_bank([vol], n=6, frames=2, size=32, seed=3, min_voxels=500)
    bank = build_bank([vol], n=6, frames=2, size=32, seed=3, min_voxels=500, keep_labels=True)
    # keeping the labels draws nothing more: the same stacks
    assert torch.equal(plain.image, bank.image) and torch.equal(plain.target, bank.target)
    assert plain.labels is None
    assert bank.labels is not None and bank.labels.shape == (6, 2, 32, 32)
    assert bank.labels.dtype == torch.int16
    for lab, tgt in zip(bank.labels, bank.target, strict=True):
        ids = torch.unique(lab[tgt])
        assert len(ids) == 1 and ids.item() != 0  # the target is exactly one label
        assert torch.equal(lab == ids.item(), tgt)
        assert int(lab.max()) < len(torch.unique(lab)) + 1  # renumbered, not 7 or 40
    # the dark box shows up as a label of its own in some stacks
    assert any(len(torch.unique(lab)) == 3 for lab in bank.labels)


def test_paint_labels_gives_each_label_its_own_intensity() -> None:
    labels = torch.zeros(16, 2, 48, 48, dtype=torch.int16)
    labels[:, :, 10:30, 10:30] = 1
    labels[:, :, 32:44, 5:20] = 2
    a = paint_labels(labels, torch.Generator().manual_seed(0))
    b = paint_labels(labels, torch.Generator().manual_seed(0))
    c = paint_labels(labels, torch.Generator().manual_seed(1))
    assert a.shape == labels.shape and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the contrast between two structures changes from stack to stack, sign included
    inner = a[:, :, 14:26, 14:26].mean((1, 2, 3))
    outer = a[:, :, 0:8, 30:48].mean((1, 2, 3))
    diff = (inner - outer) / (a.amax((1, 2, 3)) - a.amin((1, 2, 3)))
    assert (diff > 0.05).any() and (diff < -0.05).any()


def test_paint_labels_keeps_the_real_background_structure() -> None:
    labels = torch.zeros(8, 1, 64, 64, dtype=torch.int16)
    labels[:, :, 20:40, 20:40] = 1
    stripes = (torch.arange(64) // 8 % 2).float()[None, None, None, :].expand(8, 1, 64, 64)
    real = stripes * 100.0
    bg = labels == 0

    def stripe_contrast(img: torch.Tensor) -> torch.Tensor:
        on, off = (stripes > 0) & bg, (stripes == 0) & bg
        mean = torch.stack([img[i][on[i]].mean() - img[i][off[i]].mean() for i in range(8)])
        return mean.abs() / (img.amax((1, 2, 3)) - img.amin((1, 2, 3)))

    without = paint_labels(labels, torch.Generator().manual_seed(2))
    with_real = paint_labels(labels, torch.Generator().manual_seed(2), real)
    # one mean for the whole background without the image; its real stripes with it
    assert stripe_contrast(without).max() < 0.05
    assert stripe_contrast(with_real).median() > 0.05


def test_batches_repaint_real_stacks() -> None:
    vol = _volume()
    kw = {"frames": 1, "size": CROP, "seed": 0, "min_voxels": 500}
    bank = build_bank([vol], n=8, keep_labels=True, **kw)
    dev = torch.device("cpu")
    img, tgt = B.Batches(bank, 5, dev).get(8, 1, 1.0, label_synth=1.0)
    assert torch.isfinite(img).all() and tgt.shape == img.shape
    real = {tuple(np.round(bank.image[i, 0].float().numpy().ravel()[:50], 1)) for i in range(8)}
    for im in img:  # none is a bank image (up to rotation the first row would match)
        for k in range(4):
            for flip in (False, True):
                v = torch.rot90(im[0], -k, (0, 1))
                v = v.flip(1) if flip else v
                assert tuple(np.round(v.numpy().ravel()[:50], 1)) not in real
    # label_synth 0 draws nothing more than the call without it
    a = B.Batches(bank, 5, dev).get(8, 1, 0.5)
    b = B.Batches(bank, 5, dev).get(8, 1, 0.5, label_synth=0.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    plain = build_bank([vol], n=4, **kw)
    with pytest.raises(ValueError, match="keep_labels"):
        B.Batches(plain, 5, dev).get(4, 1, 1.0, label_synth=0.5)


def test_interaction_training_with_label_synth(tmp_path: Path) -> None:
    vol = _volume()
    data = tmp_path / "vols"
    data.mkdir()
    np.savez(data / "v.npz", image=vol.image, labels=vol.labels, spacing=np.array(vol.spacing))
    raw = {
        "out": str(tmp_path / "run"),
        "seed": 0,
        "device": "cpu",
        "threads": 1,
        "cases": str(data),
        "real_bank": 8,
        "checkpoint_every": 1e9,
        "stages": {
            "interaction": {"steps": 2, "batch": 4, "real_fraction": 0.5, "label_synth": 1.0}
        },
    }
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(raw))
    cfg = C.TrainConfig.load(cfg_path)
    assert cfg.stages["interaction"].label_synth == 1.0
    ckpt = T.train_stage(cfg, "interaction", progress=False)
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == 2
    net = InteractionNet()
    net.load_state_dict(state["model"])
