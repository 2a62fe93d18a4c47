"""DICOM series: recognition by content, slice order, rescale, geometry, bad input."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from napari_limnet._reader import napari_get_reader
from napari_limnet.io import read_dicom, read_nifti, volume_format, write_label_file

ROW_DIR = np.array([1.0, 0.0, 0.0])
COL_DIR = np.array([0.0, 0.6, -0.8])  # an oblique plane: normal = (0, 0.8, 0.6)


def _write_series(folder: Path, raw: np.ndarray, positions=None, slope=1.0, inter=-1024.0):
    """Write raw (Z, Y, X) uint16 as one file per slice, named so name order != slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    normal = np.cross(ROW_DIR, COL_DIR)
    series = generate_uid()
    paths = []
    for z in range(raw.shape[0]):
        pos = (
            positions[z]
            if positions is not None
            else np.array([5.0, -7.0, 11.0]) + 2.5 * z * normal
        )
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = series
        ds.Modality = "CT"
        ds.SeriesDescription = "test series"
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.ImageOrientationPatient = [*map(float, ROW_DIR), *map(float, COL_DIR)]
        ds.PixelSpacing = [0.5, 0.75]  # row spacing, column spacing
        ds.SliceThickness = 2.5
        ds.Rows, ds.Columns = raw.shape[1:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, inter
        ds.PixelData = np.ascontiguousarray(raw[z], dtype=np.uint16).tobytes()
        path = folder / f"IM{(7 * z + 3) % raw.shape[0]:04d}"  # no suffix, shuffled
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _raw(shape=(4, 6, 5)) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 3000, size=shape).astype(np.uint16)


def test_series_sorted_rescaled_and_placed(tmp_path: Path) -> None:
    raw = _raw()
    _write_series(tmp_path / "series", raw)
    (tmp_path / "series" / "notes.txt").write_text("not dicom")
    assert volume_format(tmp_path / "series") == "dicom"
    vol = read_dicom(tmp_path / "series")
    assert vol.data.dtype == np.int16
    np.testing.assert_array_equal(vol.data, raw.astype(np.int32) - 1024)
    np.testing.assert_allclose(vol.spacing, (2.5, 0.5, 0.75))
    # Voxel (z, y, x) sits at IPP + x*colspacing*row_dir + y*rowspacing*col_dir (LPS).
    z, y, x = 2, 3, 4
    normal = np.cross(ROW_DIR, COL_DIR)
    lps = np.array([5.0, -7.0, 11.0]) + 2.5 * z * normal + x * 0.75 * ROW_DIR + y * 0.5 * COL_DIR
    np.testing.assert_allclose((vol.affine @ [z, y, x, 1])[:3], lps[::-1], atol=1e-9)
    # One file of the series reads the whole series.
    one = read_dicom(next((tmp_path / "series").glob("IM*")))
    np.testing.assert_array_equal(one.data, vol.data)
    # Labels go to NIfTI in RAS with the same placement.
    [out] = write_label_file(tmp_path / "seg.nii.gz", vol.data > 0, source=vol.source)
    back = read_nifti(out)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    np.testing.assert_array_equal(back.data, vol.data > 0)


def test_float_rescale(tmp_path: Path) -> None:
    raw = _raw((3, 4, 4))
    _write_series(tmp_path / "s", raw, slope=0.25, inter=1.5)
    vol = read_dicom(tmp_path / "s")
    assert vol.data.dtype == np.float32
    np.testing.assert_allclose(vol.data, raw * 0.25 + 1.5)


