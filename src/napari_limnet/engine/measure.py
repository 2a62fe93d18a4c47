"""Measurements of segmented objects: volume, intensity statistics, largest diameter."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

__all__ = ["ObjectMeasures", "dice", "measure_object", "measures_csv"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool masks; 1.0 when both are empty (the one Dice of engine, evaluation
    and training's numpy code)."""
    p = np.asarray(a, bool)
    g = np.asarray(b, bool)
    denom = int(np.count_nonzero(p)) + int(np.count_nonzero(g))
    if denom == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & g)) / denom


@dataclass(frozen=True)
class ObjectMeasures:
    """One object's measures; intensities in the image's units (HU for CT)."""

    id: int
    name: str
    voxels: int
    volume_ml: float
    mean: float
    std: float
    largest_diameter_mm: float  # the longest straight line between two of its voxel centres


def measure_object(
    obj_id: int,
    name: str,
    mask: np.ndarray,
    slice_of: Callable[[int], np.ndarray],
    spacing: tuple[float, float, float],
) -> ObjectMeasures:
    """Measures of the (Z, Y, X) bool ``mask``; ``slice_of(z)`` gives the image's slice z
    (read only where the mask has voxels, so a lazy volume stays lazy: ``Volume.slice``)."""
    mask = np.asarray(mask, bool)
    sz, sy, sx = (float(s) for s in spacing)
    n = int(np.count_nonzero(mask))
    if n == 0:
        return ObjectMeasures(obj_id, name, 0, 0.0, float("nan"), float("nan"), 0.0)
    values = []
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        values.append(np.asarray(slice_of(int(z)), dtype=np.float64)[mask[z]])
    v = np.concatenate(values)
    return ObjectMeasures(
        id=int(obj_id),
        name=str(name),
        voxels=n,
        volume_ml=n * sz * sy * sx / 1000.0,
        mean=float(v.mean()),
        std=float(v.std()),
        largest_diameter_mm=_largest_diameter(mask, (sz, sy, sx)),
    )


def _largest_diameter(mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Largest distance in mm between two voxel centres of the mask: the farthest pair lies
    on the convex hull of its boundary voxels."""
    boundary = mask & ~ndimage.binary_erosion(mask)
    pts = np.argwhere(boundary).astype(np.float64) * np.asarray(spacing)
    if len(pts) < 2:
        return 0.0
    try:
        hull = pts[ConvexHull(pts).vertices]
    except (QhullError, ValueError):  # flat (one slice or one line): every point counts
        hull = pts
    if len(hull) > 4000:  # keep the pairwise step bounded
        hull = hull[np.linspace(0, len(hull) - 1, 4000).astype(int)]
    d2 = ((hull[:, None, :] - hull[None, :, :]) ** 2).sum(-1)
    return float(np.sqrt(d2.max()))


def measures_csv(rows: Iterable[ObjectMeasures]) -> str:
    """The measures as CSV text (a header row, then one row per object)."""
    out = io.StringIO()
    fields = list(ObjectMeasures.__dataclass_fields__)
    w = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        d = asdict(r)
        for k in ("volume_ml", "mean", "std", "largest_diameter_mm"):
            d[k] = f"{d[k]:.4g}"
        w.writerow(d)
    return out.getvalue()
