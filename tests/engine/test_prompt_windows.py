"""The windows of the 2D step (``predict.segment_slice``), with a scripted network."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_limnet.engine import predict
from napari_limnet.engine.networks import CROP
from napari_limnet.engine.preprocess import MIN_SIDE_PX, ZOOM
from napari_limnet.engine.prompts import SlicePrompts


class FillsTheWindow:
    """An interaction network whose mask fills its whole window; logs the calls."""

    context_slices = 0  # one slice, as ``InteractionNet`` by default

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.full((1, 1, CROP, CROP), 10.0)


class FindsNothing(FillsTheWindow):
    """An interaction network that finds nothing: the 2D step stops after its first window."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.full((1, 1, CROP, CROP), -10.0)


def _model(net=None) -> SimpleNamespace:
    net = FillsTheWindow() if net is None else net
    return SimpleNamespace(device="cpu", net=SimpleNamespace(interaction=net))


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


def test_a_slice_without_a_mask_takes_its_first_window_from_the_size_hint() -> None:
    hint = np.zeros(IMAGE.shape, bool)
    hint[20:40, 50:60] = True  # 20 x 10 pixels of 0.5 mm, elsewhere on the slice
    res = predict.segment_slice(_model(FindsNothing()), IMAGE, (0.5, 0.5), CLICK, None)
    assert res.window.side_mm == pytest.approx(predict.WIDE_SIDE_MM)
    res = predict.segment_slice(
        _model(FindsNothing()), IMAGE, (0.5, 0.5), CLICK, None, size_hint=hint
    )
    # the hint's window size (20 px x 0.5 mm x the zoom, or the smallest window), at the click
    side = max(20 * 0.5 * ZOOM, MIN_SIDE_PX * 0.5)
    assert res.window.side_mm == pytest.approx(side)
    assert (res.window.cy, res.window.cx) == (200.0, 200.0)


def test_a_size_hint_changes_nothing_where_the_slice_has_a_mask() -> None:
    hint = np.zeros(IMAGE.shape, bool)
    hint[20:40, 50:60] = True
    prev = np.zeros(IMAGE.shape, bool)
    prev[150:250, 150:250] = True
    a = predict.segment_slice(_model(FindsNothing()), IMAGE, (0.5, 0.5), CLICK, prev)
    b = predict.segment_slice(
        _model(FindsNothing()), IMAGE, (0.5, 0.5), CLICK, prev, size_hint=hint
    )
    assert a.window == b.window