def test_reader_hook_and_bad_series(tmp_path: Path) -> None:
    raw = _raw()
    positions = [np.array([0.0, 0.0, z]) for z in (0.0, 1.0, 2.0, 5.0)]
    _write_series(tmp_path / "uneven", raw, positions=positions)
    with pytest.raises(ValueError, match="not evenly spaced"):
        read_dicom(tmp_path / "uneven")
    positions = [np.array([0.0, 0.0, z]) for z in (0.0, 1.0, 1.0, 2.0)]
    _write_series(tmp_path / "dupe", raw, positions=positions)
    with pytest.raises(ValueError, match="share one slice position"):
        read_dicom(tmp_path / "dupe")
    # A truncated file: its pixel data cannot be decoded; the message names it.
    paths = _write_series(tmp_path / "trunc", raw)
    paths[1].write_bytes(paths[1].read_bytes()[:-20])
    reader = napari_get_reader(str(tmp_path / "trunc"))
    assert reader is not None
    with pytest.raises(ValueError, match=str(paths[1].name)):
        reader(str(tmp_path / "trunc"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    assert napari_get_reader(str(empty)) is None


@pytest.mark.shared_data
def test_shared_dicom_matches_its_nifti(shared_data: Path) -> None:
    case = shared_data / "ct_abdomen_totalseg_dicom"
    dcm = read_dicom(case / "dicom")
    nii = read_nifti(case / "image.nii.gz")
    assert dcm.data.shape == nii.data.shape == (20, 512, 512)
    np.testing.assert_allclose(dcm.affine, nii.affine, atol=1e-4)
    np.testing.assert_allclose(dcm.spacing, nii.spacing, atol=1e-6)
    np.testing.assert_array_equal(dcm.data, nii.data)
    # The same scan through the napari reader: same layer placement from either source.
    [(_, kd, _)] = napari_get_reader(str(case / "dicom"))(str(case / "dicom"))
    [(_, kn, _)] = napari_get_reader(str(case / "image.nii.gz"))(str(case / "image.nii.gz"))
    for key in ("scale", "translate", "affine"):
        np.testing.assert_allclose(kd[key], kn[key], atol=1e-4)


@pytest.mark.shared_data
def test_shared_ct_label_round_trip(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "ct_abdomen_totalseg_sm" / "label.nii.gz"
    vol = read_nifti(src)
    [out] = write_label_file(tmp_path / "label.nii.gz", vol.data, source=vol.source)
    a, b = nib.load(src), nib.load(out)
    np.testing.assert_array_equal(a.affine, b.affine)
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))


# --- bad input from the bad-input campaign: refused, naming the file and the field -----------


def test_series_with_a_truncated_header_is_refused(tmp_path: Path) -> None:
    paths = _write_series(tmp_path / "s", _raw((5, 6, 5)))
    victim = paths[2]
    victim.write_bytes(victim.read_bytes()[:300])  # cut inside the header
    with pytest.raises(
        ValueError, match=rf"{victim.name}: (cannot read DICOM header|DICOM image file without)"
    ):
        read_dicom(tmp_path / "s")


def _rewrite(path: Path, **tags) -> None:
    ds = pydicom.dcmread(path)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize(
    "tags,message",
    [
        ({"PixelSpacing": [0.0, 0.75]}, "PixelSpacing .* not positive"),
        ({"PixelSpacing": ["nan", 0.75]}, "PixelSpacing .* finite"),
        ({"ImagePositionPatient": ["nan", 0.0, 0.0]}, "ImagePositionPatient .* finite"),
        ({"ImageOrientationPatient": [0.0] * 6}, "ImageOrientationPatient .* zero direction"),
    ],
)
def test_bad_geometry_is_refused(tmp_path: Path, tags: dict, message: str) -> None:
    paths = _write_series(tmp_path / "s", _raw((3, 6, 5)))
    for p in paths:
        _rewrite(p, **tags)
    with pytest.raises(ValueError, match=message):
        read_dicom(tmp_path / "s")


def test_unparsable_decimal_string_names_the_file(tmp_path: Path) -> None:
    paths = _write_series(tmp_path / "s", _raw((3, 6, 5)))
    raw = paths[0].read_bytes()
    # PixelSpacing "0.5\0.75" -> "0.5\0.x5": not a number
    bad = raw.replace(b"0.5\\0.75", b"0.5\\0.x5")
    assert bad != raw
    paths[0].write_bytes(bad)
    with pytest.raises(ValueError, match=rf"{paths[0].name}: DICOM PixelSpacing"):
        read_dicom(tmp_path / "s")


def test_bad_vr_is_one_line_from_the_command_line(tmp_path: Path, capsys) -> None:
    """pydicom's NotImplementedError on a VR that does not exist: exit 2, one line, no
    traceback (``limnet segment`` reads the series before anything is segmented)."""
    from napari_limnet import cli

    paths = _write_series(tmp_path / "dcm", _raw((3, 6, 5)))
    raw = paths[0].read_bytes()
    tag = b"\x20\x00\x32\x00DS"  # ImagePositionPatient (0020,0032), explicit VR DS
    i = raw.index(tag) + 4
    paths[0].write_bytes(raw[:i] + b"QQ" + raw[i + 2 :])
    prompts = tmp_path / "prompts.json"
    prompts.write_text('{"objects": [{"clicks": [{"z": 1, "y": 2, "x": 3}]}]}')
    out = tmp_path / "o.nii.gz"
    rc = cli.main(["segment", str(tmp_path / "dcm"), "--prompts", str(prompts), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert paths[0].name in err and "Value Representation" in err
