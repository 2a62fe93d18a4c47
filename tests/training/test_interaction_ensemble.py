"""``InteractionEnsemble``: its channels, its mean, the weights file ``ensemble`` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_limnet import Session
from napari_limnet.engine.model import load_model, save_weights
from napari_limnet.engine.networks import IMG_CH, InteractionEnsemble, InteractionNet, LimNet
from napari_limnet.training import config as C
from napari_limnet.training import train as T
from napari_limnet.training import weights as W

torch.set_num_threads(2)
BASE = InteractionNet.IN_CH


def test_members_read_their_own_slices() -> None:
    ens = InteractionEnsemble([0, 1, 2])
    assert ens.context_slices == 2 and ens.contexts == [0, 1, 2]
    # input of the widest member: own channels, then z-2, z-1, z+1, z+2 (IMG_CH each)
    zm1, zp1 = BASE + 1 * IMG_CH, BASE + 2 * IMG_CH
    assert ens._channels[0] == list(range(BASE))
    assert ens._channels[1] == [*range(BASE), zm1, zm1 + 1, zp1, zp1 + 1]
    assert ens._channels[2] == list(range(BASE + 4 * IMG_CH))
    with pytest.raises(ValueError, match="two members"):
        InteractionEnsemble([1])


@torch.no_grad()
def test_ensemble_is_the_mean_probability_of_its_members() -> None:
    torch.manual_seed(0)
    ens = InteractionEnsemble([0, 1]).eval()
    x = torch.randn(2, BASE + 2 * IMG_CH, 32, 32)
    p0 = torch.sigmoid(ens.members[0](x[:, :BASE]))
    p1 = torch.sigmoid(ens.members[1](x))
    torch.testing.assert_close(torch.sigmoid(ens(x)), (p0 + p1) / 2, atol=1e-5, rtol=0)


def _image() -> np.ndarray:
    img = np.zeros((7, 40, 40), np.float32)
    img[1:-1, 10:30, 12:28] = 100.0
    return img


def test_ensemble_file_round_trip_and_session(tmp_path: Path) -> None:
    torch.manual_seed(1)
    a_net, b_net = LimNet(), LimNet(interaction_context=1)
    meta_a = {"fusion_threshold": 0.9, "training": {"interaction": {"steps": 3}, "memory": 4}}
    a = save_weights(a_net, tmp_path / "a.pt", meta_a)
    b = save_weights(b_net, tmp_path / "b.pt", {"training": {"interaction": {"steps": 5}}})
    model = load_model(W.ensemble([a, b], tmp_path / "ens.pt", {"note": "x"}), "cpu")
    inter = model.net.interaction
    assert isinstance(inter, InteractionEnsemble) and inter.contexts == [0, 1]
    assert model.meta["interaction_context"] == [0, 1] and model.meta["note"] == "x"
    assert model.meta["fusion_threshold"] == 0.9  # the first member's settings
    assert [m["file"] for m in model.meta["ensemble_of"]] == ["a.pt", "b.pt"]
    assert [m["interaction"] for m in model.meta["ensemble_of"]] == [{"steps": 3}, {"steps": 5}]
    assert model.meta["training"] == {"memory": 4}
    for member, src in zip(inter.members, (a_net, b_net), strict=True):
        for k, v in src.interaction.state_dict().items():
            torch.testing.assert_close(member.state_dict()[k], v.half().float())
    for k, v in a_net.memory.state_dict().items():  # memory network and scorer: the first's
        torch.testing.assert_close(model.net.memory.state_dict()[k], v.half().float())
    s = Session(_image(), spacing=(3.0, 1.0, 1.0), model=model, threads=1)
    obj = s.new_object()
    s.add_click(obj, (3, 20, 20))
    assert list(s.run_iter(obj)) and s.mask(obj).shape == (7, 40, 40)


def test_split_ensemble_gives_back_the_members(tmp_path: Path) -> None:
    torch.manual_seed(2)
    a_net, b_net = LimNet(), LimNet(interaction_context=1)
    a = save_weights(a_net, tmp_path / "a.pt", {"training": {"interaction": {"steps": 3}}})
    b = save_weights(b_net, tmp_path / "b.pt", {"training": {"interaction": {"steps": 5}}})
    ens = W.ensemble([a, b], tmp_path / "ens.pt")
    parts = W.split_ensemble(ens, tmp_path / "parts")
    assert [p.name for p in parts] == ["ens_member0.pt", "ens_member1.pt"]
    for path, src, steps in zip(parts, (a_net, b_net), (3, 5), strict=True):
        m = load_model(path, "cpu")
        assert m.net.interaction.context_slices == src.interaction.context_slices
        assert m.meta["training"]["interaction"] == {"steps": steps}
        for part in ("interaction", "memory"):  # memory network: the ensemble's (a's)
            want = (src if part == "interaction" else a_net).get_submodule(part).state_dict()
            got = m.net.get_submodule(part).state_dict()
            for k, v in want.items():
                torch.testing.assert_close(got[k], v.half().float())
    with pytest.raises(ValueError, match="not an ensemble"):
        W.split_ensemble(a, tmp_path / "parts")


def test_ensemble_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    a = save_weights(LimNet(), tmp_path / "a.pt")
    with pytest.raises(ValueError, match="two weights files"):
        W.ensemble([a], tmp_path / "x.pt")
    ens = W.ensemble([a, a], tmp_path / "ens.pt")
    with pytest.raises(ValueError, match="already holds an ensemble"):
        W.ensemble([ens, a], tmp_path / "x.pt")
    # fine-tuning the interaction network starts from one member, not from the ensemble
    cfg = C.TrainConfig(out=str(tmp_path / "run"), seed=0, device="cpu", threads=2)
    cfg.init_weights = str(ens)
    cfg.stages["interaction"] = C.InteractionConfig(steps=1, batch=2, real_fraction=0.0)
    with pytest.raises(ValueError, match="split_ensemble"):
        T.train_stage(cfg, "interaction", progress=False)
