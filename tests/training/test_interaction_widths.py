"""Interaction networks of other widths: trained, exported, loaded, and in an ensemble."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_limnet import Session
from napari_limnet.engine.model import load_model, save_weights
from napari_limnet.engine.networks import (
    WIDTHS,
    InteractionEnsemble,
    InteractionNet,
    LimNet,
    context_of,
    widths_of,
)
from napari_limnet.training import config as C
from napari_limnet.training import train as T
from napari_limnet.training import weights as W

torch.set_num_threads(2)
WIDE = (8, 16, 40, 72)


def test_widths_are_read_back_from_the_weights() -> None:
    for widths, context in ((WIDTHS, 0), (WIDE, 1)):
        net = InteractionNet(widths, context=context)
        assert net.widths == widths and widths_of(net.state_dict()) == widths
    ens = LimNet(interaction_context=[0, 1], interaction_widths=[WIDTHS, WIDE])
    sd = ens.state_dict()
    assert widths_of(sd, "interaction.members.1.") == WIDE
    with pytest.raises(ValueError, match="multiples of 8"):
        InteractionNet((16, 32, 64, 100))
    with pytest.raises(ValueError, match="a list for an ensemble"):
        LimNet(interaction_context=[0, 1], interaction_widths=WIDE)


def _image() -> np.ndarray:
    img = np.zeros((7, 40, 40), np.float32)
    img[1:-1, 10:30, 12:28] = 100.0
    return img


def test_train_export_ensemble_and_segment_with_other_widths(tmp_path: Path) -> None:
    """Two steps of a network of other widths, exported over a base file of the shipped
    widths, then an ensemble with the base: both files load with their own widths and run a
    round of a Session."""
    cfg = C.TrainConfig(out=str(tmp_path / "run"), seed=0, device="cpu", threads=2)
    cfg.checkpoint_every = 1e9
    cfg.interaction_context = 1
    cfg.interaction_widths = list(WIDE)
    cfg.stages["interaction"] = C.InteractionConfig(steps=2, batch=4, real_fraction=0.0, frames=3)
    ckpt = torch.load(T.train_stage(cfg, "interaction", progress=False), weights_only=True)
    assert widths_of(ckpt["model"]) == WIDE and context_of(ckpt["model"]) == 1
    base = save_weights(LimNet(), tmp_path / "base.pt")
    wide = W.export(tmp_path / "run", tmp_path / "wide.pt", base=base)
    assert load_model(wide, "cpu").net.interaction.widths == WIDE
    model = load_model(W.ensemble([base, wide], tmp_path / "ens.pt"), "cpu")
    inter = model.net.interaction
    assert isinstance(inter, InteractionEnsemble)
    assert [m.widths for m in inter.members] == [WIDTHS, WIDE] and inter.contexts == [0, 1]
    s = Session(_image(), spacing=(3.0, 1.0, 1.0), model=model, threads=1)
    a = s.new_object()
    s.add_click(a, (3, 20, 20))
    assert list(s.run_iter(a)) and s.mask(a).shape == (7, 40, 40)
    # a fine-tune keeps its start file's widths; asking for others is an error
    cfg2 = C.TrainConfig(out=str(tmp_path / "run2"), seed=0, device="cpu", threads=2)
    cfg2.init_weights = str(base)
    cfg2.interaction_widths = list(WIDE)
    cfg2.stages["interaction"] = C.InteractionConfig(steps=1, batch=2, real_fraction=0.0)
    with pytest.raises(ValueError, match="interaction_widths"):
        T.train_stage(cfg2, "interaction", progress=False)
