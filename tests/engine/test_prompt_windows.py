"""The windows of the 2D step (``predict.segment_slice``), with a scripted network."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from napari_limnet.engine import predict
from napari_limnet.engine.networks import CROP
from napari_limnet.engine.rounds import SlicePrompts


class FillsTheWindow:
    """An interaction network whose mask fills its whole window; logs the calls."""

    context_slices = 0  # one slice, as ``InteractionNet`` by default

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.full((1, 1, CROP, CROP), 10.0)


def _model() -> SimpleNamespace:
    return SimpleNamespace(device="cpu", net=SimpleNamespace(interaction=FillsTheWindow()))


IMAGE = np.random.default_rng(0).normal(size=(400, 400)).astype(np.float32)
CLICK = SlicePrompts(clicks=((200.0, 200.0, True),))


def test_a_first_click_zooms_out_when_the_mask_fills_the_window() -> None:
    model = _model()
    res = predict.segment_slice(model, IMAGE, (0.5, 0.5), CLICK, None)
    assert model.net.interaction.calls == predict.MAX_PASSES
    assert res.window.side_mm > predict.WIDE_SIDE_MM


def test_a_correction_never_zooms_out() -> None:
    prev = np.zeros(IMAGE.shape, bool)
    prev[180:220, 180:220] = True
    model = _model()
    res = predict.segment_slice(model, IMAGE, (0.5, 0.5), CLICK, prev)
    # one pass: the mask outgrew the window around the previous mask and the click, but that
    # mask is not fed back through a wider window
    assert model.net.interaction.calls == 1
    assert res.mask.sum() < 0.2 * IMAGE.size
