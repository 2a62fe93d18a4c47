"""Fixtures for the widget tests: a real viewer (make_napari_viewer) with the docked widget."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fakes import FakeEngine

os.environ.setdefault("NAPARI_ENSURE_PLUGIN_MAIN_THREAD", "1")

pytest.importorskip("napari")
pytest.importorskip("qtpy")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Settings and fallback autosaves go to a temporary folder, never the user's."""
    monkeypatch.setenv("NAPARI_ENSURE_PLUGIN_MAIN_THREAD", "1")
    monkeypatch.setenv("NAPARI_LIMNET_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("NAPARI_LIMNET_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture(autouse=True)
def fake_engine(monkeypatch, request):
    """Swap the trained round for FakeEngine and the model for a placeholder object
    (not for tests marked ``real_model``)."""
    if request.node.get_closest_marker("real_model"):
        return None
    from napari_limnet._qt import model_cache
    from napari_limnet.engine import session as session_mod

    eng = FakeEngine()
    monkeypatch.setattr(session_mod.rounds, "run_round", eng.run_round)
    monkeypatch.setattr(model_cache, "get_model", lambda weights, device: object())
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
