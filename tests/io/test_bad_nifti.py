"""NIfTI files that are corrupt in ways the reader once accepted (the bad-input campaign).

Each file is made by the test from a valid one; every refusal is a ValueError naming the file.
"""

from __future__ import annotations

import gzip
import resource
import struct
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_limnet.io import load_volume


def _ct(tmp_path: Path, name: str = "ct.nii.gz", dtype=np.int16) -> Path:
    data = np.random.default_rng(0).integers(-1000, 1500, (40, 36, 24)).astype(dtype)
    p = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.5, 1.0])), p)
    return p


def test_corrupt_deflate_stream_is_refused(tmp_path: Path) -> None:
    """Bit flips inside the compressed data: every flip that decodes must be caught by the
    CRC-32 / length trailer, none may load with altered voxels."""
    good = _ct(tmp_path)
    ref = load_volume(good).data
    raw = bytearray(good.read_bytes())
    rng = np.random.default_rng(1)
    refused = 0
    for i in range(40):
        bad = bytearray(raw)
        pos = int(rng.integers(60, len(raw) - 8))  # inside the deflate stream
        bad[pos] ^= 1 << int(rng.integers(8))
        p = tmp_path / f"flip{i}.nii.gz"
        p.write_bytes(bytes(bad))
        try:
            vol = load_volume(p)
        except ValueError as exc:
            assert str(p) in str(exc)
            refused += 1
            continue
        assert np.array_equal(vol.data, ref), f"flip at byte {pos} loaded altered voxels"
    assert refused >= 35


def _header_bytes(shape: tuple[int, ...], dtype=np.uint8) -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr["vox_offset"] = 352
    hdr["magic"] = b"n+1"
    return hdr.binaryblock + b"\0" * 4


def test_tiny_file_declaring_gigabytes_is_refused_without_allocating(tmp_path: Path) -> None:
    p = tmp_path / "huge.nii"
    p.write_bytes(_header_bytes((2000, 2000, 2000)) + b"\0" * 64)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="huge.nii.*declares 8,000,000,000 bytes"):
        load_volume(p)
    assert time.perf_counter() - t0 < 2.0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200


@pytest.mark.parametrize("side", [1300, 32000])
def test_tiny_gz_declaring_gigabytes_is_refused(tmp_path: Path, side: int) -> None:
    p = tmp_path / "huge.nii.gz"
    p.write_bytes(gzip.compress(_header_bytes((side, side, side))))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"huge.nii.gz: NIfTI header declares [\d,]+ bytes"):
        load_volume(p)
    assert time.perf_counter() - t0 < 2.0


def test_dims_smaller_than_the_data_are_refused(tmp_path: Path) -> None:
    p = _ct(tmp_path, "ct.nii")
    raw = bytearray(p.read_bytes())
    struct.pack_into("<h", raw, 42 + 2, 30)  # dim[1] 40 -> 30: the data no longer fits
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="ct.nii: .*longer than its header says"):
        load_volume(p)


def test_vox_offset_into_the_data_is_refused(tmp_path: Path) -> None:
    p = _ct(tmp_path, "ct.nii")
    raw = bytearray(p.read_bytes())
    struct.pack_into("<f", raw, 108, 480.0)  # vox_offset: past the real start of the data
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="ct.nii: .*truncated"):
        load_volume(p)


# byte offsets of NIfTI-1 header fields (float32): pixdim[1], pixdim[2], quatern_b, srow_x[0]
FIELD_AT = {"pixdim": 80, "pixdim2": 84, "quatern_b": 256, "srow_x": 280}


def _patched(tmp_path: Path, field: str, value: float, sform: bool) -> Path:
    img = nib.Nifti1Image(np.ones((8, 8, 4), np.int16), np.diag([1.0, 1.0, 3.0, 1.0]))
    img.header.set_qform(img.affine, code=1)
    img.header.set_sform(img.affine, code=1 if sform else 0)
    p = tmp_path / "geom.nii"
    nib.save(img, p)
    raw = bytearray(p.read_bytes())
    struct.pack_into("<f", raw, FIELD_AT[field], value)
    p.write_bytes(bytes(raw))
    return p


@pytest.mark.parametrize(
    "field,value,sform",
    [
        ("pixdim", np.nan, False),
        ("pixdim", np.inf, False),
        ("pixdim2", 0.0, False),
        ("srow_x", np.nan, True),
        ("quatern_b", np.nan, False),
    ],
)
def test_bad_geometry_is_refused(tmp_path: Path, field: str, value: float, sform: bool) -> None:
    p = _patched(tmp_path, field, value, sform)
    with pytest.raises(ValueError, match="geom.nii: NIfTI geometry is not finite and positive"):
        load_volume(p)


@pytest.mark.parametrize("fill", [np.nan, np.inf])
def test_all_non_finite_image_is_refused_at_read(tmp_path: Path, fill: float) -> None:
    p = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((6, 6, 4), fill, np.float32), np.eye(4)), p)
    with pytest.raises(ValueError, match="nan.nii.gz: .*no finite value"):
        load_volume(p)


def test_values_beyond_float32_are_refused_with_the_reason(tmp_path: Path) -> None:
    p = tmp_path / "big.nii.gz"
    data = np.random.default_rng(0).uniform(-1, 1, (6, 6, 4)) * 1e300
    nib.save(nib.Nifti1Image(data.astype(np.float64), np.eye(4)), p)
    with pytest.raises(ValueError, match="big.nii.gz: .*beyond what float32 holds"):
        load_volume(p)
