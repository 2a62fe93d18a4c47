"""Autosave files that are damaged, stale or left behind never cost the user work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
from helpers import wait_round

from napari_limnet._qt import autosave as autosave_mod


class _Image:
    def __init__(self, path) -> None:
        self.name = "scan"
        self.metadata = {"limnet_source": {"path": str(path)}}


def _write(path, labels, meta) -> None:
    with open(path, "wb") as f:
        np.savez_compressed(f, labels=labels, meta=np.array(json.dumps(meta)))


def _meta(shape, objects) -> dict:
    return {"version": 1, "image": "scan", "shape": list(shape), "objects": objects}


def test_newer_fallback_autosave_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_LIMNET_DATA_DIR", str(tmp_path / "data"))
    src = tmp_path / "scan.nii.gz"
    src.write_bytes(b"")
    img, shape = _Image(src), (4, 8, 8)
    beside = autosave_mod.beside_path(img)
    fallback = autosave_mod.fallback_path(img, shape)
    fallback.parent.mkdir(parents=True)
    lab = np.zeros(shape, np.uint16)
    _write(beside, lab, _meta(shape, []))
    old = time.time() - 100
    os.utime(beside, (old, old))
    _write(fallback, lab + 1, _meta(shape, []))
    assert autosave_mod.find_autosave(img, shape) == fallback


def test_failed_autosave_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "scan.limnet-autosave.npz"

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full)
    saver = autosave_mod.AutoSaver()
    saver.save([target], np.zeros((2, 4, 4), np.uint8), _meta((2, 4, 4), []))
    saver.wait()
    assert "No space left" in saver.last_error
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_killed_saves_are_cleaned(tmp_path):
    target = tmp_path / "scan.limnet-autosave.npz"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)  # that process has ended
    stale = tmp_path / f".{target.name}.{pid}.1234.tmp"
    stale.write_bytes(b"partial")
    other = tmp_path / ".other.npz.1.2.tmp"
    other.write_bytes(b"not ours")
    saver = autosave_mod.AutoSaver()
    saver.save([target], np.zeros((2, 4, 4), np.uint8), _meta((2, 4, 4), []))
    saver.wait()
    assert target.is_file() and not stale.exists() and other.exists()


BAD_META = [
    "not a dict",
    {"shape": [20, 64, 64], "objects": "x"},
    {"shape": [20, 64, 64], "objects": [{"id": "one"}]},
    {"shape": [20, 64, 64], "objects": [{"id": 1, "prompts": [["click", 1, 2]]}]},
    {"shape": [20, 64, 64], "objects": [{"id": 1, "prompts": 5}]},
    {"objects": []},
]


def test_damaged_autosave_is_reported_and_nothing_is_lost(
    make_napari_viewer, qtbot, volume, tmp_path
):
    src = tmp_path / "scan.nii.gz"
    src.write_bytes(b"")
    saved = tmp_path / "scan.limnet-autosave.npz"
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-limnet")
    viewer.add_image(volume, name="scan", metadata={"limnet_source": {"path": str(src)}})
    w.beside_check.setChecked(True)  # the autosave the test damages is the only one
    st = w.state
    st.points.add([10, 32, 20])
    wait_round(qtbot, w)
    w.autosaver.wait()
    before = st.labels.data.copy()
    assert before.any()
    for meta in BAD_META:
        _write(saved, np.zeros(volume.shape, np.uint16), meta)
        assert not w.restore_autosave(saved)
        assert "Autosave not restored" in w.status.text()
        np.testing.assert_array_equal(st.labels.data, before)
        assert list(st.objects) == [1]
        # setting the image up again: the damaged file is reported, not offered, no error
        viewer2 = make_napari_viewer()
        _, w2 = viewer2.window.add_plugin_dock_widget("napari-limnet")
        viewer2.add_image(volume, name="scan", metadata={"limnet_source": {"path": str(src)}})
        assert w2.state.autosave_found is None
        assert "Autosave skipped" in w2.status.text()
        viewer2.close()
