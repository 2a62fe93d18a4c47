"""DICOM series reader: a folder (recognised by content) or one file of a series."""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from .volume import LoadedVolume, nifti_affine_from_world, spacing_of

# Largest number of files a folder scan opens; a series folder beyond this is unusual.
_MAX_FILES = 20000
# Files a quick check opens before deciding a folder holds no DICOM.
_SNIFF_FILES = 200


def is_dicom_file(path: str | Path) -> bool:
    """True when ``path`` is a file with the DICOM Part 10 preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def find_dicom_files(folder: str | Path, limit: int | None = None) -> list[Path]:
    """DICOM files under ``folder`` (its subfolders included), sorted by path.

    With ``limit`` (a quick "is this a DICOM folder?" check) the walk is unsorted and stops
    after ``limit`` hits or a few hundred files, so opening a large folder stays fast.
    """
    found: list[Path] = []
    walk = Path(folder).rglob("*") if limit is not None else sorted(Path(folder).rglob("*"))
    seen = 0
    for p in walk:
        if not p.is_file() or p.name == "DICOMDIR":
            continue
        seen += 1
        if is_dicom_file(p):
            found.append(p)
            if limit is not None and len(found) >= limit:
                break
        if len(found) >= _MAX_FILES or (limit is not None and seen >= _SNIFF_FILES):
            break
    return sorted(found)


def _series_files(path: Path) -> list[Path]:
    """The files of the series at ``path`` (a folder, or one of its files)."""
    folder = path if path.is_dir() else path.parent
    files = find_dicom_files(folder)
    if not files:
        raise ValueError(f"{path}: no DICOM files found")
    return files


def _read_headers(path: Path, files: list[Path]) -> list[pydicom.Dataset]:
    """Headers of the chosen series: the one holding ``path``, else the largest in the folder."""
    groups: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
            # a file that looks like DICOM but cannot be read would silently drop a slice
            # (and, at the series' end, change its geometry): refuse the series
            raise ValueError(
                f"{f}: cannot read DICOM header ({exc}); the series would miss this file. "
                "Remove or replace it."
            ) from exc
        if "PixelData" not in ds and "ImagePositionPatient" not in ds:
            sop = getattr(ds, "file_meta", pydicom.Dataset()).get("MediaStorageSOPClassUID")
            if sop is not None and "Image Storage" in pydicom.uid.UID(str(sop)).name:
                raise ValueError(
                    f"{f}: DICOM image file without image position or pixel data; it is "
                    "truncated or incomplete, and the series would miss it. Remove or replace it."
                )
            continue  # reports, structured sets, presentation states
        ds.filename = str(f)
        groups[str(ds.get("SeriesInstanceUID", ""))].append(ds)
    if not groups:
        raise ValueError(f"{path}: no DICOM images found")
    if path.is_file():
        key = next((k for k, v in groups.items() if any(d.filename == str(path) for d in v)), None)
        if key is None:
            raise ValueError(f"{path}: not a readable DICOM image")
    else:
        key = max(groups, key=lambda k: len(groups[k]))
        if len(groups) > 1:
            warnings.warn(
                f"{path}: {len(groups)} DICOM series found; reading the largest "
                f"({len(groups[key])} images). Open one file to pick another series.",
                stacklevel=3,
            )
    return groups[key]


def _geometry(path: Path, headers: list[pydicom.Dataset]) -> tuple[list, np.ndarray]:
    """Sort the slices along the normal; return them and the LPS affine of (col, row, slice)."""
    for ds in headers:
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if tag not in ds:
                raise ValueError(f"{ds.filename}: DICOM image lacks {tag}; cannot place it")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise ValueError(
                f"{ds.filename}: multi-frame (enhanced) DICOM is not supported; "
                "convert it to NIfTI (e.g. with dcm2niix)"
            )
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise ValueError(
                f"{ds.filename}: RGB/colour DICOM is not supported; expected one channel"
            )
    iop = _floats(headers[0], "ImageOrientationPatient", 6)
    row_dir, col_dir = iop[:3], iop[3:]  # direction of increasing column index, of row index
    if min(np.linalg.norm(row_dir), np.linalg.norm(col_dir)) < 1e-3:
        raise ValueError(
            f"{headers[0].filename}: DICOM ImageOrientationPatient {iop.tolist()} has a zero "
            "direction; cannot place the image"
        )
    normal = np.cross(row_dir, col_dir)
    for ds in headers[1:]:
        if not np.allclose(_floats(ds, "ImageOrientationPatient", 6), iop, atol=1e-4):
            raise ValueError(f"{path}: the series mixes image orientations; cannot stack it")
    positions = np.array([_floats(ds, "ImagePositionPatient", 3) for ds in headers])
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    headers = [headers[i] for i in order]
    positions, dist = positions[order], dist[order]
    if len(headers) > 1:
        gaps = np.diff(dist)
        if np.any(np.abs(gaps) < 1e-4):
            raise ValueError(
                f"{path}: several images share one slice position; the folder holds more than "
                "one volume (echoes, phases or repeats). Put one volume per folder."
            )
        if np.max(np.abs(gaps - gaps.mean())) > 0.01 * abs(gaps.mean()) + 1e-3:
            raise ValueError(
                f"{path}: DICOM slices are not evenly spaced (gaps {gaps.min():.3g} to "
                f"{gaps.max():.3g} mm); cannot make a regular volume"
            )
        slice_vec = (positions[-1] - positions[0]) / (len(headers) - 1)
    else:
        tag = (
            "SpacingBetweenSlices" if headers[0].get("SpacingBetweenSlices") else "SliceThickness"
        )
        thickness = float(_floats(headers[0], tag, 1)[0]) if headers[0].get(tag) else 1.0
        slice_vec = normal * thickness
    dr, dc = _floats(headers[0], "PixelSpacing", 2)  # row spacing, column spacing
    if not (dr > 0 and dc > 0):
        raise ValueError(
            f"{headers[0].filename}: DICOM PixelSpacing {[dr, dc]} is not positive; cannot "
            "size the image"
        )
    if not (np.isfinite(slice_vec).all() and np.linalg.norm(slice_vec) > 0):
        raise ValueError(f"{path}: the DICOM slice spacing is not finite and positive")
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = slice_vec
    lps[:3, 3] = positions[0]
    return headers, lps


def _floats(ds: pydicom.Dataset, tag: str, n: int) -> np.ndarray:
    """``n`` finite numbers from a DICOM element, or a ValueError naming the file and tag."""
    try:
        value = ds[tag].value
        many = hasattr(value, "__iter__") and not isinstance(value, str | bytes)
        values = [float(v) for v in (value if many else [value])]
    except Exception as exc:  # bad DS text, bad VR, missing value
        raise ValueError(f"{ds.filename}: DICOM {tag} is unreadable ({exc})") from exc
    out = np.asarray(values, dtype=np.float64)
    if out.shape != (n,) or not np.isfinite(out).all():
        raise ValueError(f"{ds.filename}: DICOM {tag} is {values}; expected {n} finite number(s)")
    return out


def _pixels(headers: list[pydicom.Dataset]) -> np.ndarray:
    """Stack the slices (Z, Y, X) with RescaleSlope/Intercept applied (integer when exact)."""
    slices, slopes, inters = [], [], []
    shape = None
    for ds in headers:
        try:
            full = pydicom.dcmread(ds.filename)
            arr = full.pixel_array
        except Exception as exc:  # truncated file, unsupported compression without a decoder
            raise ValueError(f"{ds.filename}: cannot decode DICOM pixel data ({exc})") from exc
        if arr.ndim != 2:
            raise ValueError(
                f"{ds.filename}: pixel data has shape {arr.shape}; expected one 2D slice"
            )
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise ValueError(f"{ds.filename}: slice size {arr.shape} differs from {shape}")
        slices.append(arr)
        slopes.append(
            float(_floats(full, "RescaleSlope", 1)[0]) if full.get("RescaleSlope") else 1.0
        )
        inters.append(
            float(_floats(full, "RescaleIntercept", 1)[0]) if full.get("RescaleIntercept") else 0.0
        )
    raw = np.stack(slices)
    s, b = np.asarray(slopes), np.asarray(inters)
    if np.all(s == 1.0) and np.all(b == np.round(b)):
        out = raw.astype(np.int32) + b.astype(np.int32)[:, None, None]
        lo, hi = out.min(), out.max()
        for dt in (np.int16, np.int32):
            if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
                return out.astype(dt)
        return out
    return (raw.astype(np.float32) * s[:, None, None] + b[:, None, None]).astype(np.float32)


def read_dicom(path: str | Path) -> LoadedVolume:
    """Read the DICOM series at ``path`` (its folder, or one of its files) as (Z, Y, X).

    Slices are sorted by ImagePositionPatient along the slice normal (axis 0 goes from the
    first to the last position along row x column); pixel values become modality units (HU for CT).
    """
    path = Path(path)
    try:
        headers = _read_headers(path, _series_files(path))
        headers, lps = _geometry(path, headers)
        data = _pixels(headers)
    except ValueError:
        raise
    except Exception as exc:  # pydicom on malformed elements: NotImplementedError (bad VR), ...
        raise ValueError(
            f"{path}: cannot read the DICOM series ({type(exc).__name__}: {exc})"
        ) from exc
    # (col i, row j, slice k) -> LPS; the data is (k, j, i), world is LPS in (z, y, x) order.
    world = np.eye(4)
    world[:3, :3] = lps[[2, 1, 0], :3][:, [2, 1, 0]]
    world[:3, 3] = lps[[2, 1, 0], 3]
    first = headers[0]
    source = {
        "format": "dicom",
        "path": str(path),
        "source_shape": tuple(int(n) for n in data.shape[::-1]),  # NIfTI layout (i, j, k)
        "axes": (2, 1, 0),
        "nifti_affine": nifti_affine_from_world(world, (2, 1, 0)),
        "files": [ds.filename for ds in headers],
        "modality": str(first.get("Modality", "")),
        "series_description": str(first.get("SeriesDescription", "")),
        "integer_map": False,
    }
    return LoadedVolume(
        data=data,
        spacing=spacing_of(world),
        affine=world,
        path=path,
        format="dicom",
        metadata={"limnet_source": source},
    )
