"""The per-image controller and the round runner without a viewer or a widget: napari layers
made by ``new_layers``, rounds run inline (in the test's thread) with the fake engine."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import reference

SP = (2.5, 0.8, 0.8)


@pytest.fixture
def ctl(volume):
    from napari.layers import Image

    import napari_limnet
    from napari_limnet._qt.controller import ImageController, new_layers

    image = Image(volume, name="ct", scale=SP)
    session = napari_limnet.Session(volume, spacing=SP, model=object())
    labels, shapes, points = new_layers(image, session.shape, negative=False)
    c = ImageController(image, session, points, shapes, labels)
    c.heard = []  # every message and status line, in order
    c.message.connect(lambda text, level: c.heard.append((level, text)))
    c.status.connect(lambda text: c.heard.append(("status", text)))
    return c


@pytest.fixture
def runner():
    from napari_limnet._qt.round_runner import RoundRunner

    return RoundRunner(inline=True)


def click(ctl, zyx) -> bool:
    """A click on an axial slice, as the widget hands it over: True when a round is due."""
    ctl.points.add(list(zyx))
    return ctl.take_prompts(ctl.points, 0)


def run_round(ctl, runner, on_batch=None) -> None:
    events = ctl.begin_round()
    assert events is not None
    runner.start(events, on_batch=on_batch or ctl.write_events, on_done=ctl.end_round)


def test_click_round_undo_redo(ctl, runner, volume):
    from napari_limnet._qt.round_runner import RunnerState

    assert click(ctl, (10, 32, 20))
    assert ctl.current == 1 and list(ctl.objects) == [1]
    run_round(ctl, runner)
    assert runner.state is RunnerState.IDLE
    first = ctl.labels.data.copy()
    np.testing.assert_array_equal(first, reference(volume, SP, [[("click", 10, 32, 20, True)]]))
    assert ctl.objects[1].volume_ml > 0 and ctl.last_round["slices"] > 5
    assert ("status", "Object 1 updated. Click to correct, O for a new object.") in ctl.heard
    assert click(ctl, (10, 32, 46))
    run_round(ctl, runner)
    second = ctl.labels.data.copy()
    assert (second == 1).sum() > (first == 1).sum()
    ctl.undo_redo("undo")
    np.testing.assert_array_equal(ctl.labels.data, first)
    assert len(ctl.points.data) == 1
    ctl.undo_redo("redo")
    np.testing.assert_array_equal(ctl.labels.data, second)
    assert len(ctl.points.data) == 2


def test_locked_object_refuses_prompts_and_rounds(ctl, runner):
    assert click(ctl, (10, 32, 20))
    run_round(ctl, runner)
    before = ctl.labels.data.copy()
    ctl.set_locked(1, True)
    assert not click(ctl, (10, 32, 46))
    assert len(ctl.points.data) == 1  # the layer shows the object's one click again
    assert "locked" in ctl.heard[-1][1]
    assert ctl.begin_round() is None
    ctl.reset(1)
    ctl.delete(1)
    np.testing.assert_array_equal(ctl.labels.data, before)
    assert 1 in ctl.session.objects
    assert ctl.autosave_meta()["objects"][0]["locked"] is True


def test_second_object_never_takes_the_first(ctl, runner):
    assert click(ctl, (10, 32, 20))
    run_round(ctl, runner)
    one = ctl.labels.data == 1
    assert ctl.new_object() == 2 and len(ctl.points.data) == 0
    ctl.shapes.add_rectangles([np.array([[10, 15, 5], [10, 15, 60], [10, 50, 60], [10, 50, 5]])])
    assert ctl.take_prompts(ctl.shapes, 0)
    run_round(ctl, runner)
    np.testing.assert_array_equal(ctl.labels.data == 1, one)
    assert (ctl.labels.data == 2).any()
    assert [o["id"] for o in ctl.labels.metadata["limnet_objects"]] == [1, 2]


def test_inline_cancel_leaves_the_object_as_before(ctl, runner):
    from napari_limnet._qt.round_runner import RunnerState

    assert click(ctl, (10, 32, 20))
    run_round(ctl, runner)
    before = ctl.labels.data.copy()
    assert click(ctl, (10, 32, 46))
    states = []

    def first_batch_then_cancel(batch):
        ctl.write_events(batch)
        states.append(runner.state)
        assert runner.cancel()
        states.append(runner.state)

    run_round(ctl, runner, first_batch_then_cancel)
    assert states == [RunnerState.RUNNING, RunnerState.CANCELLING]
    assert runner.state is RunnerState.IDLE
    np.testing.assert_array_equal(ctl.labels.data, before)
    assert len(ctl.session.prompts(1)) == 2  # the new prompt is kept
    assert ctl.heard[-1] == ("status", "Round cancelled; its prompts are kept.")


def test_runner_defers_actions_and_restarts(ctl, runner, volume):
    from napari_limnet._qt.round_runner import RunnerState

    assert click(ctl, (10, 32, 20))
    seen = []

    def start():
        run_round(ctl, runner, on_batch)

    def on_batch(batch):
        ctl.write_events(batch)
        if not seen:  # during the first round: a new prompt, and an action for after it
            seen.append(runner.state)
            assert click(ctl, (10, 32, 46))
            runner.request(start)
            runner.when_idle(lambda: seen.append(runner.state))

    runner.request(start)
    assert seen == [RunnerState.RUNNING, RunnerState.IDLE]
    assert runner.state is RunnerState.IDLE and not runner.restart
    ref = reference(volume, SP, [[("click", 10, 32, 20, True), ("click", 10, 32, 46, True)]])
    np.testing.assert_array_equal(ctl.labels.data, ref)


def test_a_failing_round_is_reported_and_undone(ctl, runner):
    assert click(ctl, (10, 32, 20))
    errors, done = [], []

    def prepare():
        raise RuntimeError("no weights")

    runner.start(
        ctl.begin_round(),
        on_batch=ctl.write_events,
        on_done=done.append,
        on_error=errors.append,
        prepare=prepare,
    )
    assert [str(e) for e in errors] == ["no weights"] and done == [False]
    assert not runner.busy and not ctl.labels.data.any()


def test_autosave_payload_and_restore(ctl, runner, tmp_path):
    from napari_limnet._qt import autosave as autosave_mod

    assert click(ctl, (10, 32, 20))
    run_round(ctl, runner)
    ctl.rename(1, "kidney")
    labels, meta = ctl.autosave_payload()
    np.testing.assert_array_equal(labels, ctl.labels.data)
    assert meta["objects"][0]["name"] == "kidney"
    assert meta["objects"][0]["prompts"] == [["click", 10, 32, 20, True]]
    saver = autosave_mod.AutoSaver()
    path = tmp_path / "ct.limnet-autosave.npz"
    saver.save([path], labels, meta)
    saver.wait()
    ctl.delete(1)
    assert not ctl.labels.data.any() and ctl.current is None
    assert ctl.restore_autosave(path)
    # the session never reuses an id: the restored object is object 2
    np.testing.assert_array_equal(ctl.labels.data == 2, labels == 1)
    assert list(ctl.objects) == [2] and ctl.objects[2].name == "kidney"
    assert [tuple(p) for p in ctl.points.data] == [(10, 32, 20)]


def test_controller_and_runner_import_no_qt() -> None:
    """The per-image state and the round runner are Qt-free (the widget alone draws)."""
    code = (
        "import sys, napari_limnet._qt.controller, napari_limnet._qt.round_runner, "
        "napari_limnet._qt.model_cache; "
        "qt = [m for m in sys.modules if m.split('.')[0] in ('qtpy', 'PyQt5', 'PyQt6', "
        "'PySide2', 'PySide6')]; print(qt); sys.exit(1 if qt else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
