"""Fusion keeps a slice's previous mask where the new one went against the round's click."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_limnet.engine.fusion import NEVER_KEEP, FusionRule
from napari_limnet.engine.predict import Propagator
from napari_limnet.engine.preprocess import IntensityNorm


class Scorer:
    """A scorer that is always sure the previous mask was better; logs its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x, prev, new) -> torch.Tensor:
        self.calls += 1
        return torch.tensor([10.0])


def _propagator() -> Propagator:
    model = SimpleNamespace(net=SimpleNamespace(memory=None, scorer=Scorer()), device="cpu")
    return Propagator(model, (1.0, 1.0), IntensityNorm(0.0, 1.0, 0.5, 0.2))


def _square(side: int) -> np.ndarray:
    m = np.zeros((40, 40), bool)
    m[10 : 10 + side, 10 : 10 + side] = True
    return m


IMAGE = np.zeros((40, 40), np.float32)


@pytest.mark.parametrize(
    ("old", "new", "grow", "keep"),
    [
        (10, 6, True, True),  # 36 < 50 pixels after a positive click: spoiled
        (10, 8, True, False),  # 64: a trim the click may have caused
        (10, 16, True, False),  # grew, as asked
        (6, 10, False, True),  # 100 > 2 x 36 after a negative click: spoiled
        (8, 10, False, False),
        (10, 6, False, False),  # shrank, as asked
    ],
)
def test_the_rule(old: int, new: int, grow: bool, keep: bool) -> None:
    prop = _propagator()
    rule = FusionRule(grow_ratio=0.5)
    assert prop.prefer_previous(IMAGE, _square(old), _square(new), grow, rule) is keep
    assert prop.model.net.scorer.calls == 0  # threshold 1: the scorer is off


def test_the_default_rule_keeps_any_shrunk_mask_after_a_positive_click() -> None:
    prop = _propagator()
    rule = FusionRule.of(SimpleNamespace(fusion_threshold=1.0))
    assert rule == FusionRule() and rule.grow_ratio == 1.0 and rule.shrink_ratio == 0.5
    assert prop.prefer_previous(IMAGE, _square(10), _square(9), True, rule)
    assert not prop.prefer_previous(IMAGE, _square(10), _square(11), True, rule)
    assert not prop.prefer_previous(IMAGE, _square(8), _square(10), False, rule)
    assert prop.prefer_previous(IMAGE, _square(6), _square(10), False, rule)


def test_the_scorer_decides_the_rest_below_threshold_one() -> None:
    prop = _propagator()
    rule = FusionRule(scorer_threshold=0.9)
    assert prop.prefer_previous(IMAGE, _square(10), _square(16), True, rule)
    assert prop.model.net.scorer.calls == 1
    assert not prop.prefer_previous(IMAGE, _square(10), _square(10), True, rule)  # same mask


@pytest.mark.parametrize("grow", [True, False])
def test_round_pairs_rule_never_keeps_and_sees_every_decision(grow: bool) -> None:
    """The training rule of ``round_pairs``: the old mask is never kept and the probe sees
    the decisions after positive clicks too (an override of the area rule used to skip them)."""
    prop = _propagator()
    seen = []
    rule = replace(NEVER_KEEP, probe=lambda *a: seen.append(a[-1]))
    assert not prop.prefer_previous(IMAGE, _square(10), _square(5), grow, rule)
    assert not prop.prefer_previous(IMAGE, _square(5), _square(10), grow, rule)
    assert len(seen) == 2 and prop.model.net.scorer.calls == 2
