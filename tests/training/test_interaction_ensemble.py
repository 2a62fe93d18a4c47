"""``InteractionEnsemble``: its channels, its mean, the weights file ``ensemble`` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_limnet import Session
from napari_limnet.engine.model import load_model, save_weights
from napari_limnet.engine.networks import IMG_CH, InteractionEnsemble, InteractionNet, LimNet
from napari_limnet.training import train as T

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
    model = load_model(T.ensemble([a, b], tmp_path / "ens.pt", {"note": "x"}), "cpu")
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
    ens = T.ensemble([a, b], tmp_path / "ens.pt")
    parts = T.split_ensemble(ens, tmp_path / "parts")
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
        T.split_ensemble(a, tmp_path / "parts")


def test_ensemble_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    a = save_weights(LimNet(), tmp_path / "a.pt")
    with pytest.raises(ValueError, match="two weights files"):
        T.ensemble([a], tmp_path / "x.pt")
    ens = T.ensemble([a, a], tmp_path / "ens.pt")
    with pytest.raises(ValueError, match="already holds an ensemble"):
        T.ensemble([ens, a], tmp_path / "x.pt")
    # fine-tuning the interaction network starts from one member, not from the ensemble
    cfg = T.TrainConfig(out=str(tmp_path / "run"), seed=0, device="cpu", threads=2)
    cfg.init_weights = str(ens)
    cfg.stages["interaction"] = T.StageConfig(steps=1, batch=2, real_fraction=0.0)
    with pytest.raises(ValueError, match="split_ensemble"):
        T.train_stage(cfg, "interaction", progress=False)


def test_training_with_a_frozen_partner(tmp_path: Path) -> None:
    """``partner_weights``: the step sees the pair's mean (the shipped ensemble's output),
    only the trained network learns and is saved, and the exported pair is that ensemble."""
    torch.manual_seed(4)
    partner_net, start_net = LimNet(), LimNet(interaction_context=1)
    partner = save_weights(partner_net, tmp_path / "partner.pt")
    start = save_weights(start_net, tmp_path / "start.pt")
    pair = T._with_partner(load_model(start, "cpu").net.interaction, str(partner)).eval()
    ens = load_model(T.ensemble([partner, start], tmp_path / "e0.pt"), "cpu").net.interaction
    x = torch.randn(2, BASE + 2 * IMG_CH, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pair(x), ens(x), atol=1e-5, rtol=0)
    trained_params = list(pair.members[1].parameters())
    assert [p for p in pair.parameters() if p.requires_grad] == trained_params
    # the other way round: a one-slice network beside a 2.5D partner reads the wider input
    wide = T._with_partner(load_model(partner, "cpu").net.interaction, str(start))
    ens_b = load_model(T.ensemble([start, partner], tmp_path / "eb.pt"), "cpu").net.interaction
    assert wide.context_slices == 1
    with torch.no_grad():
        torch.testing.assert_close(wide.eval()(x), ens_b(x), atol=1e-5, rtol=0)

    cfg = T.TrainConfig(out=str(tmp_path / "run"), seed=0, device="cpu", threads=2)
    cfg.checkpoint_every = 1e9
    cfg.init_weights, cfg.partner_weights = str(start), str(partner)
    cfg.stages["interaction"] = T.StageConfig(steps=2, batch=4, real_fraction=0.0, lr=1e-2)
    ckpt = torch.load(T.train_stage(cfg, "interaction", progress=False), weights_only=True)
    before = load_model(start, "cpu").net.interaction.state_dict()
    assert ckpt["model"].keys() == before.keys()  # the network alone, not the pair
    assert any(not torch.equal(ckpt["model"][k].float(), v) for k, v in before.items())
    trained = T.export(tmp_path / "run", tmp_path / "trained.pt", base=start)
    model = load_model(T.ensemble([partner, trained], tmp_path / "e1.pt"), "cpu")
    for k, v in partner_net.interaction.state_dict().items():  # the partner did not move
        torch.testing.assert_close(
            model.net.interaction.members[0].state_dict()[k], v.half().float()
        )
    with pytest.raises(ValueError, match="holds an ensemble"):
        T._with_partner(LimNet().interaction, str(tmp_path / "e1.pt"))
