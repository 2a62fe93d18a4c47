"""NIfTI-1/2 reader (.nii, .nii.gz)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from .volume import LoadedVolume, check_volume, spacing_of, world_affine_from_nifti


def _slice_axis(header: nib.Nifti1Header) -> int:
    """The acquisition's slice axis: the header's slice_dim when set, else the third axis."""
    try:
        slice_dim = header.get_dim_info()[2]
    except Exception:  # malformed dim_info: fall back to the convention of dcm2niix
        slice_dim = None
    return 2 if slice_dim is None or slice_dim > 2 else int(slice_dim)


def _is_integer_map(img: nib.Nifti1Image) -> bool:
    """True when the stored values are integers with no intensity scaling."""
    # After loading, nibabel keeps scl_slope/scl_inter on the data proxy, not in the header.
    slope = float(getattr(img.dataobj, "slope", 1.0))
    inter = float(getattr(img.dataobj, "inter", 0.0))
    return img.get_data_dtype().kind in "iu" and slope == 1.0 and inter == 0.0


def read_nifti(path: str | Path) -> LoadedVolume:
    """Read a NIfTI file into (Z, Y, X) = (k, j, i) order for the usual slice axis k.

    The array is only transposed (never flipped or resampled); the RAS affine becomes the
    napari-ordered LPS world affine. Raises ValueError naming the file on any problem.
    """
    path = Path(path)
    try:
        img = nib.load(str(path), mmap=False)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read as NIfTI ({exc})") from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ValueError(f"{path}: not a NIfTI image ({type(img).__name__})")
    header = img.header
    source_shape = tuple(int(n) for n in img.shape)
    if len(source_shape) > 3 and int(np.prod(source_shape[3:])) != 1:
        raise ValueError(
            f"{path}: NIfTI has shape {source_shape}; only 3D single-channel volumes are "
            "supported (4D, time series or RGB data cannot be segmented)"
        )
    if header.get_data_dtype().names is not None:
        raise ValueError(f"{path}: RGB NIfTI images are not supported; expected one channel")
    try:
        # np.asanyarray applies scl_slope/scl_inter (float result) only when the header sets them.
        arr = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated or corrupt data: zlib, EOF, size errors
        raise ValueError(f"{path}: NIfTI data is truncated or corrupt ({exc})") from exc
    arr = check_volume(arr, path, "NIfTI image")
    if arr.ndim == 2:
        arr = arr[:, :, np.newaxis]
    slice_axis = _slice_axis(header)
    axes = (slice_axis,) + tuple(a for a in (2, 1, 0) if a != slice_axis)
    data = np.ascontiguousarray(arr.transpose(axes))
    world = world_affine_from_nifti(img.affine, axes)
    source = {
        "format": "nifti",
        "path": str(path),
        "source_shape": source_shape,
        "axes": axes,
        "nifti_affine": np.asarray(img.affine, dtype=float),
        "nifti_header": header.copy(),
        "integer_map": _is_integer_map(img),
    }
    return LoadedVolume(
        data=data,
        spacing=spacing_of(world),
        affine=world,
        path=path,
        format="nifti",
        metadata={"limnet_source": source},
    )
