"""Rounds: slice-by-slice fill-in, undo/redo, cancel, restart on a new prompt, responsiveness."""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import reference, wait_round
from qtpy.QtCore import QTimer

SP = (2.5, 0.8, 0.8)


def test_propagates_and_undo_redo(dock, qtbot, volume):
    viewer, w = dock
    st = w.state
    st.points.add([10, 32, 20])
    wait_round(qtbot, w)
    first = st.labels.data.copy()
    assert (first == 1).any(axis=(1, 2)).sum() > 5  # filled in beyond the clicked slice
    assert w.last_round["slices"] > 5 and w.progress.value() == w.progress.maximum()
    st.points.add([10, 32, 46])
    wait_round(qtbot, w)
    second = st.labels.data.copy()
    assert (second == 1).sum() > (first == 1).sum()
    w.undo()
    np.testing.assert_array_equal(st.labels.data, first)
    assert len(st.points.data) == 1
    w.redo()
    np.testing.assert_array_equal(st.labels.data, second)
    assert len(st.points.data) == 2
    ref = reference(volume, SP, [[("click", 10, 32, 20, True)]])
    np.testing.assert_array_equal(first, ref)


def test_undo_key_on_prompt_layer(dock, qtbot):
    viewer, w = dock
    st = w.state
    st.points.add([10, 32, 20])
    wait_round(qtbot, w)
    assert any("Z" in str(k).upper() for k in st.points.keymap)


def test_cancel_leaves_object_as_before(dock, qtbot, fake_engine):
    viewer, w = dock
    st = w.state
    st.points.add([10, 32, 20])
    wait_round(qtbot, w)
    before = st.labels.data.copy()
    fake_engine.delay = 0.05
    st.points.add([10, 32, 46])
    qtbot.waitUntil(
        lambda: (st.labels.data[10] == 1).sum() > (before[10] == 1).sum(), timeout=5000
    )
    w.cancel_round()
    wait_round(qtbot, w)
    np.testing.assert_array_equal(st.labels.data, before)
    assert len(st.session.prompts(1)) == 2  # the new prompt is still pending
    assert "cancelled" in w.status.text()


def test_new_prompt_restarts_round(dock, qtbot, fake_engine, volume):
    viewer, w = dock
    st = w.state
    fake_engine.delay = 0.03
    st.points.add([10, 32, 20])
    qtbot.waitUntil(lambda: w.running and st.labels.data[10, 32, 20] == 1, timeout=5000)
    st.points.add([10, 32, 46])  # during the round
    wait_round(qtbot, w)
    ref = reference(volume, SP, [[("click", 10, 32, 20, True), ("click", 10, 32, 46, True)]])
    np.testing.assert_array_equal(st.labels.data, ref)


class _Ticks:
    """A 10 ms Qt timer recording the time between its ticks: how long the event loop was
    blocked. ``mark`` restarts the clock; ``stop`` stops the timer, returns the worst gap in ms."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self.mark()
        self.timer = QTimer()
        self.timer.timeout.connect(self._tick)
        self.timer.start(10)

    def mark(self) -> None:
        self._last = time.perf_counter()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now

    def stop(self) -> float:
        self.timer.stop()
        return max(self.gaps) * 1000


def test_event_loop_keeps_running_during_a_round(make_napari_viewer, qtbot, fake_engine):
    """A 10 ms timer keeps ticking while a long round runs (engine work holding the GIL part of
    the time, like the real round's Python glue): the viewer is never frozen for the round.
    How long its longest stall is belongs to the benchmark (``limnet bench --viewer``)."""
    from conftest import synthetic_volume

    viewer = make_napari_viewer()
    viewer.add_image(synthetic_volume((60, 128, 128)), name="big")
    _, w = viewer.window.add_plugin_dock_widget("napari-limnet")
    fake_engine.delay = 0.01
    fake_engine.busy = 0.01
    ticks = _Ticks()
    w.state.points.add([30, 64, 40])
    qtbot.waitUntil(lambda: w.running, timeout=5000)
    ticks.mark()
    ticks.gaps.clear()
    started = time.perf_counter()
    wait_round(qtbot, w, timeout=60000)
    elapsed = time.perf_counter() - started
    worst = ticks.stop()
    assert w.last_round["slices"] > 20
    # a round of about a second: a frozen viewer would tick a handful of times at most
    assert len(ticks.gaps) > 0.25 * elapsed / 0.010 and worst < 0.5 * elapsed * 1000


@pytest.mark.real_model
def test_widget_round_with_the_trained_weights(make_napari_viewer, qtbot):
    """The real engine in the widget (trained weights, the widget's thread count, a shown
    viewer): a warm-up round on one sphere, then a second object's round fills the other
    sphere through the volume while the event loop keeps ticking. Its longest stall is
    measured by ``limnet bench --viewer`` (29-40 ms here when the machine was otherwise idle,
    under the 50 ms target; 120-1070 ms before the engine got its own low-priority thread)."""
    from napari_limnet.commands.bench import two_spheres
    from napari_limnet.engine import model as model_mod

    if not model_mod.default_weights_path().is_file():
        pytest.skip("trained weights not bundled")
    shape = (40, 192, 192)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(two_spheres(shape), name="spheres", scale=(2.5, 0.8, 0.8))
    _, w = viewer.window.add_plugin_dock_widget("napari-limnet")
    st = w.state
    z, y = shape[0] // 2, shape[1] // 2
    st.points.add([z, y, int(shape[2] * 0.28)])  # warm-up round (loads the model)
    wait_round(qtbot, w, timeout=180000)
    w.new_object()
    ticks = _Ticks()
    st.points.add([z, y, int(shape[2] * 0.72)])
    ticks.mark()
    wait_round(qtbot, w, timeout=120000)
    ticks.stop()
    assert w.last_round["slices"] > 15
    assert (st.labels.data == 2).any(axis=(1, 2)).sum() > 15
    assert len(ticks.gaps) > 10  # the viewer kept running


def test_progress_and_last_round_agree_and_belong_to_their_image(dock, qtbot, volume):
    viewer, w = dock
    assert w.progress.text() == "no round running"
    w.state.points.add([10, 32, 20])
    wait_round(qtbot, w)
    n = w.last_round["slices"]
    assert w.progress.text() == f"{n} slices"
    assert w.speed_label.text().startswith(f"Last round: {n} slices")
    first = w.state
    other = viewer.add_image(volume[:, ::-1].copy(), name="other", scale=(2.5, 0.8, 0.8))
    assert w.state is not first and w.state.image.name == "other"
    assert w.speed_label.text() == "" and w.progress.text() == "no round running"
    # only the image being segmented (and its layers) is shown
    assert not viewer.layers["ct"].visible and not viewer.layers["ct labels"].visible
    assert viewer.layers["other"].visible and viewer.layers["other clicks"].visible
    w._on_image_chosen(w.image_combo.findText("ct"))  # as choosing it in the Image list
    assert w.state is first
    assert w.speed_label.text().startswith(f"Last round: {n} slices")
    assert viewer.layers["ct"].visible and not viewer.layers["other"].visible
    del other
