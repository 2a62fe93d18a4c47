"""Fixtures for the widget tests: a real viewer (make_napari_viewer) with the docked widget."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from scipy import ndimage

os.environ.setdefault("NAPARI_ENSURE_PLUGIN_MAIN_THREAD", "1")

pytest.importorskip("napari")
pytest.importorskip("qtpy")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Settings and fallback autosaves go to a temporary folder, never the user's."""
    monkeypatch.setenv("NAPARI_ENSURE_PLUGIN_MAIN_THREAD", "1")
    monkeypatch.setenv("NAPARI_LIMNET_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("NAPARI_LIMNET_DATA_DIR", str(tmp_path / "data"))


class FakeEngine:
    """Deterministic stand-in for the trained round: threshold + slice-by-slice propagation.

    The widget tests test the widget, so they do not depend on trained weights. ``delay`` (s)
    is spent per slice, as a real network would, to test progress, cancel and responsiveness.
    """

    def __init__(self, threshold: float = 50.0, upper: float = np.inf) -> None:
        self.threshold = threshold
        self.upper = upper
        self.delay = 0.0
        self.busy = 0.0  # seconds of pure-Python work per slice (holds the GIL, like glue code)
        self.rounds = 0

    def _fg(self, img: np.ndarray) -> np.ndarray:
        return (img > self.threshold) & (img < self.upper)

    def _work(self) -> None:
        if self.delay:
            time.sleep(self.delay)
        if self.busy:
            end = time.perf_counter() + self.busy
            while time.perf_counter() < end:
                pass

    def run_round(self, model, volume, prompts, current, pinned, blocked, options=None):
        self.rounds += 1
        from napari_limnet.engine.prompts import fill_polygon
        from napari_limnet.engine.rounds import RoundOptions

        options = options or RoundOptions()
        nz = volume.shape[0]
        lo = 0 if options.z_min is None else options.z_min
        hi = nz - 1 if options.z_max is None else options.z_max

        def seg2d(z, sp):
            img = self._fg(volume.slice(z))
            seed = np.zeros(img.shape, bool)
            for y, x, pos in sp.clicks:
                if pos:
                    seed[int(round(y)), int(round(x))] = True
            for y0, x0, y1, x1 in sp.boxes:
                seed[y0 : y1 + 1, x0 : x1 + 1] = True
            for region in sp.regions:  # lassos: like a box, the object lies inside
                seed |= fill_polygon(np.asarray(region), img.shape)
            lab, _ = ndimage.label(img)
            hit = np.unique(lab[seed & img])
            m = np.isin(lab, hit[hit > 0])
            prev = current(z)
            if prev is not None and not seed.any():
                m = prev.copy()
            for y, x, pos in sp.clicks:
                if not pos:
                    lab2, _ = ndimage.label(m)
                    v = lab2[int(round(y)), int(round(x))]
                    if v:
                        m[lab2 == v] = False
            return m

        decided = {}
        total = len(prompts)
        for z in sorted(prompts):
            self._work()
            m = seg2d(z, prompts[z])
            b = blocked(z)
            if b is not None:
                m &= ~b
            decided[z] = m
            yield z, m, total
        if not options.propagation:
            return
        dirs = {"both": (1, -1), "up": (1,), "down": (-1,)}[options.directions]
        for z0 in sorted(prompts):
            for d in dirs:
                prev = decided[z0]
                z = z0 + d
                while lo <= z <= hi and z not in prompts and z not in pinned and prev.any():
                    if z in decided:
                        break
                    self._work()
                    img = self._fg(volume.slice(z))
                    lab, _ = ndimage.label(img)
                    hit = np.unique(lab[prev & img])
                    m = np.isin(lab, hit[hit > 0])
                    b = blocked(z)
                    if b is not None:
                        m &= ~b
                    decided[z] = m
                    total = max(total, len(decided) + 1)
                    yield z, m, total
                    prev = m
                    z += d


@pytest.fixture(autouse=True)
def fake_engine(monkeypatch, request):
    """Swap the trained round for FakeEngine and the model for a placeholder object
    (not for tests marked ``real_model``)."""
    if request.node.get_closest_marker("real_model"):
        return None
    from napari_limnet._qt import widget as widget_mod
    from napari_limnet.engine import session as session_mod

    eng = FakeEngine()
    monkeypatch.setattr(session_mod.rounds, "run_round", eng.run_round)
    monkeypatch.setattr(widget_mod, "get_model", lambda weights, device: object())
    return eng


def synthetic_volume(shape=(20, 64, 64), seed=0) -> np.ndarray:
    """A dark volume with two bright ellipsoids (objects 1 and 2) and mild noise, as int16 HU."""
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(float)
    zc, yc = shape[0] / 2, shape[1] / 2
    a = ((z - zc) / (shape[0] / 3)) ** 2 + ((y - yc) / 12) ** 2 + ((x - 20) / 10) ** 2 < 1
    b = ((z - zc) / (shape[0] / 4)) ** 2 + ((y - yc) / 8) ** 2 + ((x - 46) / 7) ** 2 < 1
    rng = np.random.default_rng(seed)
    vol = -100 + 20 * rng.standard_normal(shape)
    vol[a] += 300
    vol[b] += 600
    return vol.astype(np.int16)


@pytest.fixture
def volume() -> np.ndarray:
    return synthetic_volume()


@pytest.fixture
def dock(make_napari_viewer, qtbot, volume):
    """(viewer, widget): a synthetic CT in the viewer, then the widget docked as napari does."""
    viewer = make_napari_viewer()
    viewer.add_image(volume, name="ct", scale=(2.5, 0.8, 0.8))
    _, widget = viewer.window.add_plugin_dock_widget("napari-limnet")
    yield viewer, widget
    widget.cancel_round()
    widget.wait_idle(10)
    widget.autosaver.wait(10)
