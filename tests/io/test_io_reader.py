"""The npe2 reader hook and the sample data (with and without a viewer)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_limnet._reader import napari_get_reader
from napari_limnet._sample_data import SAMPLE_DIR, sample_ct, sample_mr


def test_unknown_files_return_none(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "pic.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    for name in ("notes.txt", "pic.png", "missing.xyz"):
        assert napari_get_reader(str(tmp_path / name)) is None
    assert napari_get_reader(str(tmp_path)) is None  # a folder without DICOM
    assert napari_get_reader([]) is None


def test_reader_returns_image_layer_tuples(tmp_path: Path) -> None:
    for i in range(2):
        nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.eye(4)), tmp_path / f"s{i}.nii")
    paths = [str(tmp_path / "s0.nii"), str(tmp_path / "s1.nii")]
    reader = napari_get_reader(paths)
    layers = reader(paths)
    assert [(kw["name"], kind) for _, kw, kind in layers] == [("s0", "image"), ("s1", "image")]
    data, kw, _ = layers[0]
    assert data.shape == (6, 5, 4)
    assert kw["metadata"]["limnet_source"]["format"] == "nifti"


def test_sample_data_small_licensed_and_readable() -> None:
    for f in SAMPLE_DIR.glob("*.nii.gz"):
        assert f.stat().st_size < 2_000_000
    assert (SAMPLE_DIR / "SOURCE.txt").is_file()
    ct = sample_ct()
    assert [kind for _, _, kind in ct] == ["image", "labels"]
    assert ct[0][0].shape == ct[1][0].shape == (30, 101, 122)
    np.testing.assert_allclose(ct[0][1]["scale"], ct[1][1]["scale"])
    assert "liver" in list(ct[1][1]["features"]["name"])
    mr = sample_mr()
    assert [kind for _, _, kind in mr] == ["image", "labels"]
    assert mr[1][0].max() == 1 and mr[0][0].shape == mr[1][0].shape


@pytest.mark.parametrize("key", ["ct", "mr"])
def test_sample_data_opens_in_viewer(make_napari_viewer, key: str) -> None:
    viewer = make_napari_viewer()
    viewer.open_sample("napari-limnet", key)
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Labels"]
    image, labels = viewer.layers
    assert image.data.ndim == 3
    np.testing.assert_allclose(image.scale, labels.scale)
    np.testing.assert_allclose(image.translate, labels.translate)
