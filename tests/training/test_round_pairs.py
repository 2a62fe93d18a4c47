"""Options of the fine-tuning run: stacks crossing the object's end, the eroded guide, and the
scorer's pairs from real simulated rounds (collection, threshold, the scorer stage, export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_limnet.engine.model import default_weights_path, load_model
from napari_limnet.engine.networks import LimNet
from napari_limnet.training import batches as B
from napari_limnet.training import config as C
from napari_limnet.training import scorer
from napari_limnet.training import train as T
from napari_limnet.training import weights as W
from napari_limnet.training.real_bank import LabelledVolume, build_bank
from napari_limnet.training.round_pairs import best_threshold, collect_round_pairs

torch.set_num_threads(2)


def _volume(seed: int = 0) -> LabelledVolume:
    """A low-contrast ellipsoid beside a touching one of the same brightness: one click is
    not enough, so rounds 2+ meet fusion decisions."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:14, :64, :64]
    a = ((z - 7) / 6.0) ** 2 + ((y - 30) / 14.0) ** 2 + ((x - 26) / 10.0) ** 2 <= 1
    b = ((z - 6) / 5.0) ** 2 + ((y - 34) / 9.0) ** 2 + ((x - 44) / 9.0) ** 2 <= 1
    img = rng.normal(0.0, 12.0, a.shape).astype(np.float32)
    img[a | b] += 40.0
    lab = np.zeros(a.shape, np.int16)
    lab[a] = 1
    lab[b & ~a] = 2
    return LabelledVolume(img, lab, (4.0, 1.0, 1.0), f"pair{seed}")


def test_stacks_cross_the_object_end() -> None:
    vol = _volume()
    bank = build_bank([vol], n=12, frames=4, size=32, seed=1, end_fraction=1.0, min_voxels=100)
    assert (bank.target[:, 0].sum((1, 2)) >= 4).all()
    # the structure ends inside every stack: its last frame is empty
    assert (bank.target[:, -1].sum((1, 2)) == 0).all()
    plain = build_bank([vol], n=12, frames=4, size=32, seed=1, min_voxels=100)
    assert (plain.target[:, -1].sum((1, 2)) > 0).any()


def test_best_threshold() -> None:
    prob = torch.tensor([0.99, 0.97, 0.9, 0.6, 0.2])
    gain = torch.tensor([0.3, 0.2, -0.4, 0.1, -0.5])
    t, g = best_threshold(prob, gain)
    assert 0.9 <= t < 0.97  # keep the two sure ones, not the 0.9 that loses
    assert g == pytest.approx(0.5 / 5)
    t, g = best_threshold(prob, -gain.abs())  # keeping never helps
    assert t > 1.0 and g == 0.0


def test_collect_round_pairs_records_real_decisions() -> None:
    model = load_model(device="cpu")
    threshold = model.fusion_threshold
    bank = collect_round_pairs(model, [_volume(0), _volume(1)], n_objects=3, rounds=5, seed=0)
    assert len(bank) > 0
    assert bank.x.shape[1:] == (2, 128, 128) and bank.x.dtype == torch.float16
    assert bank.prev.shape == bank.new.shape == (len(bank), 1, 128, 128)
    assert bank.prev.dtype == torch.bool
    assert ((bank.gain >= -1) & (bank.gain <= 1)).all()
    assert not torch.equal(bank.prev, bank.new)
    # the model is left as it was (the rounds' rule belonged to their sessions)
    assert model.fusion_threshold == threshold


def test_scorer_stage_on_round_pairs_stores_a_threshold(tmp_path: Path) -> None:
    data = tmp_path / "vols"
    data.mkdir()
    for s in range(3):
        v = _volume(s)
        np.savez(data / f"v{s}.npz", image=v.image, labels=v.labels, spacing=np.array(v.spacing))
    cfg = C.TrainConfig(
        out=str(tmp_path / "run"),
        device="cpu",
        threads=2,
        cases=str(data),
        init_weights=str(default_weights_path()),
        checkpoint_every=1e9,
    )
    cfg.stages["scorer"] = C.ScorerConfig(
        steps=2, batch=4, real_fraction=0.0, round_pairs=5, pair_rounds=4
    )
    ckpt = torch.load(T.train_stage(cfg, "scorer", progress=False), weights_only=True)
    assert "fusion_threshold" in ckpt
    assert (tmp_path / "run" / "round_pairs.pt").exists()  # a resumed run does not recollect
    w = W.export(tmp_path / "run", tmp_path / "w.pt", base=default_weights_path())
    assert load_model(w, device="cpu").fusion_threshold == pytest.approx(ckpt["fusion_threshold"])


def test_round_pairs_need_init_weights(tmp_path: Path) -> None:
    cfg = C.TrainConfig(out=str(tmp_path / "run"), device="cpu", cases=str(tmp_path))
    cfg.stages["scorer"] = C.ScorerConfig(steps=1, batch=2, real_fraction=0.0, round_pairs=2)
    with pytest.raises(ValueError, match="init_weights"):
        T.train_stage(cfg, "scorer", progress=False)


def _pair_bank(n: int, gain: float):
    from napari_limnet.training.round_pairs import PairBank

    g = torch.Generator().manual_seed(0)
    return PairBank(
        torch.randn(n, 2, 128, 128, generator=g).half(),
        torch.rand(n, 1, 128, 128, generator=g) > 0.5,
        torch.rand(n, 1, 128, 128, generator=g) > 0.5,
        torch.full((n,), gain),
        torch.arange(n),
    )


@pytest.mark.parametrize(("fraction", "synthetic"), [(1.0, 0), (0.5, 4)])
def test_pair_fraction_is_the_share_of_the_batch(monkeypatch, fraction, synthetic) -> None:
    net = LimNet().scorer
    data = B.Batches(None, 0, torch.device("cpu"))
    data.pairs = _pair_bank(6, 0.2)
    asked = []
    real_get = data.get
    monkeypatch.setattr(data, "get", lambda n, *a, **k: asked.append(n) or real_get(n, *a, **k))
    seen = []
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def recording_bce(logit, label, **kw):
        seen.append(label)  # the labels of the scorer's loss
        return bce(logit, label, **kw)

    monkeypatch.setattr(torch.nn.functional, "binary_cross_entropy_with_logits", recording_bce)
    cfg = C.ScorerConfig(batch=8, real_fraction=0.0, pair_fraction=fraction)
    out = scorer.step(net, data, cfg, lambda: torch.autocast("cpu", enabled=False))
    assert torch.isfinite(out["loss"])
    assert asked == ([synthetic] if synthetic else [])  # no synthetic pairs drawn at 1.0
    labels = seen[0]
    assert len(labels) <= 8 and labels[-(8 - synthetic) :].eq(1).all()  # real: previous better
