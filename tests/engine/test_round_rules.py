"""The rules of one round (``rounds.run_round``) with scripted networks.

``segment_slice`` and ``Propagator`` are swapped for fakes: a prompted slice gets a square
unless all its clicks are negative (then it is empty), and propagation copies the previous
slice's mask while the slice holds the object (``OBJECT``) and returns nothing past it. The
fake propagator logs what it is asked to remember, so the memory a rule builds is checked.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_limnet.engine import predict, rounds
from napari_limnet.engine.fusion import FusionRule
from napari_limnet.engine.prompts import SlicePrompts
from napari_limnet.engine.rounds import RoundOptions, run_round

SHAPE = (12, 16, 16)
OBJECT = range(3, 7)  # the slices that hold the object
SQUARE = np.zeros(SHAPE[1:], bool)
SQUARE[4:12, 4:12] = True
SMALL = np.zeros(SHAPE[1:], bool)
SMALL[6:9, 6:9] = True


class Volume:
    shape = SHAPE
    spacing = (3.0, 1.0, 1.0)

    def slice(self, z: int) -> np.ndarray:
        return np.full(SHAPE[1:], float(z), np.float32)  # a slice's value is its index


class FakePropagator:
    log: list[tuple] = []
    confidence = 1.0

    def __init__(self, model, spacing_yx, norm) -> None:
        FakePropagator.log.append(("start",))

    def remember(self, image, mask, pinned=False) -> None:
        FakePropagator.log.append(("remember", int(image[0, 0]), bool(mask.any())))

    def remember_empty(self, image, ref) -> None:
        FakePropagator.log.append(("empty", int(image[0, 0])))

    def step(self, image, prev) -> np.ndarray:
        z = int(image[0, 0])
        FakePropagator.log.append(("step", z))
        return prev.copy() if z in OBJECT else np.zeros_like(prev)

    def prefer_previous(self, image, old, new, grow, rule) -> bool:
        FakePropagator.log.append(("fuse", int(image[0, 0]), grow, rule))
        return False


def fake_segment(model, image, spacing_yx, prompts, prev, neighbours=None, size_hint=None):
    FakePropagator.log.append(("segment", int(image[0, 0]), size_hint))
    empty = all(not positive for _, _, positive in prompts.clicks)
    return predict.SliceResult(np.zeros_like(SQUARE) if empty else SQUARE.copy(), None, None)


@pytest.fixture(autouse=True)
def fakes(monkeypatch):
    FakePropagator.log = []
    monkeypatch.setattr(predict, "Propagator", FakePropagator)
    monkeypatch.setattr(predict, "segment_slice", fake_segment)
    monkeypatch.setattr(predict, "norm_of_mask", lambda image, mask, spacing: None)


def _round(prompts: dict[int, bool], old: dict[int, np.ndarray], pinned=()) -> dict[int, bool]:
    """Run a round with one click per prompted slice; {z: mask non-empty} for every slice
    the round decides (the last decision wins, as in the session)."""
    sp = {z: SlicePrompts(clicks=((8.0, 8.0, pos),)) for z, pos in prompts.items()}
    out: dict[int, bool] = {}
    for z, mask, _ in run_round(
        None, Volume(), sp, old.get, pinned, lambda z: None, RoundOptions(fusion=False)
    ):
        out[z] = bool(mask.any())
    return out


def test_an_emptied_slice_cuts_the_leak_beyond_it() -> None:
    # an earlier round clicked slice 4 and the mask leaked up to slice 10
    old = {z: SQUARE.copy() for z in range(2, 11)}
    out = _round({8: False}, old, pinned=[4])
    assert out[8] is False
    assert all(out[z] is False for z in (9, 10))  # beyond the emptied slice: removed
    assert 11 not in out


def test_propagation_is_redone_towards_an_emptied_slice() -> None:
    old = {z: SQUARE.copy() for z in range(2, 11)}
    out = _round({8: False}, old, pinned=[4])
    # slice 4's mask is carried again towards 8, with 8 pinned in the memory as empty
    assert ("empty", 8) in FakePropagator.log
    steps = [e[1] for e in FakePropagator.log if e[0] == "step"]
    assert steps == [5, 6, 7]  # the object ends at 6, so the mask vanishes at 7 ...
    assert out[5] and out[6]
    assert out[7] is False  # ... and the old leak there goes


def test_the_leak_goes_even_past_where_the_mask_vanished() -> None:
    old = {z: SQUARE.copy() for z in range(2, 11)}
    out = _round({10: False}, old, pinned=[4])
    assert [e[1] for e in FakePropagator.log if e[0] == "step"] == [5, 6, 7]
    assert [out[z] for z in range(5, 11)] == [True, True, False, False, False, False]


def test_an_emptied_slice_next_to_a_prompted_one_needs_no_new_propagation() -> None:
    old = {z: SQUARE.copy() for z in range(2, 11)}
    _round({5: False}, old, pinned=[4])
    assert not [e for e in FakePropagator.log if e[0] == "step"]


def test_a_new_positive_slice_propagating_to_an_emptied_one_remembers_it() -> None:
    old = {z: SQUARE.copy() for z in range(2, 11)}
    out = _round({4: True, 8: False}, old)
    assert ("empty", 8) in FakePropagator.log
    # from 4: up to the emptied 8 (stopping where the object ends), down to the volume's start
    steps = [e[1] for e in FakePropagator.log if e[0] == "step"]
    assert steps[:3] == [5, 6, 7] and 8 not in steps
    assert out[7] is False and out[9] is False and out[10] is False


def test_propagation_ends_where_the_mask_shrinks_to_a_remnant(monkeypatch) -> None:
    # the fake network keeps a shrinking blob alive past the object's end: 8x8, then one row
    # and one column less per slice (49, 36, 25, ... pixels)
    def shrinking(self, image, prev):
        FakePropagator.log.append(("step", int(image[0, 0])))
        ys, xs = np.nonzero(prev)
        out = np.zeros_like(prev)
        out[ys.min() : ys.max(), xs.min() : xs.max()] = True
        return out

    monkeypatch.setattr(FakePropagator, "step", shrinking)
    monkeypatch.setattr(rounds, "MIN_AREA_FRACTION", 0.15)  # of the 64-pixel square: 9.6
    out = _round({2: True}, {})
    # slices 3..7 keep 49, 36, 25, 16 and 9 pixels; 9 < 9.6 ends the object at slice 7
    assert [out[z] for z in range(3, 8)] == [True, True, True, True, False]
    assert [e[1] for e in FakePropagator.log if e[0] == "step"][:6] == [3, 4, 5, 6, 7, 1]


def _leak_less_surely(monkeypatch, outside: float = 0.88) -> None:
    """The fake network copies the mask past the object's end too, with confidence 0.95 on
    the object's slices and ``outside`` past them."""

    def leaking(self, image, prev):
        z = int(image[0, 0])
        FakePropagator.log.append(("step", z))
        self.confidence = 0.95 if z in OBJECT else outside
        return prev.copy()

    monkeypatch.setattr(FakePropagator, "step", leaking)


