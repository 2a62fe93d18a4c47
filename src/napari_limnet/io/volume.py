"""The volume record every reader returns, and the world-frame arithmetic shared by all formats.

World frame: DICOM patient coordinates in millimetres (LPS: +x towards the patient's left, +y
posterior, +z superior), with the axes listed in napari's order (z, y, x). A world affine is a
4 x 4 matrix mapping a data index (i0, i1, i2) of the (Z, Y, X) array to (z, y, x) in that frame.
NIfTI affines are RAS: x_LPS = -x_RAS, y_LPS = -y_RAS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Reverses (x, y, z) <-> (z, y, x) and flips x and y: maps RAS (x, y, z) to napari-ordered LPS.
_RAS_TO_WORLD = np.array(
    [[0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


@dataclass
class LoadedVolume:
    """A volume read from disk.

    data: (Z, Y, X) array; axis 0 is the acquisition's slice axis.
    spacing: (sz, sy, sx) voxel size in mm (TIFF: the file's own unit, 1 when absent).
    affine: 4 x 4 world affine (data index -> napari-ordered LPS mm).
    metadata: what a writer needs to put labels back on the source grid (see ``source``).
    """

    data: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    path: Path
    format: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> dict[str, Any]:
        """The source geometry: format, path, source_shape, axes, affine, and format extras.

        ``data == source_array.reshape(source_shape3).transpose(axes)``, where source_array is
        the array as stored in the file.
        """
        return self.metadata["limnet_source"]


def world_affine_from_nifti(nifti_affine: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """World affine of ``data = source.transpose(axes)`` for a NIfTI (RAS) voxel-to-world affine."""
    world = _RAS_TO_WORLD @ np.asarray(nifti_affine, dtype=float)
    out = np.eye(4)
    out[:3, :3] = world[:3, list(axes)]
    out[:3, 3] = world[:3, 3]
    return out


def nifti_affine_from_world(world_affine: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`world_affine_from_nifti`: the RAS affine of the source voxel order."""
    world = np.asarray(world_affine, dtype=float)
    cols = np.empty((3, 3))
    cols[:, list(axes)] = world[:3, :3]
    ras = np.eye(4)
    inv = np.linalg.inv(_RAS_TO_WORLD)
    ras[:3, :3] = inv[:3, :3] @ cols
    ras[:3, 3] = inv[:3, :3] @ world[:3, 3]
    return ras


WORLD_AXES = ("z", "y", "x")


def layer_world_axes(world_affine: np.ndarray) -> tuple[int, ...]:
    """For each data axis, the LPS world axis (0 z, 1 y, 2 x) it runs closest to.

    The identity for axial scans. napari cannot show a layer whose axes are permuted relative
    to the world in 2D (the displayed block of its transform is singular), so a sagittal or
    coronal acquisition, whose slice axis must stay axis 0, gets its world axes in this order.
    """
    direction = np.abs(np.asarray(world_affine, dtype=float)[:3, :3])
    direction = direction / np.linalg.norm(direction, axis=0)
    order = [-1, -1, -1]
    # Greedy by strongest component: exact for the usual ~90 degree cases, stable for obliques.
    for flat in np.argsort(-direction, axis=None, kind="stable"):
        row, col = divmod(int(flat), 3)
        if order[col] < 0 and row not in order:
            order[col] = row
    return tuple(order)


def layer_world_affine(world_affine: np.ndarray) -> np.ndarray:
    """The world affine with its rows in the order of :func:`layer_world_axes`."""
    world = np.asarray(world_affine, dtype=float)
    out = np.eye(4)
    rows = list(layer_world_axes(world))
    out[:3, :] = world[rows, :]
    return out


def napari_transform(world_affine: np.ndarray) -> dict[str, Any]:
    """napari layer keywords (scale, translate, affine) for ``world_affine``.

    napari computes world = affine @ (scale * index + translate); scale is the voxel spacing,
    affine carries the direction cosines (rotation and flips) and is the identity for a volume
    """
    world = layer_world_affine(world_affine)
    linear = world[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    translate = np.linalg.solve(direction, world[:3, 3])
    affine = np.eye(4)
    affine[:3, :3] = direction
    return {
        "scale": tuple(spacing.tolist()),
        "translate": tuple(translate.tolist()),
        "affine": affine,
    }


def world_affine_from_napari(
    scale: Any = None, translate: Any = None, affine: Any = None, rotate: Any = None
) -> np.ndarray:
    """World affine of a napari layer from its scale, translate, rotate and affine (3D)."""
    s = np.ones(3) if scale is None else np.asarray(scale, dtype=float)[-3:]
    t = np.zeros(3) if translate is None else np.asarray(translate, dtype=float)[-3:]
    r = np.eye(3) if rotate is None else np.asarray(rotate, dtype=float)[-3:, -3:]
    a = np.eye(4) if affine is None else np.asarray(affine, dtype=float)[-4:, -4:]
    data2phys = np.eye(4)
    data2phys[:3, :3] = r @ np.diag(s)
    data2phys[:3, 3] = t
    return a @ data2phys


def spacing_of(world_affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing (sz, sy, sx) of a world affine: the lengths of its columns."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(world_affine)[:3, :3], axis=0))


def check_volume(data: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Refuse what is not a single-channel 3D volume; returns data with at most 3 dimensions."""
    if data.ndim > 3:
        # Trailing length-1 axes (NIfTI (X, Y, Z, 1)) are harmless; anything else is 4D.
        squeezed = data.reshape(data.shape[:3] + (-1,))
        if squeezed.shape[3] != 1:
            raise ValueError(
                f"{path}: {what} has shape {data.shape}; only 3D single-channel volumes are "
                "supported (4D, time series or RGB data cannot be segmented)"
            )
        data = squeezed[..., 0]
    if data.ndim < 2:
        raise ValueError(f"{path}: {what} has shape {data.shape}; expected a 3D volume")
    if data.size == 0:
        raise ValueError(f"{path}: {what} is empty (shape {data.shape})")
    if data.dtype.kind not in "biuf":
        raise ValueError(f"{path}: {what} has unsupported data type {data.dtype}")
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.any():
            raise ValueError(
                f"{path}: {what} has no finite value (all voxels are NaN or infinite)"
            )
        # the engine works in float32: values beyond its range would become infinite there
        big = float(np.max(np.abs(data[finite])))
        if big > float(np.finfo(np.float32).max):
            raise ValueError(
                f"{path}: {what} has values up to {big:.3g}, beyond what float32 holds "
                f"({float(np.finfo(np.float32).max):.3g}); rescale the image"
            )
    return data
