"""Prompts on slices of any volume axis (``axis=`` of the prompt verbs, DESIGN.md).

Most tests use the fake round of ``test_session`` (threshold + slice-by-slice propagation, fast
and independent of the networks); the last runs the shipped model on the real sample CT.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_session import assert_refused, assert_same, cube_volume, snapshot

import napari_limnet
from fakes import FakeEngine
from napari_limnet import Session
from napari_limnet._sample_data import SAMPLE_DIR
from napari_limnet.engine import session as session_mod
from napari_limnet.evaluation.annotator import first_click

A = cube_volume() == 100  # block A: z 2..9, y 4..13, x 4..13
B = cube_volume() == 120


@pytest.fixture
def fake(monkeypatch):
    eng = FakeEngine()
    monkeypatch.setattr(session_mod.rounds, "run_round", eng.run_round)
    return eng.calls


def _session() -> Session:
    return Session(cube_volume(), spacing=(2.0, 1.0, 1.0), model=object())


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_click_across_any_axis_segments_the_object(fake, axis):
    s = _session()
    a = s.new_object()
    s.add_click(a, (5, 8, 9), axis=axis)
    (p,) = s.prompts(a)
    assert p.axis == axis and p.z == (5, 8, 9)[axis]
    assert p.coords == tuple(float(v) for k, v in enumerate((5, 8, 9)) if k != axis)
    np.testing.assert_array_equal(s.run(a), A)
    assert fake[0]["prompts"].keys() == {(5, 8, 9)[axis]}


def test_events_of_a_round_across_axis_2_are_its_planes(fake):
    s = _session()
    a = s.new_object()
    s.add_click(a, (5, 8, 9), axis=2)
    events = list(s.run_iter(a))
    m = s.mask(a)
    assert events[0].z == 9 and events[0].axis == 2
    for ev in events:
        assert ev.axis == 2 and ev.mask.shape == (12, 32)
        np.testing.assert_array_equal(ev.mask, m[:, :, ev.z])
    assert [ev.done for ev in events] == list(range(1, len(events) + 1))
    # the round saw the volume across axis 2: shape and spacing permuted
    vol = fake[0]
    assert set(vol["current"]) == set(range(32))


def test_box_scribble_and_lasso_across_axes(fake):
    s = _session()
    a = s.new_object()
    # across axis 2 at x = 8: the box's corners are (z0, y0, z1, y1)
    s.add_box(a, 8, (2, 4, 9, 13), axis=2)
    np.testing.assert_array_equal(s.run(a), A)
    b = s.new_object()
    s.add_scribble(b, [(4, 20, 22), (7, 25, 22)], axis=2)
    np.testing.assert_array_equal(s.run(b), B)
    s.reset(b)
    s.add_lasso(b, [(3, 19, 17), (8, 19, 17), (8, 19, 28), (3, 19, 28)], axis=1)
    (p,) = s.prompts(b)
    assert p.kind == "lasso" and p.z == 19 and p.coords[:2] == (3.0, 17.0)
    np.testing.assert_array_equal(s.run(b), B)
    # the round got it on plane y = 19, as (z, x)
    assert fake[-1]["prompts"][19].regions == (((3, 17), (8, 17), (8, 28), (3, 28)),)


def test_prompts_of_several_axes_in_one_round(fake):
    s = _session()
    a = s.new_object()
    s.add_click(a, (5, 8, 9))
    s.add_click(a, (5, 20, 20), axis=1)
    events = list(s.run_iter(a))
    assert [ev.axis for ev in events][0] == 0 and events[-1].axis == 1
    np.testing.assert_array_equal(s.mask(a), A | B)
    assert len(fake) == 2  # one pass per axis, axis 0 first
    # the second pass started from the first one's masks
    assert fake[1]["current"][20] is None and fake[1]["current"][8] is not None
    s.undo(a)
    assert not s.mask(a).any() and all(p.pending for p in s.prompts(a))
    s.redo(a)
    np.testing.assert_array_equal(s.mask(a), A | B)


def test_a_round_across_an_axis_never_takes_other_objects_voxels(fake):
    s = _session()
    b = s.new_object()
    held = np.zeros_like(A)
    held[:, :, 4:7] = A[:, :, 4:7]
    s.set_mask(b, held)
    a = s.new_object()
    s.add_click(a, (5, 8, 9), axis=1)
    np.testing.assert_array_equal(s.run(a), A & ~held)
    np.testing.assert_array_equal(s.mask(b), held)


def test_cancel_across_an_axis_changes_nothing(fake):
    s = _session()
    a = s.new_object()
    s.add_click(a, (5, 8, 9))
    s.run(a)
    s.add_click(a, (5, 20, 20), axis=2)
    before = snapshot(s)
    it = s.run_iter(a)
    next(it)
    it.close()
    assert_same(snapshot(s), before)
    assert s.prompts(a)[-1].pending


def test_z_range_and_direction_concern_the_slice_axis_only(fake):
    s = _session()
    s.z_range = (4, 6)
    s.direction = "up"
    a = s.new_object()
    s.add_click(a, (5, 8, 9), axis=2)
    s.run(a)
    opts = fake[0]["options"]
    assert (opts.z_range, opts.direction) == (None, "both")


@pytest.mark.parametrize(
    "call",
    [
        lambda s, a: s.add_click(a, (5, 8, 9), axis=3),
        lambda s, a: s.add_click(a, (5, 8, 9), axis=-1),
        lambda s, a: s.add_click(a, (5, 8, 9), axis=True),
        lambda s, a: s.add_click(a, (5, 8, 9), axis="1"),
        lambda s, a: s.add_box(a, 40, (2, 4, 9, 13), axis=2),  # x 40 is outside
        lambda s, a: s.add_box(a, 8, (2, 4, 14, 13), axis=2),  # z 14 is outside
        lambda s, a: s.add_box(a, 8, (2, 4, 2, 13), axis=2),  # no area
        lambda s, a: s.add_scribble(a, [(4, 20, 22), (7, 25, 23)], axis=2),  # two planes
        lambda s, a: s.add_lasso(a, [(3, 19, 17), (8, 19, 17), (8, 19, 28)], axis=0),
    ],
)
def test_bad_axes_raise_and_change_nothing(call):
    s = _session()
    a = s.new_object()
    s.add_click(a, (5, 8, 9))
    assert_refused(s, lambda: call(s, a))


def test_a_2d_image_has_axis_0_only():
    s = Session(cube_volume()[5], model=object())
    a = s.new_object()
    with pytest.raises(ValueError, match="2D image"):
        s.add_click(a, (8, 8), axis=1)


def test_a_click_on_the_transposed_real_ct_gives_the_same_mask():
    """The spleen of the sample CT: one click on the original, and the same click on the
    volume turned so that its slice axis is last (prompt across axis 2)."""
    import nibabel as nib

    image = np.asarray(nib.load(SAMPLE_DIR / "ct_abdomen.nii.gz").dataobj)
    gt = np.asarray(nib.load(SAMPLE_DIR / "ct_abdomen_label.nii.gz").dataobj) == 1
    image, gt = np.moveaxis(image, 2, 0), np.moveaxis(gt, 2, 0)  # (Z, Y, X): 30 slices
    spacing = (3.0, 3.0, 3.0)
    model = napari_limnet.load_model(device="cpu")
    click = first_click(gt, spacing)
    s = Session(image, spacing=spacing, model=model, threads=1)
    a = s.new_object()
    s.add_click(a, (click.z, click.y, click.x))
    m = s.run(a)
    dice = 2 * (m & gt).sum() / (m.sum() + gt.sum())
    assert dice > 0.6
    turned = np.moveaxis(image, 0, 2)  # (Y, X, Z): the slice axis last
    t = Session(turned, spacing=spacing, model=model, threads=1)
    b = t.new_object()
    t.add_click(b, (click.y, click.x, click.z), axis=2)
    np.testing.assert_array_equal(np.moveaxis(t.run(b), 2, 0), m)
