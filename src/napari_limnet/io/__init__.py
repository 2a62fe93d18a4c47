"""File input/output for CT and MR volumes (engine side: no Qt, no napari).

Every reader returns a :class:`LoadedVolume` whose ``data`` is (Z, Y, X) with axis 0 the
acquisition's slice axis, and whose ``affine`` places voxel indices in one world frame for every
format: DICOM patient coordinates (LPS, millimetres), with the axes in napari's order (z, y, x).
"""

from __future__ import annotations

from .dicom import find_dicom_files, is_dicom_file, read_dicom
from .nifti import read_nifti
from .tiff import read_tiff
from .volume import (
    LoadedVolume,
    napari_transform,
    nifti_affine_from_world,
    world_affine_from_napari,
    world_affine_from_nifti,
)
from .writer import write_label_descriptions, write_label_file

__all__ = [
    "LoadedVolume",
    "find_dicom_files",
    "is_dicom_file",
    "load_volume",
    "napari_transform",
    "nifti_affine_from_world",
    "read_dicom",
    "read_nifti",
    "read_tiff",
    "volume_format",
    "world_affine_from_napari",
    "world_affine_from_nifti",
    "write_label_descriptions",
    "write_label_file",
]

from pathlib import Path  # noqa: E402


def volume_format(path: str | Path) -> str | None:
    """The format of ``path`` ("nifti", "dicom" or "tiff"), or None when it is not one of ours."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return "dicom" if find_dicom_files(p, limit=1) else None
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    # DICOM files often have no suffix (or .dcm, .ima): recognise them by content.
    if p.is_file() and is_dicom_file(p):
        return "dicom"
    return None


def load_volume(path: str | Path) -> LoadedVolume:
    """Read a NIfTI file, a DICOM series (folder or one file of it) or a 3D TIFF stack.

    Raises ValueError naming the file when it cannot be read, is 4D/RGB, or is not a volume.
    """
    fmt = volume_format(path)
    if fmt == "nifti":
        return read_nifti(path)
    if fmt == "dicom":
        return read_dicom(path)
    if fmt == "tiff":
        return read_tiff(path)
    raise ValueError(f"{path}: not a NIfTI file, DICOM series or TIFF stack")
