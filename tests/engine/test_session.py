"""The public Session API of DESIGN.md: contract, rules, undo/redo, cancellation, bad input.

Most tests swap ``run_round`` for a small deterministic fake (threshold + slice-by-slice
propagation) so that they are fast and independent of the trained networks; a few run the
real round with ``napari_limnet.load_model()`` on a tiny volume.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import napari_limnet
from fakes import FakeEngine
from napari_limnet import RoundEvent, Session
from napari_limnet.engine import session as session_mod
from napari_limnet.engine.prompts import Prompt, SlicePrompts
from napari_limnet.engine.rounds import RoundOptions
from napari_limnet.engine.volume import Volume


@pytest.fixture
def fake(monkeypatch):
    """The shared stand-in round (``tests/fakes.py``); returns the list of its calls."""
    eng = FakeEngine()
    monkeypatch.setattr(session_mod.rounds, "run_round", eng.run_round)
    return eng.calls


def cube_volume(shape=(12, 32, 32)):
    """Two bright blocks: A (z 2..9, y 4..13, x 4..13) and B (z 3..8, y 18..27, x 18..27)."""
    v = np.zeros(shape, np.int16)
    v[2:10, 4:14, 4:14] = 100
    v[3:9, 18:28, 18:28] = 120
    return v


@pytest.fixture
def s(fake):
    return Session(cube_volume(), spacing=(2.0, 1.0, 1.0), model=object())


def snapshot(sess: Session) -> tuple:
    return (
        tuple(sess.objects),
        {o: sess.mask(o).copy() for o in sess.objects},
        {o: sess.prompts(o) for o in sess.objects},
        sess.labels().copy(),
    )


def assert_same(a: tuple, b: tuple) -> None:
    assert a[0] == b[0]
    for o in a[0]:
        np.testing.assert_array_equal(a[1][o], b[1][o])
        assert a[2][o] == b[2][o]
    np.testing.assert_array_equal(a[3], b[3])


def assert_refused(sess: Session, call) -> None:
    """``call()`` raises a ValueError with a message and leaves the session as it was."""
    before = snapshot(sess)
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value)
    assert_same(snapshot(sess), before)


# -- the contract ----------------------------------------------------------------------------
def test_public_names():
    assert napari_limnet.Session is Session
    assert napari_limnet.RoundEvent is RoundEvent


def test_object_ids_never_reused(s):
    a, b = s.new_object(), s.new_object()
    assert (a, b) == (1, 2)
    s.remove_object(b)
    assert s.new_object() == 3
    assert s.objects == [1, 3]


def test_run_segments_and_labels(s):
    a = s.new_object()
    s.add_click(a, (5, 8, 8))
    m = s.run(a)
    assert m.dtype == bool and m.shape == (12, 32, 32)
    expected = cube_volume() == 100
    np.testing.assert_array_equal(m, expected)
    lab = s.labels()
    assert lab.shape == (12, 32, 32) and np.issubdtype(lab.dtype, np.integer)
    np.testing.assert_array_equal(lab, expected * a)
    assert [p.round for p in s.prompts(a)] == [1]


def test_run_iter_events(s, fake):
    a = s.new_object()
    s.add_click(a, (5, 8, 8))
    events = list(s.run_iter(a))
    assert all(isinstance(e, RoundEvent) for e in events)
    assert events[0].z == 5  # the prompted slice first
    assert [e.done for e in events] == list(range(1, len(events) + 1))
    assert all(e.total >= e.done for e in events)
    m = s.mask(a)
    for e in events:  # every event's mask is the final one of its slice
        assert e.mask.dtype == bool and e.mask.shape == (32, 32)
        np.testing.assert_array_equal(e.mask, m[e.z])
    assert sorted(e.z for e in events) == list(range(1, 11))  # up to the first empty slice


def test_nothing_new_adds_no_round(s, fake):
    a = s.new_object()
    assert not s.run(a).any()
    assert fake == []
    s.add_click(a, (5, 8, 8))
    m1 = s.run(a)
    assert len(fake) == 1
    m2 = s.run(a)
    assert len(fake) == 1 and list(s.run_iter(a)) == []
    np.testing.assert_array_equal(m1, m2)
    s.undo(a)  # one round only: undo empties the object
    assert not s.mask(a).any() and s.prompts(a) == []


def test_round_inputs(s, fake):
    a = s.new_object()
    s.add_click(a, (5, 8, 8))
    s.add_box(a, 5, (4, 4, 13, 13))
    s.run(a)
    assert set(fake[0]["prompts"]) == {5} and fake[0]["pinned"] == set()
    assert fake[0]["prompts"][5] == SlicePrompts(
        clicks=((8.0, 8.0, True),), boxes=((4, 4, 13, 13),)
    )
    assert all(c is None for c in fake[0]["current"].values())
    before = s.mask(a)
    s.add_click(a, (5, 10, 10), positive=False)
    s.add_click(a, (7, 9, 9))
    s.run(a)
    call = fake[1]
    assert set(call["prompts"]) == {5, 7}
    assert call["prompts"][5].clicks == ((8.0, 8.0, True), (10.0, 10.0, False))
    assert call["prompts"][5].boxes == ((4, 4, 13, 13),)
    assert call["pinned"] == set()
    for z, c in call["current"].items():  # current(z): the mask before the round
        if before[z].any():
            np.testing.assert_array_equal(c, before[z])
        else:
            assert c is None
    s.add_click(a, (3, 9, 9))
    s.run(a)
    assert set(fake[2]["prompts"]) == {3} and fake[2]["pinned"] == {5, 7}


def test_options_reach_the_round(fake):
    s = Session(cube_volume(), model=object(), fusion=False, propagation=False, z_range=(1, 8))
    a = s.new_object()
    s.add_click(a, (5, 8, 8))
    s.run(a)
    assert fake[-1]["options"] == RoundOptions(False, False, (1, 8), "both")
    assert s.mask(a).sum(axis=(1, 2)).nonzero()[0].tolist() == [5]  # 2D only
    s.propagation, s.fusion, s.direction, s.z_range = True, True, "up", None
    s.add_click(a, (5, 9, 9))
    s.run(a)
    assert fake[-1]["options"] == RoundOptions(True, True, None, "up")
    assert s.mask(a).sum(axis=(1, 2)).nonzero()[0].tolist() == [5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="direction"):
        s.direction = "sideways"
    with pytest.raises(ValueError, match="z_range"):
        s.z_range = (5, 40)
    with pytest.raises(ValueError, match="direction"):
        Session(cube_volume(), model=object(), direction="left")


# -- undo / redo -----------------------------------------------------------------------------
def test_undo_redo_restore_prompts_and_masks_exactly(s):
    a = s.new_object()
    states = [snapshot(s)]
    s.add_click(a, (5, 8, 8))
    s.run(a)
    states.append(snapshot(s))
    s.add_click(a, (5, 5, 5), positive=False)  # removes the whole block on slice 5
    s.run(a)
    states.append(snapshot(s))
    s.add_box(a, 6, (4, 4, 13, 13))
    s.run(a)
    states.append(snapshot(s))
    for k in (2, 1, 0):
        s.undo(a)
        assert_same(snapshot(s), states[k])
    s.undo(a)  # nothing left: no-op
    assert_same(snapshot(s), states[0])
    for k in (1, 2, 3):
        s.redo(a)
        assert_same(snapshot(s), states[k])
    s.redo(a)  # nothing to redo: no-op
    assert_same(snapshot(s), states[3])


def test_new_round_clears_redo_and_undo_keeps_pending(s):
    a = s.new_object()
    s.add_click(a, (5, 8, 8))
    s.run(a)
    s.undo(a)
    s.add_click(a, (4, 8, 8))
    s.undo(a)  # nothing to undo; pending click stays
    assert [p.pending for p in s.prompts(a)] == [True]
    s.run(a)
    after = snapshot(s)
    s.redo(a)  # the undone round is gone for good
    assert_same(snapshot(s), after)
    s.add_click(a, (6, 8, 8))
    s.undo(a)
    assert not s.mask(a).any()
    assert [(p.z, p.pending) for p in s.prompts(a)] == [(6, True)]


def test_set_mask_is_an_undo_step(s):
    a = s.new_object()
    s.add_click(a, (5, 8, 8))
    s.run(a)
    state = snapshot(s)
    m = np.zeros((12, 32, 32), np.uint8)
    m[0, :3, :3] = 7
    s.set_mask(a, m)
    np.testing.assert_array_equal(s.mask(a), m > 0)
    assert s.prompts(a) == state[2][a]
    s.undo(a)
    assert_same(snapshot(s), state)
    s.redo(a)
    np.testing.assert_array_equal(s.mask(a), m > 0)


def test_reset_and_remove_object(s):
    a, b = s.new_object(), s.new_object()
    s.add_click(a, (5, 8, 8))
    s.run(a)
    s.add_click(b, (5, 20, 20))
    s.run(b)
    s.reset(a)
    assert not s.mask(a).any() and s.prompts(a) == []
    s.undo(a)  # reset clears the history
    assert not s.mask(a).any()
    s.remove_object(b)
    assert not s.labels().any()
    with pytest.raises(ValueError, match="unknown object"):
        s.mask(b)


# -- prompts ---------------------------------------------------------------------------------
def test_remove_prompt(s, fake):
    a = s.new_object()
    s.add_click(a, (5, 8, 8))
    s.add_click(a, (5, 9, 9))
    s.add_click(a, (7, 8, 8))
    s.remove_prompt(a, 2)  # pending: just gone
    assert [p.z for p in s.prompts(a)] == [5, 5]
    s.run(a)
    assert set(fake[-1]["prompts"]) == {5}
    s.add_click(a, (3, 8, 8))
    s.run(a)
    s.remove_prompt(a, 1)  # a past prompt of slice 5: slice 5 is re-run next round
    ps = s.prompts(a)
    assert [(p.z, p.coords, p.round) for p in ps] == [(5, (8.0, 8.0), 1), (3, (8.0, 8.0), 2)]
    s.run(a)
    assert set(fake[-1]["prompts"]) == {5}
    assert fake[-1]["prompts"][5].clicks == ((8.0, 8.0, True),)
    assert fake[-1]["pinned"] == {3}
    assert len(fake) == 3
    s.run(a)  # nothing new any more
    assert len(fake) == 3
    s.undo(a)  # the round that consumed the removal: the removed prompt is back
    assert [p.coords for p in s.prompts(a)] == [(8.0, 8.0), (9.0, 9.0), (8.0, 8.0)]


def test_prompts_added_during_a_round_wait(s, fake):
    a = s.new_object()
    s.add_click(a, (5, 8, 8))
    it = s.run_iter(a)
    next(it)
    s.add_click(a, (8, 8, 8), positive=False)
    for _ in it:
        pass
    assert [p.pending for p in s.prompts(a)] == [False, True]
    assert set(fake[0]["prompts"]) == {5}
    s.run(a)
    assert set(fake[1]["prompts"]) == {8}


def test_prompt_removed_during_a_round(s, fake):
    a = s.new_object()
    s.add_click(a, (5, 8, 8))
    it = s.run_iter(a)
    next(it)
    s.remove_prompt(a, 0)
    list(it)
    assert s.prompts(a) == []  # the round used it, the user removed it: slice 5 re-runs
    s.run(a)
    assert fake[-1]["prompts"] == {5: SlicePrompts()}


# -- cancellation ----------------------------------------------------------------------------
def test_cancel_leaves_session_unchanged(s):
    a, b = s.new_object(), s.new_object()
    s.add_click(b, (5, 20, 20))
    s.run(b)
    s.add_click(a, (5, 8, 8))
    s.run(a)
    s.add_click(a, (7, 8, 8))
    s.set_mask(a, s.mask(a) & (np.arange(12) <= 5)[:, None, None])  # 6.. empty again
    before = snapshot(s)
    it = s.run_iter(a)
    ev = next(it)
    assert ev.z == 7
    next(it)
    it.close()
    assert_same(snapshot(s), before)
    assert s.prompts(a)[-1].pending
    s.undo(a)  # undo still undoes the set_mask, then the first round
    s.undo(a)
    assert not s.mask(a).any()
    s.redo(a)
    s.redo(a)
    assert_same(snapshot(s), before)
    s.run(a)
    assert s.mask(a)[7:10].all(axis=0)[8, 8] and not s.prompts(a)[-1].pending


def test_new_round_cancels_unfinished_one(s, fake):
    a, b = s.new_object(), s.new_object()
    s.add_click(a, (5, 8, 8))
    s.add_click(b, (5, 20, 20))
    it = s.run_iter(a)
    next(it)
    s.run(b)
    assert list(it) == []  # closed
    assert not s.mask(a).any() and s.prompts(a)[0].pending
    assert s.mask(b).any()
    s.run(a)
    assert s.mask(a).any()


def test_round_that_raises_changes_nothing(s, monkeypatch):
    a = s.new_object()
    s.add_click(a, (5, 8, 8))
    s.run(a)
    s.add_click(a, (6, 8, 8))
    before = snapshot(s)

    def broken(*args, **kw):
        yield 6, np.ones((32, 32), bool), 1
        raise RuntimeError("boom")

    monkeypatch.setattr(session_mod.rounds, "run_round", broken)
    with pytest.raises(RuntimeError):
        s.run(a)
    assert_same(snapshot(s), before)


# -- two objects never share a voxel --------------------------------------------------------
def test_objects_never_share_voxels(fake):
    v = np.zeros((8, 24, 24), np.int16)
    v[1:7, 4:20, 4:20] = 100  # one block: both objects want it
    s = Session(v, model=object())
    a, b = s.new_object(), s.new_object()
    s.add_click(a, (3, 10, 10))
    s.run(a)
    s.add_click(b, (3, 10, 10))
    mb = s.run(b)
    assert not (s.mask(a) & mb).any()
    assert not mb.any()
    m = np.zeros(v.shape, bool)
    m[:, :12] = True
    s.set_mask(b, m)  # set_mask does not take a's voxels either
    assert not (s.mask(a) & s.mask(b)).any()
    lab = s.labels()
    np.testing.assert_array_equal(lab == a, s.mask(a))
    np.testing.assert_array_equal(lab == b, s.mask(b))


def test_round_output_that_overlaps_is_clipped(s, monkeypatch):
    a, b = s.new_object(), s.new_object()
    s.set_mask(a, np.ones((12, 32, 32), bool))

    def greedy(model, volume, prompts, current, pinned, blocked, options=None):
        for z in range(volume.shape[0]):
            yield z, np.ones(volume.shape[1:], bool), volume.shape[0]  # ignores blocked

    monkeypatch.setattr(session_mod.rounds, "run_round", greedy)
    s.add_click(b, (0, 0, 0))
    events = list(s.run_iter(b))
    assert not any(e.mask.any() for e in events)
    assert not s.mask(b).any() and s.mask(a).all()


# -- bad input raises ValueError and changes nothing ----------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda s, a: s.add_click(99, (1, 1, 1)),
        lambda s, a: s.add_click(a, (12, 1, 1)),
        lambda s, a: s.add_click(a, (-1, 1, 1)),
        lambda s, a: s.add_click(a, (1, 32, 1)),
        lambda s, a: s.add_click(a, (1, 1, -3)),
        lambda s, a: s.add_click(a, (1, 1)),
        lambda s, a: s.add_click(a, (1, float("nan"), 1)),
        lambda s, a: s.add_click(a, "here"),
        lambda s, a: s.add_box(a, 12, (1, 1, 5, 5)),
        lambda s, a: s.add_box(a, 1, (1, 1, 40, 5)),
        lambda s, a: s.add_box(a, 1, (-1, 1, 4, 5)),
        lambda s, a: s.add_box(a, 1, (3, 1, 3, 5)),
        lambda s, a: s.add_box(a, 1, (1, 4, 5, 4)),
        lambda s, a: s.add_box(a, 1, (1, 4, 5)),
        lambda s, a: s.add_box(99, 1, (1, 1, 5, 5)),
        lambda s, a: s.set_mask(a, np.zeros((12, 32, 31), bool)),
        lambda s, a: s.set_mask(a, np.zeros((32, 32), bool)),
        lambda s, a: s.set_mask(99, np.zeros((12, 32, 32), bool)),
        lambda s, a: s.remove_prompt(a, 5),
        lambda s, a: s.remove_prompt(a, "0"),
        lambda s, a: s.remove_prompt(99, 0),
        lambda s, a: s.prompts(99),
        lambda s, a: s.run(99),
        lambda s, a: s.run_iter(99),
        lambda s, a: s.mask(99),
        lambda s, a: s.undo(99),
        lambda s, a: s.redo(99),
        lambda s, a: s.reset(99),
        lambda s, a: s.remove_object(99),
        lambda s, a: s.remove_object("1"),
    ],
)
def test_bad_input_raises_and_changes_nothing(s, call):
    a = s.new_object()
    s.add_click(a, (5, 8, 8))
    s.run(a)
    s.add_click(a, (6, 8, 8))
    assert_refused(s, lambda: call(s, a))
    assert s.new_object() == 2  # the id counter did not move either


def test_bad_session_arguments():
    v = cube_volume()
    with pytest.raises(ValueError, match="positive"):
        Session(v, spacing=(1, 0, 1), model=object())
    with pytest.raises(ValueError, match="spacing"):
        Session(v, spacing=(1, 1), model=object())
    with pytest.raises(ValueError, match="4D"):
        Session(np.zeros((2, 3, 8, 8)), model=object())
    with pytest.raises(ValueError, match="RGB"):
        Session(np.zeros((16, 16, 3), np.uint8), model=object())
    with pytest.raises(ValueError, match="empty"):
        Session(np.zeros((0, 8, 8)), model=object())
    with pytest.raises(ValueError, match="NaN"):
        Session(np.full((4, 8, 8), np.nan), model=object())
    with pytest.raises(ValueError, match="threads"):
        Session(v, model=object(), threads=0)


# -- 2D images -------------------------------------------------------------------------------
def test_prompts_are_checked_without_a_session():
    """``Prompt``'s constructors check against the volume's shape alone (``limnet segment``
    checks a prompt file so, before any weights load)."""
    vol = Volume(cube_volume())
    assert Prompt.click(vol, (5, 8, 9)) == Prompt("click", 5, (8.0, 9.0), True)
    assert Prompt.box(vol, 20, (1, 2, 3, 4), axis=2).z == 20
    with pytest.raises(ValueError, match="outside the volume"):
        Prompt.click(vol, (12, 8, 9))
    with pytest.raises(ValueError, match="no area"):
        Prompt.box(vol, 3, (4, 4, 4, 9))
    with pytest.raises(ValueError, match="one slice"):
        Prompt.scribble(vol, [(2, 4, 4), (3, 5, 5)])


def test_a_model_source_is_called_by_each_round_in_its_thread(monkeypatch):
    """``model`` may be a function: a round calls it in the thread that runs the round, and
    making the session loads nothing (a viewer never loads weights on its main thread)."""
    eng = FakeEngine()
    given = []

    def run_round(model, *args, **kwargs):
        given.append(model)
        return eng.run_round(model, *args, **kwargs)

    monkeypatch.setattr(session_mod.rounds, "run_round", run_round)
    loaded = object()
    calls = []

    def source():
        calls.append(threading.get_ident())
        return loaded

    sess = Session(cube_volume(), model=source)
    assert calls == [] and sess.model is source
    obj = sess.new_object()
    sess.add_click(obj, (5, 8, 8))
    worker = threading.Thread(target=sess.run, args=(obj,))
    worker.start()
    worker.join()
    assert calls == [worker.ident] and given == [loaded]
    assert sess.mask(obj)[5, 8, 8]
    sess.add_click(obj, (7, 9, 9))
    sess.run(obj)
    assert calls == [worker.ident, threading.get_ident()] and given == [loaded, loaded]


def test_2d_image(fake):
    img = cube_volume()[5]
    s = Session(img, spacing=(0.5, 0.5), model=object())
    assert s.spacing == (1.0, 0.5, 0.5) and s.shape == (32, 32)
    a = s.new_object()
    s.add_click(a, (8, 8))
    s.add_click(a, (0, 9, 9))
    m = s.run(a)
    assert m.shape == (32, 32) and m.dtype == bool
    np.testing.assert_array_equal(m, img == 100)
    assert s.labels().shape == (32, 32)
    ev = None
    b = s.new_object()
    s.add_box(b, 0, (18, 18, 27, 27))
    for ev in s.run_iter(b):
        assert ev.z == 0 and ev.mask.shape == (32, 32)
    assert ev is not None
    s.set_mask(b, np.zeros((32, 32)))
    assert not s.mask(b).any()
    with pytest.raises(ValueError, match="outside"):
        s.add_click(a, (1, 8, 8))


# -- with the real round and the bundled model (placeholder until the networks land) -------
def small_model():
    """The real networks with random weights (the bundled weights may not exist yet)."""
    import torch

    from napari_limnet.engine.model import LimNetModel
    from napari_limnet.engine.networks import LimNet

    torch.manual_seed(0)
    return LimNetModel(LimNet(), torch.device("cpu"))


def test_real_round_smoke():
    s = Session(cube_volume((6, 24, 24)), model=small_model(), threads=1)
    a = s.new_object()
    s.add_click(a, (4, 8, 8))
    events = list(s.run_iter(a))
    assert events and events[0].z == 4  # the contract only: random weights
    m = s.mask(a)
    assert m.shape == (6, 24, 24) and m.dtype == bool
    for e in events:
        np.testing.assert_array_equal(e.mask, m[e.z])
    b = s.new_object()
    s.add_click(b, (4, 8, 8))
    s.add_click(b, (4, 20, 20))
    mb = s.run(b)
    assert not (m & mb).any()


def test_mask_storage_is_compact(fake):
    v = np.zeros((40, 256, 256), np.int16)
    v[5:35, 100:140, 90:150] = 100
    s = Session(v, model=object())
    a = s.new_object()
    s.add_click(a, (20, 120, 120))
    s.run(a)
    o = s._objects[a]
    stored = sum(p.bits.nbytes for p in o.masks.values())
    assert len(o.masks) == 30 and stored < 30 * 40 * 60 // 8 + 30 * 8


def test_labels_use_the_smallest_type_that_holds_the_ids(fake):
    s = Session(cube_volume(), model=object())
    a = s.new_object()
    s.add_click(a, (5, 8, 8))
    s.run(a)
    assert s.labels().dtype == np.uint8 and s.labels()[5, 8, 8] == 1
    s._next_id = 300  # ids are never reused: the next one is 300
    b = s.new_object()
    s.add_click(b, (5, 20, 20))
    s.run(b)
    lab = s.labels()
    assert lab.dtype == np.uint16 and lab[5, 20, 20] == 300 and lab[5, 8, 8] == 1
    s.remove_object(b)
    assert s.labels().dtype == np.uint8
