"""Write label maps back onto the source image's grid (NIfTI, TIFF) and their names (ITK-SNAP)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import tifffile

from .volume import nifti_affine_from_world, spacing_of

NIFTI_SUFFIXES = (".nii.gz", ".nii")
TIFF_SUFFIXES = (".tif", ".tiff")


def _grid_shape(source: Mapping[str, Any]) -> tuple[int, int, int]:
    """The (Z, Y, X) shape the reader produced from the source file."""
    shape = tuple(source["source_shape"])[:3]
    if source["format"] == "tiff":
        shape3 = (1,) * (3 - len(shape)) + shape
    else:
        shape3 = shape + (1,) * (3 - len(shape))
    return tuple(int(shape3[a]) for a in source["axes"])


def _label_dtype(labels: np.ndarray, path: Path) -> np.dtype:
    """The smallest integer type that holds every label."""
    if labels.dtype == bool:
        return np.dtype(np.uint8)
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and np.array_equal(labels, np.round(labels)):
            pass
        else:
            raise ValueError(f"{path}: labels must be integers, got {labels.dtype}")
    lo, hi = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    for dt in (np.uint8, np.uint16, np.int16, np.int32):
        if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def write_label_file(
    path: str | Path,
    labels: Any,
    source: Mapping[str, Any] | None = None,
    world_affine: np.ndarray | None = None,
    objects: Iterable[Mapping[str, Any]] | None = None,
) -> list[Path]:
    """Write a (Z, Y, X) label map to ``path`` (.nii.gz, .nii, .tif, .tiff) on the source grid.

    source: the ``limnet_source`` metadata a reader stored; the labels go back in the source
        file's own array layout and affine (NIfTI header kept, codes and all). Without it,
        ``world_affine`` (napari-ordered LPS) places the labels.
    objects: optional [{"id", "name", "color": [r, g, b] in 0-1}] written beside the label map as
        an ITK-SNAP label description file.
    Returns the written paths. Raises ValueError when the labels do not fit the source grid.
    """
    path = Path(path)
    name = path.name.lower()
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"{path}: labels must be a 3D (Z, Y, X) array, got shape {labels.shape}")
    if source is not None:
        expected = _grid_shape(source)
        if tuple(labels.shape) != expected:
            raise ValueError(
                f"{path}: labels have shape {tuple(labels.shape)} but the source image "
                f"{source.get('path', '')} has grid {expected}; refusing to write a misplaced file"
            )
    if not name.endswith(NIFTI_SUFFIXES + TIFF_SUFFIXES):
        raise ValueError(f"{path}: unsupported label file type; use .nii.gz, .nii, .tif or .tiff")
    dtype = _label_dtype(labels, path)
    labels = labels.astype(dtype, copy=False)
    if world_affine is None:
        world_affine = np.eye(4)
    objects = list(objects or [])
    desc_path = label_description_path(path)
    desc_text = _description_text(objects, desc_path) if objects else None
    if desc_text is not None and desc_path.is_dir():
        raise ValueError(f"{desc_path}: is a folder; cannot write the label names there")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Both files go to temporary names first and replace the targets only once both are
    # complete: a full disk or a killed process never leaves a truncated label map.
    tmp = _temp_name(path)
    tmp_desc = _temp_name(desc_path) if desc_text is not None else None
    try:
        if name.endswith(NIFTI_SUFFIXES):
            _write_nifti(tmp, labels, source, world_affine)
        else:
            _write_tiff(tmp, labels, source, world_affine)
        _fsync(tmp)
        if tmp_desc is not None:
            tmp_desc.write_text(desc_text, encoding="utf-8")
            _fsync(tmp_desc)
        os.replace(tmp, path)
        if tmp_desc is not None:
            os.replace(tmp_desc, desc_path)
    finally:
        for t in (tmp, tmp_desc):
            if t is not None:
                t.unlink(missing_ok=True)
    return [path] if desc_text is None else [path, desc_path]


def _temp_name(path: Path) -> Path:
    """A hidden file beside ``path`` with the same ending (writers choose the format by it)."""
    name = path.name
    ending = next((e for e in NIFTI_SUFFIXES + TIFF_SUFFIXES if name.lower().endswith(e)), "")
    stem = name[: len(name) - len(ending)]
    return path.with_name(f".{stem}.limnet-tmp-{os.getpid()}{ending or '.txt'}")


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _write_nifti(path: Path, labels: np.ndarray, source: Mapping[str, Any] | None, world) -> None:
    if source is not None and source["format"] == "nifti":
        axes = tuple(source["axes"])
        header = source["nifti_header"].copy()
        image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        affine = None  # keep the header's qform and sform exactly as the source had them
    else:
        axes = (2, 1, 0)
        header = None
        image_class = nib.Nifti1Image
        if source is not None and "nifti_affine" in source:
            affine = np.asarray(source["nifti_affine"], dtype=float)
        else:
            affine = nifti_affine_from_world(world, axes)
    # data = source.transpose(axes)  =>  source = data.transpose(argsort(axes))
    arr = labels.transpose(np.argsort(axes))
    if source is not None and source["format"] == "nifti":
        arr = arr.reshape(tuple(source["source_shape"]))
    img = image_class(np.ascontiguousarray(arr), affine, header=header)
    img.set_data_dtype(labels.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"], img.header["cal_max"] = 0, float(labels.max()) if labels.size else 0
    img.header["intent_code"] = 1002  # NIFTI_INTENT_LABEL
    if header is None:
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    nib.save(img, str(path))


def _write_tiff(path: Path, labels: np.ndarray, source: Mapping[str, Any] | None, world) -> None:
    spacing = spacing_of(world)
    if source is not None and source["format"] == "tiff":
        arr = labels.reshape(tuple(source["source_shape"]))
    else:
        arr = labels
    if labels.dtype in (np.uint8, np.uint16):
        sz, sy, sx = spacing
        tifffile.imwrite(
            path,
            arr,
            imagej=True,
            resolution=(1.0 / sx, 1.0 / sy),
            metadata={"spacing": sz, "unit": "mm", "axes": "ZYX" if arr.ndim == 3 else "YX"},
            compression="zlib",
        )
    else:  # ImageJ cannot hold signed or 32-bit integers: a plain TIFF
        tifffile.imwrite(path, arr, compression="zlib")


def label_description_path(path: str | Path) -> Path:
    """Where the ITK-SNAP label description of ``path`` goes: ``<stem>_labels.txt`` beside it."""
    path = Path(path)
    stem = path.name
    for suffix in NIFTI_SUFFIXES + TIFF_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return path.with_name(f"{stem}_labels.txt")


def _description_text(objects: Iterable[Mapping[str, Any]], path: Path) -> str:
    """The ITK-SNAP label description (id, RGB 0-255, alpha, visibility, name) of ``objects``."""
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File",
        "# Written by napari-limnet",
        "# Columns = Index, R, G, B, A, VIS, MSH, LABEL",
        "################################################",
        '    0     0    0    0        0  0  0    "Clear Label"',
    ]
    for obj in sorted(objects, key=lambda o: int(o["id"])):
        color = np.asarray(list(obj["color"])[:3], dtype=np.float64)
        if color.shape != (3,) or not np.isfinite(color).all():
            raise ValueError(
                f"{path}: object {obj['id']} ({obj.get('name', '')!s}) has colour "
                f"{list(obj['color'])}; expected three finite values in 0-1"
            )
        rgb = [int(round(255 * float(np.clip(c, 0.0, 1.0)))) for c in color]
        label = str(obj["name"]).replace('"', "'").replace("\n", " ")
        lines.append(
            f'{int(obj["id"]):5d} {rgb[0]:5d}{rgb[1]:5d}{rgb[2]:5d}        1  1  1    "{label}"'
        )
    return "\n".join(lines) + "\n"


def write_label_descriptions(path: str | Path, objects: Iterable[Mapping[str, Any]]) -> Path:
    """Write an ITK-SNAP label description file (id, RGB 0-255, alpha, visibility, name),
    through a temporary file so an existing one is replaced only by a complete one."""
    path = Path(path)
    text = _description_text(list(objects), path)
    tmp = _temp_name(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_label_descriptions(path: str | Path) -> dict[int, str]:
    """id -> name from an ITK-SNAP label description file (as :func:`write_label_descriptions`
    writes it, or ITK-SNAP / 3D Slicer); the background (0) left out. Unreadable lines are
    skipped; a missing or unreadable file gives {}."""
    names: dict[int, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return names
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or '"' not in line:
            continue
        head, _, rest = line.partition('"')
        try:
            idx = int(head.split()[0])
        except (ValueError, IndexError):
            continue
        name = rest.rsplit('"', 1)[0].strip()
        if idx > 0 and name:
            names[idx] = name
    return names