def test_a_first_round_ends_where_the_network_grows_unsure(monkeypatch) -> None:
    _leak_less_surely(monkeypatch)
    out = _round({2: True}, {})
    # up: 3..6 at 0.95, then 7 at 0.88, 0.07 under the first three's median: the object ends
    assert [out[z] for z in range(2, 8)] == [True, True, True, True, True, False]
    assert 8 not in out
    # down: too few slices to judge by, so slices 1 and 0 keep the leak
    assert out[1] and out[0]


def test_later_rounds_do_not_end_where_the_network_grows_unsure(monkeypatch) -> None:
    _leak_less_surely(monkeypatch)
    out = _round({2: True}, {2: SQUARE.copy()})  # slice 2 already had a mask
    # 0.88 is sure enough to spread the object to new slices in a later round
    assert all(out[z] for z in range(3, SHAPE[0]))


def test_later_rounds_spread_the_object_to_new_slices_only_where_sure(monkeypatch) -> None:
    _leak_less_surely(monkeypatch, outside=0.80)
    old = {z: SQUARE.copy() for z in (3, 4, 5)}
    out = _clicks_round([False, True], old)  # "more" on slice 4; the object holds 3..6
    assert out[5] and out[3]  # slices that had a mask
    assert out[6]  # a new slice, and the network is sure of it
    assert out[7] is False and out[2] is False  # new slices it is unsure of: the object ends
    assert 8 not in out and 1 not in out


def _clicks_round(clicks, old) -> dict[int, bool]:
    """One round on slice 4 with these (positive) clicks, in order; {z: mask non-empty}."""
    sp = {4: SlicePrompts(clicks=tuple((8.0, 8.0 + i, pos) for i, pos in enumerate(clicks)))}
    out: dict[int, bool] = {}
    for z, mask, _ in run_round(
        None, Volume(), sp, old.get, (), lambda z: None, RoundOptions(fusion=False)
    ):
        out[z] = bool(mask.any())
    return out


def test_a_negative_click_does_not_spread_the_object_to_new_slices() -> None:
    # the object holds slices 3..6; an earlier round left it on 3..5 only
    old = {z: SQUARE.copy() for z in (3, 4, 5)}
    out = _clicks_round([True, False], old)  # the latest click on slice 4 asks for less
    steps = [e[1] for e in FakePropagator.log if e[0] == "step"]
    assert steps == [5, 3]  # stops before 6 and before 2: slices that had no mask
    assert out[4] and out[5] and out[3]
    assert 6 not in out and 2 not in out


def test_a_positive_click_may_spread_the_object_to_new_slices() -> None:
    old = {z: SQUARE.copy() for z in (3, 4, 5)}
    out = _clicks_round([False, True], old)  # the latest click asks for more
    assert out[6] is True  # the object's end moves to where the network finds it ends
    assert out[7] is False and out[2] is False


def test_a_negative_click_on_a_slice_without_a_mask_propagates_as_before() -> None:
    # nothing was on slice 4 (nor anywhere): the round starts the object there
    out = _clicks_round([True, False], {})
    assert [out[z] for z in range(3, 7)] == [True, True, True, True]


