"""napari finds the plugin's manifest and lists its reader, writer and sample data."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from npe2 import PluginManager


def _manifest():
    pm = PluginManager.instance()
    pm.discover()
    return pm, pm.get_manifest("napari-limnet")


def test_manifest_lists_reader_writer_and_samples() -> None:
    _, mf = _manifest()
    contrib = mf.contributions
    assert [r.command for r in contrib.readers] == ["napari-limnet.get_reader"]
    assert [w.command for w in contrib.writers] == ["napari-limnet.write_labels"]
    assert {".nii.gz", ".nii", ".tif", ".tiff"} <= set(contrib.writers[0].filename_extensions)
    assert sorted(s.key for s in contrib.sample_data) == ["ct", "mr"]


def test_npe2_picks_our_reader_and_writer(tmp_path: Path) -> None:
    pm, _ = _manifest()
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5), np.int16), np.eye(4)), path)
    readers = [r.plugin_name for r in pm.iter_compatible_readers([str(path)])]
    assert "napari-limnet" in readers
    writers = [w.plugin_name for w in pm.iter_compatible_writers(["labels"])]
    assert "napari-limnet" in writers
    for key in ("ct", "mr"):
        assert pm.get_command(f"napari-limnet.sample_{key}").exec() is not None
