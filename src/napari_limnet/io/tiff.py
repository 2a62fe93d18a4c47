"""3D TIFF stack reader (.tif, .tiff): pages are slices, axis 0 is the page axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from .volume import LoadedVolume, check_volume


def _resolution(page: tifffile.TiffPage, tag: str) -> float:
    """Pixel size from an X/YResolution tag (pixels per unit), 1.0 when absent or unusable."""
    t = page.tags.get(tag)
    if t is None:
        return 1.0
    num, den = t.value if isinstance(t.value, tuple) else (t.value, 1)
    if not num or not den or num == den:  # 1 pixel per unit is tifffile's default: no spacing
        return 1.0
    return float(den) / float(num)  # negative or non-finite: refused by the caller


def read_tiff(path: str | Path) -> LoadedVolume:
    """Read a grey-level TIFF stack as (Z, Y, X) with ImageJ spacing when the file has it.

    The world placement is spacing only (TIFF has no position or orientation). A 2D image is
    one slice (1, Y, X). RGB, multi-channel and time series stacks raise ValueError.
    """
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            page = tif.pages[0]
            photometric = page.photometric
            ij = tif.imagej_metadata or {}
            arr = series.asarray()
            sy, sx = _resolution(page, "YResolution"), _resolution(page, "XResolution")
    except Exception as exc:
        detail = str(exc) or "the file's structure is invalid"
        raise ValueError(f"{path}: cannot read as TIFF ({type(exc).__name__}: {detail})") from exc
    if photometric == tifffile.PHOTOMETRIC.RGB or "S" in axes or "C" in axes:
        raise ValueError(
            f"{path}: TIFF has colour/channel axes ({axes}, shape {arr.shape}); "
            "expected a single-channel 3D stack"
        )
    if "T" in axes and arr.shape[axes.index("T")] > 1:
        raise ValueError(f"{path}: TIFF is a time series ({axes}, shape {arr.shape}); expected 3D")
    arr = check_volume(np.squeeze(arr) if arr.ndim > 3 else arr, path, "TIFF stack")
    source_shape = tuple(int(n) for n in arr.shape)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    try:
        sz = float(ij.get("spacing", 1.0) or 1.0)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: ImageJ spacing {ij.get('spacing')!r} is not a number") from None
    spacing = (sz, sy, sx)
    for what, v in zip(("ImageJ spacing", "YResolution", "XResolution"), spacing, strict=True):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(
                f"{path}: TIFF {what} gives a voxel size of {v}; it must be finite and positive"
            )
    world = np.diag([*spacing, 1.0])
    source = {
        "format": "tiff",
        "path": str(path),
        "source_shape": source_shape,
        "axes": (0, 1, 2),
        "unit": str(ij.get("unit", "")),
        "integer_map": arr.dtype.kind in "iu",
    }
    return LoadedVolume(
        data=np.ascontiguousarray(arr),
        spacing=spacing,
        affine=world,
        path=path,
        format="tiff",
        metadata={"limnet_source": source},
    )
