"""The 2.5D interaction network (``interaction_context``): training, export, loading, inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_limnet import Session
from napari_limnet.engine.model import load_model, save_weights
from napari_limnet.engine.networks import IMG_CH, InteractionNet, LimNet, context_of
from napari_limnet.engine.predict import neighbour_slices, segment_slice
from napari_limnet.engine.prompts import SlicePrompts
from napari_limnet.engine.volume import Volume
from napari_limnet.training import config as C
from napari_limnet.training import train as T
from napari_limnet.training import weights as W

torch.set_num_threads(2)


def _image(nz: int = 7) -> np.ndarray:
    img = np.zeros((nz, 40, 40), np.float32)
    img[1:-1, 10:30, 12:28] = 100.0
    return img


def _volume(nz: int = 7) -> Volume:
    return Volume(_image(nz), spacing=(3.0, 1.0, 1.0))


def test_context_network_input_width() -> None:
    net = InteractionNet(context=2).eval()
    assert net.context_slices == 2 and net.in_ch == InteractionNet.IN_CH + 4 * IMG_CH
    with torch.no_grad():
        assert net(torch.zeros(1, net.in_ch, 64, 64)).shape == (1, 1, 64, 64)
        with pytest.raises(RuntimeError):
            net(torch.zeros(1, InteractionNet.IN_CH, 64, 64))
    with pytest.raises(ValueError, match="context"):
        InteractionNet(context=-1)


def test_neighbour_slices_repeat_the_edge() -> None:
    vol = Volume(np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 3, 3), np.float32))
    got = [int(s[0, 0]) for s in neighbour_slices(vol, 0, 2)]
    assert got == [0, 0, 1, 2]  # z-2, z-1 (clamped to 0), then z+1, z+2
    assert [int(s[0, 0]) for s in neighbour_slices(vol, 4, 1)] == [3, 4]


def test_with_context_starts_as_the_old_network() -> None:
    torch.manual_seed(0)
    old = InteractionNet().eval()
    new = W.with_context(old, 1).eval()
    x = torch.randn(2, old.in_ch, 64, 64)
    nb = torch.randn(2, 2 * IMG_CH, 64, 64)  # whatever the neighbours hold
    with torch.no_grad():
        torch.testing.assert_close(new(torch.cat([x, nb], 1)), old(x))
    assert context_of(new.state_dict()) == 1 and context_of(old.state_dict()) == 0
    with pytest.raises(ValueError, match="cannot drop"):
        W.with_context(new, 0)


def test_weights_file_records_the_context(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = LimNet(interaction_context=1)
    path = save_weights(net, tmp_path / "w.pt", {"name": "ctx"})
    model = load_model(path, device="cpu")
    assert model.meta["interaction_context"] == 1
    assert model.net.interaction.context_slices == 1
    plain = load_model(save_weights(LimNet(), tmp_path / "p.pt"), device="cpu")
    assert "interaction_context" not in plain.meta and plain.net.interaction.context_slices == 0


@torch.no_grad()  # as the engine calls it
def test_segment_slice_uses_the_neighbours(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = load_model(save_weights(LimNet(interaction_context=1), tmp_path / "w.pt"), "cpu")
    vol = _volume()
    prompts = SlicePrompts(clicks=[(20.0, 20.0, True)])
    with pytest.raises(ValueError, match="neighbouring slices"):
        segment_slice(model, vol.slice(3), (1.0, 1.0), prompts, None)
    asked = []

    def near(c: int) -> list[np.ndarray]:
        asked.append(c)
        return neighbour_slices(vol, 3, c)

    a = segment_slice(model, vol.slice(3), (1.0, 1.0), prompts, None, near)
    assert asked and set(asked) == {1}
    other = [np.zeros((40, 40), np.float32), np.full((40, 40), 500.0, np.float32)]
    b = segment_slice(model, vol.slice(3), (1.0, 1.0), prompts, None, lambda c: other)
    assert a.mask.shape == b.mask.shape == (40, 40)
    # the network gets the neighbours, cropped with the slice's window, after its own channels
    net = model.net.interaction
    seen = []
    hook = net.encoder.l1.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    segment_slice(model, vol.slice(3), (1.0, 1.0), prompts, None, lambda c: other)
    hook.remove()
    assert seen and all(x.shape[1] == net.in_ch for x in seen)
    own, low, high = seen[0][0, :IMG_CH], seen[0][0, -2 * IMG_CH], seen[0][0, -IMG_CH]
    assert float(high.mean()) > float(own[0].mean()) > float(low.mean())  # 500 > slice > 0


def test_train_export_and_segment_with_context(tmp_path: Path) -> None:
    """Two 2.5D training steps (with realistic previous masks), exported over a one-slice base
    file, load and run a round of a Session."""
    cfg = C.TrainConfig(out=str(tmp_path / "run"), seed=0, device="cpu", threads=2)
    cfg.checkpoint_every = 1e9
    cfg.interaction_context = 1
    cfg.stages["interaction"] = C.InteractionConfig(
        steps=2, batch=4, real_fraction=0.0, frames=3, realistic_prev=0.5
    )
    ckpt = torch.load(T.train_stage(cfg, "interaction", progress=False), weights_only=True)
    assert ckpt["step"] == 2 and context_of(ckpt["model"]) == 1
    base = save_weights(LimNet(), tmp_path / "base.pt")
    model = load_model(W.export(tmp_path / "run", tmp_path / "w.pt", base=base), "cpu")
    assert model.net.interaction.context_slices == 1
    assert "fine_tuned_from" not in model.meta["training"]["interaction"]
    s = Session(_image(), spacing=(3.0, 1.0, 1.0), model=model, threads=1)
    a = s.new_object()
    s.add_click(a, (3, 20, 20))
    events = list(s.run_iter(a))
    assert events and events[0].z == 3 and s.mask(a).shape == (7, 40, 40)


def test_fine_tune_adds_context_to_one_slice_weights(tmp_path: Path) -> None:
    torch.manual_seed(3)
    base_net = LimNet()
    base = save_weights(base_net, tmp_path / "base.pt")
    cfg = C.TrainConfig(out=str(tmp_path / "run"), seed=0, device="cpu", threads=2)
    cfg.checkpoint_every = 1e9
    cfg.init_weights = str(base)
    cfg.interaction_context = 1
    cfg.stages["interaction"] = C.InteractionConfig(steps=1, batch=4, real_fraction=0.0, lr=1e-9)
    ckpt = torch.load(T.train_stage(cfg, "interaction", progress=False), weights_only=True)
    w = ckpt["model"]["encoder.l1.0.0.weight"]
    assert w.shape[1] == InteractionNet.IN_CH + 2 * IMG_CH
    # the one-slice channels start from the base, the neighbour channels from zero
    old = base_net.interaction.state_dict()["encoder.l1.0.0.weight"].half().float()
    torch.testing.assert_close(w[:, : old.shape[1]], old, atol=1e-3, rtol=0)
    assert w[:, old.shape[1] :].abs().max() < 1e-3


@torch.no_grad()
def test_one_slice_network_reads_no_neighbours(tmp_path: Path) -> None:
    model = load_model(save_weights(LimNet(), tmp_path / "w.pt"), "cpu")

    def never(c: int) -> list[np.ndarray]:
        raise AssertionError("a one-slice network asked for neighbouring slices")

    res = segment_slice(
        model, _volume().slice(3), (1.0, 1.0), SlicePrompts(((20.0, 20.0, True),)), None, never
    )
    assert res.mask.shape == (40, 40)


def test_prepared_training_configs_load() -> None:
    """The configs kept under docs/training (the shipped recipe, the run in progress) still load."""
    root = Path(__file__).resolve().parents[2] / "docs" / "training"
    # (check_objects/ holds lists of evaluation objects, not configs)
    paths = sorted(p for p in root.glob("*/*.json") if p.parent.name != "check_objects")
    assert any(p.parent.name == "recipe" for p in paths)
    for p in paths:
        cfg = C.TrainConfig.load(p)
        assert cfg.stages and cfg.interaction_context >= 0, p
        if cfg.interaction_widths:  # builds (4 multiples of 8)
            widths = tuple(cfg.interaction_widths)
            assert InteractionNet(widths).widths == widths, p
