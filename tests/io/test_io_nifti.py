"""NIfTI reading and label writing: geometry, array layout and bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_limnet._reader import read_labels, read_volume
from napari_limnet._writer import write_labels
from napari_limnet.io import load_volume, napari_transform, read_nifti, write_label_file
from napari_limnet.io.volume import layer_world_affine


def _affine(codes_matrix: np.ndarray, spacing, origin) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = codes_matrix @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


# Orientations (columns: where voxel axes i, j, k point in RAS), with anisotropic spacing.
ORIENTATIONS = {
    "RAS": np.eye(3),
    "LPS": np.diag([-1.0, -1.0, 1.0]),
    "LPI": np.diag([-1.0, -1.0, -1.0]),
    "PSR_sagittal": np.array([[0.0, 0, 1], [-1, 0, 0], [0, 1, 0]]),
    "oblique": np.array(
        [[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1.0]]
    )
    @ np.diag([-1.0, 1, 1]),
}


def _volume(shape=(7, 6, 5), dtype=np.int16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 2000, size=shape).astype(dtype)


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_round_trip_keeps_affine_and_every_voxel(tmp_path: Path, name: str) -> None:
    src = _volume()
    aff = _affine(ORIENTATIONS[name], (0.7, 1.3, 4.0), (10.5, -20.25, 33.0))
    img = nib.Nifti1Image(src, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    nib.save(img, tmp_path / "scan.nii.gz")

    vol = read_nifti(tmp_path / "scan.nii.gz")
    # Axis 0 is the third (slice) axis of the file; spacing follows the data axes.
    assert vol.data.shape == (5, 6, 7)
    np.testing.assert_allclose(vol.spacing, (4.0, 1.3, 0.7))
    np.testing.assert_array_equal(vol.data, src.transpose(2, 1, 0))
    # Voxel (i, j, k) of the file lands at its RAS position, expressed in napari-ordered LPS.
    i, j, k = 3, 2, 4
    ras = aff @ [i, j, k, 1]
    world = vol.affine @ [k, j, i, 1]
    np.testing.assert_allclose(world[:3], [ras[2], -ras[1], -ras[0]], atol=1e-9)

    labels = (vol.data > 500).astype(np.uint8) * 3
    out = write_label_file(tmp_path / "seg.nii.gz", labels, source=vol.source)
    assert out == [tmp_path / "seg.nii.gz"]
    back = nib.load(out[0])
    np.testing.assert_array_equal(back.affine, img.affine)
    np.testing.assert_array_equal(back.header.get_sform(), img.header.get_sform())
    np.testing.assert_array_equal(back.header.get_qform(), img.header.get_qform())
    assert back.header["sform_code"] == 1 and back.header["qform_code"] == 1
    assert back.shape == src.shape
    np.testing.assert_array_equal(np.asarray(back.dataobj), (src > 500).astype(np.uint8) * 3)


def test_napari_transform_reproduces_world_positions() -> None:
    aff = _affine(ORIENTATIONS["oblique"], (0.7, 1.3, 4.0), (10.5, -20.25, 33.0))
    from napari_limnet.io import world_affine_from_napari, world_affine_from_nifti

    world = world_affine_from_nifti(aff, (2, 1, 0))
    kw = napari_transform(world)
    np.testing.assert_allclose(kw["scale"], (4.0, 1.3, 0.7))
    rebuilt = world_affine_from_napari(kw["scale"], kw["translate"], kw["affine"])
    np.testing.assert_allclose(rebuilt, layer_world_affine(world), atol=1e-9)


def test_slice_dim_in_header_becomes_axis_0(tmp_path: Path) -> None:
    src = _volume((4, 9, 6))
    img = nib.Nifti1Image(src, np.diag([1.0, 1.0, 1.0, 1.0]))
    img.header.set_dim_info(slice=0)
    nib.save(img, tmp_path / "x.nii")
    vol = read_nifti(tmp_path / "x.nii")
    assert vol.data.shape[0] == 4
    out = write_label_file(tmp_path / "y.nii", vol.data > 0, source=vol.source)
    np.testing.assert_array_equal(np.asarray(nib.load(out[0]).dataobj), src > 0)


def test_scaled_float_and_trailing_singleton_axis(tmp_path: Path) -> None:
    src = _volume((5, 4, 3))[..., np.newaxis]
    img = nib.Nifti1Image(src, np.eye(4))
    img.header.set_slope_inter(0.5, -10.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    vol = read_nifti(tmp_path / "scaled.nii.gz")
    assert vol.data.shape == (3, 4, 5) and vol.data.dtype.kind == "f"
    np.testing.assert_allclose(vol.data, src[..., 0].transpose(2, 1, 0) * 0.5 - 10.0)
    assert not vol.source["integer_map"]
    out = write_label_file(tmp_path / "l.nii.gz", np.ones(vol.data.shape, np.uint8), vol.source)
    assert nib.load(out[0]).shape == (5, 4, 3, 1)


def test_label_hint_and_read_labels(tmp_path: Path) -> None:
    lab = np.zeros((6, 5, 4), np.uint16)
    lab[1:3, 1:3, 1:3] = 7
    nib.save(nib.Nifti1Image(lab, np.diag([2.0, 2.0, 3.0, 1.0])), tmp_path / "liver_seg.nii.gz")
    nib.save(nib.Nifti1Image(lab, np.diag([2.0, 2.0, 3.0, 1.0])), tmp_path / "cord.nii.gz")
    [(data, kw, kind)] = read_volume(tmp_path / "liver_seg.nii.gz")
    assert kind == "labels" and kw["name"] == "liver_seg" and data.max() == 7
    assert read_volume(tmp_path / "cord.nii.gz")[0][2] == "image"
    [(data2, kw2, kind2)] = read_labels(tmp_path / "cord.nii.gz")
    assert kind2 == "labels"
    np.testing.assert_allclose(kw2["scale"], kw["scale"])
    np.testing.assert_allclose(kw2["translate"], kw["translate"])
    # Float values that are not integers cannot be labels.
    nib.save(nib.Nifti1Image(np.full((3, 3, 3), 0.5, np.float32), np.eye(4)), tmp_path / "f.nii")
    with pytest.raises(ValueError, match="not integers"):
        read_labels(tmp_path / "f.nii")


def test_npe2_writer_uses_layer_metadata_and_writes_itksnap_names(tmp_path: Path) -> None:
    aff = _affine(ORIENTATIONS["LPI"], (0.8, 0.8, 2.5), (1.0, 2.0, 3.0))
    src = _volume((6, 5, 4))
    nib.save(nib.Nifti1Image(src, aff), tmp_path / "ct.nii.gz")
    [(data, kw, _)] = read_volume(tmp_path / "ct.nii.gz")
    labels = np.zeros(data.shape, np.int32)
    labels[1, 2, 3] = 2
    meta = dict(kw)
    meta["metadata"] = dict(kw["metadata"])
    meta["metadata"]["limnet_objects"] = [
        {"id": 2, "name": 'left "kidney"', "color": [1.0, 0.5, 0.0]},
        {"id": 1, "name": "liver", "color": [0.0, 0.0, 1.0]},
    ]
    written = write_labels(str(tmp_path / "out.nii.gz"), labels, meta)
    assert written == [str(tmp_path / "out.nii.gz"), str(tmp_path / "out_labels.txt")]
    back = nib.load(written[0])
    assert back.get_data_dtype() == np.uint8
    assert np.asarray(back.dataobj)[3, 2, 1] == 2 and np.asarray(back.dataobj).sum() == 2
    np.testing.assert_array_equal(back.affine, nib.load(tmp_path / "ct.nii.gz").affine)
    text = Path(written[1]).read_text().splitlines()
    assert text[-2].split()[:8] == ["1", "0", "0", "255", "1", "1", "1", '"liver"']
    assert text[-1].startswith("    2   255  128    0") and text[-1].endswith("\"left 'kidney'\"")

    # Wrong shape, or a layer moved off its image's grid: refuse, write nothing.
    with pytest.raises(ValueError, match="source image"):
        write_labels(str(tmp_path / "bad.nii.gz"), labels[:-1], meta)
    moved = dict(meta, translate=tuple(t + 5 for t in kw["translate"]))
    with pytest.raises(ValueError, match="not placed on its source image's grid"):
        write_labels(str(tmp_path / "bad2.nii.gz"), labels, moved)
    assert not (tmp_path / "bad.nii.gz").exists() and not (tmp_path / "bad2.nii.gz").exists()


def test_writer_without_source_uses_layer_placement(tmp_path: Path) -> None:
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[2, 1, 0] = 1
    meta = {"scale": (2.0, 0.5, 0.5), "translate": (10.0, 20.0, 30.0), "metadata": {}}
    [path] = write_labels(str(tmp_path / "free.nii.gz"), labels, meta)
    back = nib.load(path)
    # NIfTI (i, j, k) = (x, y, z) layout; RAS = (-x_LPS, -y_LPS, z_LPS).
    assert np.asarray(back.dataobj)[0, 1, 2] == 1
    np.testing.assert_allclose(back.affine @ [0, 1, 2, 1], [-30.0, -20.5, 14.0, 1.0])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("4d", "4D"),
        ("truncated", "truncated or corrupt"),
        ("garbage", "cannot read as NIfTI"),
        ("rgb", "RGB"),
    ],
)
def test_bad_nifti_raises_clear_error(tmp_path: Path, make: str, message: str) -> None:
    path = tmp_path / f"{make}.nii.gz"
    if make == "4d":
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.int16), np.eye(4)), path)
    elif make == "truncated":
        nib.save(nib.Nifti1Image(_volume((20, 20, 20)), np.eye(4)), path)
        raw = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    elif make == "garbage":
        path.write_bytes(b"this is not a nifti file at all" * 20)
    else:
        rgb = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        nib.save(nib.Nifti1Image(rgb, np.eye(4)), path)
    with pytest.raises(ValueError, match=message) as err:
        load_volume(path)
    assert str(path) in str(err.value)