def _hints(prompts: dict[int, SlicePrompts], old: dict[int, np.ndarray], pinned) -> dict:
    """The size hint each prompted slice's 2D step got, by slice."""
    for _ in run_round(None, Volume(), prompts, old.get, pinned, lambda z: None):
        pass
    return {e[1]: e[2] for e in FakePropagator.log if e[0] == "segment"}


def test_a_slice_without_a_mask_gets_the_largest_prompted_mask_as_size_hint() -> None:
    small, large, larger = (np.zeros(SHAPE[1:], bool) for _ in range(3))
    small[6:8, 6:8] = True
    large[4:10, 4:10] = True
    larger[2:14, 2:14] = True
    # slices 3 and 5 were prompted in earlier rounds; 9 only got a propagated mask
    old = {3: small, 5: large, 9: larger}
    click = SlicePrompts(clicks=((8.0, 8.0, True),))
    hints = _hints({8: click}, old, pinned=(3, 5))
    assert hints[8] is large  # not the nearest (9) nor the larger propagated one
    # a slice that has a mask, or a box, sets its own window
    FakePropagator.log = []
    hints = _hints({5: click}, old, pinned=(3,))
    assert hints[5] is None
    FakePropagator.log = []
    boxed = SlicePrompts(clicks=click.clicks, boxes=((2, 2, 12, 12),))
    assert _hints({8: boxed}, old, pinned=(3, 5))[8] is None
    # no earlier prompted slice with a mask: the wide window, as for a first click
    FakePropagator.log = []
    assert _hints({8: click}, {9: larger}, pinned=())[8] is None


def _steps_by_source() -> dict[int, list[int]]:
    """The slices each propagation stepped through, keyed by its source slice (the first
    slice a propagator remembers)."""
    out: dict[int, list[int]] = {}
    source = None
    for e in FakePropagator.log:
        if e[0] == "start":
            source = None
        elif e[0] == "remember" and source is None:
            source = e[1]
            out.setdefault(source, [])
        elif e[0] == "step":
            out[source].append(e[1])
    return out


def test_two_slices_prompted_in_one_round_share_the_slices_between_them() -> None:
    out = _round({3: True, 6: True}, {})
    steps = _steps_by_source()
    assert steps[3] == [4, 2]  # up to the middle, then down past the object's end
    assert steps[6] == [7, 5]  # up past the end, then down: none of 3's half again
    assert all(out[z] for z in range(3, 7))
    FakePropagator.log = []
    _round({3: True, 7: True}, {})  # an odd gap: the lower slice takes the middle one
    assert _steps_by_source()[3][:2] == [4, 5]
    assert _steps_by_source()[7] == [8, 6]


def _second_click_round(latest_positive: bool, fusion: bool = False) -> dict[int, bool]:
    """Slice 3 was prompted in an earlier round; slice 7 gets a second click of the other
    sign before it now; {z: mask non-empty} for every slice the round decides."""
    # unlike the new masks in between, so no agreement stop ends the round early
    old = {z: SQUARE.copy() if z in (3, 7) else SMALL for z in range(3, 8)}
    clicks = ((8.0, 8.0, not latest_positive), (9.0, 9.0, latest_positive))
    sp = {7: SlicePrompts(clicks=clicks)}
    out: dict[int, bool] = {}
    for z, mask, _ in run_round(
        None, Volume(), sp, old.get, (3,), lambda z: None, RoundOptions(fusion=fusion)
    ):
        out[z] = bool(mask.any())
    return out


def _fusion_asks() -> dict[int, bool]:
    """Whether each fusion decision was told the round's click asked for more, by slice (the
    rule itself is the model's, ``FusionRule.of``: a "more" click never shrinks a mask)."""
    assert all(e[3] == FusionRule() for e in FakePropagator.log if e[0] == "fuse")
    return {e[1]: e[2] for e in FakePropagator.log if e[0] == "fuse"}


def test_a_negative_click_reaches_only_halfway_to_an_earlier_prompted_slice() -> None:
    out = _second_click_round(latest_positive=False)
    assert _steps_by_source()[7] == [6, 5]  # 4 is nearer to slice 3: it keeps its mask
    assert 4 not in out
    FakePropagator.log = []
    out = _second_click_round(latest_positive=True)  # "more" goes all the way, as before
    assert _steps_by_source()[7] == [8, 6, 5, 4]  # 8: past the object's end
    assert 4 in out


def test_a_positive_click_never_shrinks_a_propagated_mask() -> None:
    _second_click_round(latest_positive=True, fusion=True)
    # fusion keeps the old mask wherever the new one is smaller (the rule's grow ratio 1)
    assert _fusion_asks() == {6: True, 5: True, 4: True}


def test_a_negative_click_keeps_the_models_fusion_ratio() -> None:
    _second_click_round(latest_positive=False, fusion=True)
    assert _fusion_asks() == {6: False, 5: False}  # and only halfway towards slice 3
