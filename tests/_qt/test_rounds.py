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


def test_event_loop_stall_under_100ms(make_napari_viewer, qtbot, fake_engine):
    """Largest gap of a 10 ms timer while a long round runs (engine work holding the GIL part
    of the time, like the real round's Python glue) must stay under 100 ms."""
    from conftest import synthetic_volume

    viewer = make_napari_viewer()
    viewer.add_image(synthetic_volume((60, 128, 128)), name="big")
    _, w = viewer.window.add_plugin_dock_widget("napari-limnet")
    fake_engine.delay = 0.01
    fake_engine.busy = 0.01
    worst = []
    for attempt in range(2):  # a second round only if the first one stalled
        ticks = _Ticks()
        w.state.points.add([30, 64, 40 + attempt])
        qtbot.waitUntil(lambda: w.running, timeout=5000)
        ticks.mark()
        ticks.gaps.clear()
        wait_round(qtbot, w, timeout=60000)
        worst.append(ticks.stop())
        print(
            f"\nstall: worst {worst[-1]:.1f} ms over {len(ticks.gaps)} ticks; round "
            f"{w.last_round['slices']} slices at {w.last_round['slices_per_s']:.1f} slices/s"
        )
        assert w.last_round["slices"] > 20
        if worst[-1] < 100:
            break
    # The first round may pay napari's one-time set-up (388 ms when this test runs alone, then
    # 23 ms) or a gap of the shared VM's scheduler (a CI run on a loaded machine saw 134 ms);
    # a stall the widget causes comes back in the second round.
    assert min(worst) < 100


def _two_spheres(shape=(40, 192, 192)) -> np.ndarray:
    """Dark noisy volume (HU) with two bright spheres, left (x = 28 %) and right (x = 72 %)."""
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    r = shape[1] / 6
    rng = np.random.default_rng(0)
    vol = -100 + 20 * rng.standard_normal(shape)
    for xc in (shape[2] * 0.28, shape[2] * 0.72):
        d2 = (z - shape[0] / 2) ** 2 * (r / (shape[0] / 3)) ** 2 + (y - shape[1] / 2) ** 2
        vol[d2 + (x - xc) ** 2 < r**2] += 160
    return vol.astype(np.int16)


@pytest.mark.real_model
def test_event_loop_stall_real_model(make_napari_viewer, qtbot):
    """The stall with the REAL engine (trained weights, default thread count): largest gap of a
    10 ms timer while a full round propagates through a 40 x 192 x 192 volume (one click on a
    sphere, after a warm-up round on the other one: the first round pays napari's one-time
    shader/font set-up) must stay under 100 ms.

    Measured here (2 shared cores, Xvfb with software GL, shown viewer, 1 engine thread at
    nice 10): worst gap 29-40 ms, 24-33 slices/s, first slice after ~100 ms. Before the engine
    got its own low-priority thread, model loading left the main thread, refreshes were
    coalesced and the progress bar stopped repainting synchronously, the same kind of
    measurement gave 120-1070 ms.
    """
    from napari_limnet.engine import model as model_mod

    if not model_mod.default_weights_path().is_file():
        pytest.skip("trained weights not bundled")
    shape = (40, 192, 192)
    viewer = make_napari_viewer(show=True)  # shown: redraws are part of the stall
    viewer.add_image(_two_spheres(shape), name="spheres", scale=(2.5, 0.8, 0.8))
    _, w = viewer.window.add_plugin_dock_widget("napari-limnet")
    st = w.state
    z, y = shape[0] // 2, shape[1] // 2
    st.points.add([z, y, int(shape[2] * 0.28)])  # warm-up round (loads the model)
    wait_round(qtbot, w, timeout=180000)
    w.new_object()
    qtbot.wait(500)
    ticks = _Ticks()
    qtbot.wait(200)
    ticks.gaps.clear()
    st.points.add([z, y, int(shape[2] * 0.72)])
    ticks.mark()
    wait_round(qtbot, w, timeout=120000)
    qtbot.wait(100)
    worst_ms = ticks.stop()
    print(
        f"\nreal-model stall: worst {worst_ms:.1f} ms over {len(ticks.gaps)} ticks; round "
        f"{w.last_round['slices']} slices at {w.last_round['slices_per_s']:.1f} slices/s, "
        f"first slice after {w.last_round['first_response'] * 1000:.0f} ms, "
        f"{w.settings.engine_threads} engine thread(s)"
    )
    assert w.last_round["slices"] > 15
    assert (st.labels.data == 2).any(axis=(1, 2)).sum() > 15
    assert worst_ms < 100


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
