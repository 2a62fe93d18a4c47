"""Saving labels never destroys a good file and refuses before writing anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_limnet.io import load_volume, write_label_file
from napari_limnet.io import writer as writer_mod

OBJECTS = [{"id": 1, "name": "liver", "color": [1.0, 0.0, 0.0]}]


def _labels(value: int = 1) -> np.ndarray:
    lab = np.zeros((6, 10, 12), np.uint8)
    lab[2:4, 3:7, 4:9] = value
    return lab


@pytest.mark.parametrize("name", ["seg.nii.gz", "seg.tif"])
def test_failed_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    target = tmp_path / name
    write_label_file(target, _labels(1), objects=OBJECTS)
    before = target.read_bytes()
    desc = writer_mod.label_description_path(target)
    desc_before = desc.read_text()

    def full_disk(path: Path, *args, **kwargs) -> None:
        path.write_bytes(b"partial")  # what a full disk leaves behind
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer_mod, "_write_nifti", full_disk)
    monkeypatch.setattr(writer_mod, "_write_tiff", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_label_file(target, _labels(2), objects=OBJECTS)
    assert target.read_bytes() == before
    assert desc.read_text() == desc_before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, desc.name])
    assert int(np.asarray(load_volume(target).data).max()) == 1


def test_refused_suffix_creates_no_folder(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "seg.png"
    with pytest.raises(ValueError, match="seg.png: unsupported label file type"):
        write_label_file(target, _labels())
    assert not (tmp_path / "new").exists()


def test_nan_colour_is_refused_before_the_label_file_is_written(tmp_path: Path) -> None:
    target = tmp_path / "seg.nii.gz"
    bad = [{"id": 1, "name": "liver", "color": [float("nan"), 0.0, 0.0]}]
    with pytest.raises(ValueError, match="object 1 .*colour"):
        write_label_file(target, _labels(), objects=bad)
    assert list(tmp_path.iterdir()) == []


def test_blocked_description_path_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "seg.nii.gz"
    write_label_file(target, _labels(1))
    before = target.read_bytes()
    writer_mod.label_description_path(target).mkdir()
    with pytest.raises(ValueError, match="seg_labels.txt: is a folder"):
        write_label_file(target, _labels(2), objects=OBJECTS)
    assert target.read_bytes() == before
