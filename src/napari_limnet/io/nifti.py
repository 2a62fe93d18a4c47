"""NIfTI-1/2 reader (.nii, .nii.gz)."""

from __future__ import annotations

import gzip
import zlib
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


# deflate cannot compress by more than about 1032:1; a .gz that claims more is corrupt
MAX_DEFLATE_RATIO = 1100


def _check_size(path: Path, header: nib.Nifti1Header, offset: int) -> None:
    """Refuse a file whose header declares more (or, uncompressed, other) voxel data than
    it holds, before anything is allocated: a corrupt header must not fill the memory.
    ``offset``: where the voxel data starts (nibabel reads a vox_offset of 0 as the end of
    the header, as the standard allows for single files without extensions)."""
    n = 1
    for d in header.get_data_shape():
        n *= max(int(d), 0)
    need = n * header.get_data_dtype().itemsize
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        with path.open("rb") as f:
            f.seek(max(size - 4, 0))
            isize = int.from_bytes(f.read(4), "little")  # uncompressed length mod 2^32
        if need > MAX_DEFLATE_RATIO * size or (offset + need) % 2**32 != isize:
            raise ValueError(
                f"{path}: NIfTI header declares {need:,} bytes of voxel data but the compressed "
                f"file ({size:,} bytes) does not hold them; the file is truncated or corrupt"
            )
    elif size != offset + need:
        what = "truncated" if size < offset + need else "longer than its header says"
        raise ValueError(
            f"{path}: NIfTI header declares {need:,} bytes of voxel data from offset {offset} "
            f"but the file holds {max(size - offset, 0):,}; it is {what} (corrupt header or "
            "data)"
        )


def _load_checked(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    """nibabel's image of ``path`` after checking sizes, and for .gz the whole deflate stream
    with its CRC-32 and length trailer (nibabel reads only the bytes it needs, so a corrupt
    stream would otherwise load with altered voxels)."""
    try:
        img = nib.load(str(path), mmap=False)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read as NIfTI ({exc})") from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ValueError(f"{path}: not a NIfTI image ({type(img).__name__})")
    _check_size(path, img.header, int(getattr(img.dataobj, "offset", 0)))
    if not path.name.lower().endswith(".gz"):
        return img
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()  # to the end: gzip checks the CRC-32 and the length there
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: the compressed NIfTI is corrupt or truncated ({exc})") from exc
    try:
        return type(img).from_bytes(raw)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read as NIfTI ({exc})") from exc


def _raw_header(path: Path, img: nib.Nifti1Image) -> nib.Nifti1Header:
    """The header as stored: nibabel's loaded header has a pixdim of 0 silently set to 1."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        return type(img.header).from_fileobj(f, check=False)


def _check_geometry(path: Path, img: nib.Nifti1Image, world: np.ndarray) -> None:
    """Refuse non-finite or non-positive voxel sizes and placements, naming the field."""
    header = img.header
    raw = _raw_header(path, img)
    ndim = min(int(raw["dim"][0]), 3)
    pixdim = np.asarray(raw["pixdim"], dtype=np.float64)[1 : 1 + ndim]
    bad = []
    sform, scode = header.get_sform(coded=True)
    if not np.isfinite(pixdim).all() or (not scode and not (pixdim > 0).all()):
        bad.append(f"pixdim {pixdim.tolist()}")
    if scode and (sform is None or not np.isfinite(sform).all()):
        bad.append("sform (srow_x/y/z)")
    qcode = int(header["qform_code"])
    quat = np.asarray([header[k] for k in ("quatern_b", "quatern_c", "quatern_d")], float)
    qoff = np.asarray([header[k] for k in ("qoffset_x", "qoffset_y", "qoffset_z")], float)
    if qcode and not (np.isfinite(quat).all() and np.isfinite(qoff).all()):
        bad.append("qform (quatern_b/c/d, qoffset)")
    spacing = np.linalg.norm(world[:3, :3], axis=0)
    if not bad and not (np.isfinite(world).all() and (spacing > 0).all()):
        bad.append(f"voxel size {spacing.tolist()} from pixdim / qform / sform")
    if bad:
        raise ValueError(
            f"{path}: NIfTI geometry is not finite and positive: {', '.join(bad)}; the file "
            "cannot be placed (fix its header)"
        )


def read_nifti(path: str | Path) -> LoadedVolume:
    """Read a NIfTI file into (Z, Y, X) = (k, j, i) order for the usual slice axis k.

    The array is only transposed (never flipped or resampled); the RAS affine becomes the
    napari-ordered LPS world affine. Raises ValueError naming the file on any problem.
    """
    path = Path(path)
    img = _load_checked(path)
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
    with np.errstate(invalid="ignore", over="ignore"):
        world = world_affine_from_nifti(img.affine, axes)
    _check_geometry(path, img, world)
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
