"""The simulated annotator of DESIGN.md ("The simulated-annotator protocol").

One implementation, used by evaluation and by training:

- ``first_click``: one positive click on the slice (axis 0) where the object is largest (the
  first such slice on a tie), at its most interior point.
- ``next_click``: the slice with the largest error area (missed + extra voxels, first on a tie);
  in it the largest 4-connected region of missed voxels and the largest of extra voxels; the
  larger of the two (missed on a tie) gets a click at its most interior point, positive for a
  missed region, negative for an extra one. ``None`` when the prediction is perfect.

"Most interior point": the maximum of the in-plane Euclidean distance transform of the region,
with the in-plane voxel spacing (sy, sx), the image border counting as border (the region is
padded with zeros before the transform); the first in row-major order on a tie.

Ties between regions of equal size inside one slice go to the region met first in row-major
order (the lowest ``scipy.ndimage.label`` id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "Click",
    "click_2d",
    "first_click",
    "first_click_2d",
    "first_click_off_centre",
    "first_region_prompt",
    "interior_point",
    "largest_region",
    "next_click",
    "next_click_2d",
]

# 4-connectivity in a slice (no diagonals).
_FOUR = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class Click:
    """A simulated click in voxel indices; ``z`` is the slice (axis 0)."""

    z: int
    y: int
    x: int
    positive: bool = True

    @property
    def position(self) -> tuple[int, int, int]:
        return (self.z, self.y, self.x)


def _inplane_spacing(spacing: Sequence[float] | None) -> tuple[float, float]:
    if spacing is None:
        return (1.0, 1.0)
    sp = tuple(float(s) for s in spacing)
    if len(sp) not in (2, 3):
        raise ValueError(f"spacing must have 2 or 3 values, got {len(sp)}")
    sy, sx = sp[-2:]
    if not (sy > 0 and sx > 0):
        raise ValueError(f"spacing must be positive, got {spacing}")
    return (sy, sx)


def _as_bool(a: np.ndarray, ndim: int, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != ndim:
        raise ValueError(f"{what} must be {ndim}D, got shape {a.shape}")
    return a.astype(bool, copy=False)


def interior_point(mask: np.ndarray, spacing: Sequence[float] | None = None) -> tuple[int, int]:
    """Most interior point (y, x) of a non-empty 2D mask.

    The maximum of the Euclidean distance transform with spacing (sy, sx) (the last two values
    of ``spacing``), the image border counting as border; first in row-major order on a tie.
    """
    m = _as_bool(mask, 2, "mask")
    sy, sx = _inplane_spacing(spacing)
    ys, xs = np.nonzero(m)
    if ys.size == 0:
        raise ValueError("interior_point of an empty mask")
    # Crop to the bounding box with a one-voxel ring of zeros: exact (the nearest background
    # voxel of any point inside is never farther than the ring) and the ring doubles as the
    # zero padding that makes the image border count as border.
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = np.zeros((y1 - y0 + 2, x1 - x0 + 2), bool)
    crop[1:-1, 1:-1] = m[y0:y1, x0:x1]
    dist = ndimage.distance_transform_edt(crop, sampling=(sy, sx))
    iy, ix = np.unravel_index(int(np.argmax(dist)), dist.shape)  # first maximum, row-major
    return (int(iy) - 1 + int(y0), int(ix) - 1 + int(x0))


def largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a 2D mask (first in row-major order on a tie).

    Returns a bool mask, all False when ``mask`` is empty.
    """
    m = _as_bool(mask, 2, "mask")
    lab, n = ndimage.label(m, structure=_FOUR)
    if n == 0:
        return np.zeros(m.shape, bool)
    if n == 1:
        return lab == 1
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))  # labels are numbered in row-major order


def click_2d(
    gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[int, int, bool] | None:
    """The correction click (y, x, positive) for one slice, or None when pred equals gt."""
    g = _as_bool(gt, 2, "gt")
    p = _as_bool(pred, 2, "pred")
    if g.shape != p.shape:
        raise ValueError(f"gt {g.shape} and pred {p.shape} differ in shape")
    missed = largest_region(g & ~p)
    extra = largest_region(p & ~g)
    n_missed, n_extra = int(missed.sum()), int(extra.sum())
    if n_missed == 0 and n_extra == 0:
        return None
    if n_missed >= n_extra:
        y, x = interior_point(missed, spacing)
        return (y, x, True)
    y, x = interior_point(extra, spacing)
    return (y, x, False)


def first_click_2d(
    gt: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[int, int, bool]:
    """The first click (y, x, True) on a 2D object: its most interior point."""
    g = _as_bool(gt, 2, "gt")
    if not g.any():
        raise ValueError("the object is empty")
    y, x = interior_point(g, spacing)
    return (y, x, True)


def next_click_2d(
    gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[int, int, bool] | None:
    """Alias of :func:`click_2d` (the 2D protocol of one slice)."""
    return click_2d(gt, pred, spacing)


def first_click(gt: np.ndarray, spacing: Sequence[float] | None = None) -> Click:
    """Round 1: a positive click at the most interior point of the slice where gt is largest."""
    g = _as_bool(gt, 3, "gt")
    area = g.sum(axis=(1, 2))
    if area.max(initial=0) == 0:
        raise ValueError("the object is empty")
    z = int(np.argmax(area))  # first slice on a tie
    y, x = interior_point(g[z], spacing)
    return Click(z, y, x, True)


def first_click_off_centre(
    gt: np.ndarray, spacing: Sequence[float] | None = None, seed: int | None = None
) -> Click:
    """Round 1 as users click: on the slice where gt is largest, a seeded point 30 to 50 % deep.

    "Depth" is the in-plane Euclidean distance to the object's border (as in
    :func:`interior_point`) over its maximum on that slice; the point is drawn uniformly among
    the slice's voxels whose depth is in [0.3, 0.5] (the nearest depth to 0.4 when none is).
    ``seed`` None: derived from the object (its voxel count), so a run is repeatable.
    """
    g = _as_bool(gt, 3, "gt")
    area = g.sum(axis=(1, 2))
    if area.max(initial=0) == 0:
        raise ValueError("the object is empty")
    z = int(np.argmax(area))
    sy, sx = _inplane_spacing(spacing)
    crop = np.pad(g[z], 1)
    dist = ndimage.distance_transform_edt(crop, sampling=(sy, sx))[1:-1, 1:-1]
    depth = dist / dist.max()
    band = g[z] & (depth >= 0.3) & (depth <= 0.5)
    if not band.any():
        band = g[z] & (np.abs(depth - 0.4) == np.abs(depth - 0.4)[g[z]].min())
    rng = np.random.default_rng(int(np.count_nonzero(g)) if seed is None else seed)
    ys, xs = np.nonzero(band)
    i = int(rng.integers(ys.size))
    return Click(z, int(ys[i]), int(xs[i]), True)


def first_region_prompt(
    gt: np.ndarray, kind: str, spacing: Sequence[float] | None = None
) -> tuple[int, np.ndarray]:
    """Round 1 with another prompt than a click, on the slice where gt is largest.

    - ``box``: the object's bounding box on that slice grown by 2 voxels (a snug box), as
      (y0, x0, y1, x1);
    - ``loose_box``: that box grown by a further 15 % of its height and width on every side,
      as a user drags it quickly around an organ;
    - ``scribble``: a stroke along the object's long axis through its most interior point,
      the part of that line at least 30 % deep into the object (depth as in
      :func:`first_click_off_centre`), as its two end points (2, 2) (y, x);
    - ``lasso``: a rough outline: the convex hull of the object grown by 3 voxels, as its
      vertices (N, 2) (y, x).

    Returns (z, coordinates).
    """
    g = _as_bool(gt, 3, "gt")
    area = g.sum(axis=(1, 2))
    if area.max(initial=0) == 0:
        raise ValueError("the object is empty")
    z = int(np.argmax(area))
    m = g[z]
    h, w = m.shape
    if kind in ("box", "loose_box"):
        ys, xs = np.nonzero(m)
        gy = 2 + (round(0.15 * (ys.max() - ys.min() + 1)) if kind == "loose_box" else 0)
        gx = 2 + (round(0.15 * (xs.max() - xs.min() + 1)) if kind == "loose_box" else 0)
        return z, np.array(
            [
                max(ys.min() - gy, 0),
                max(xs.min() - gx, 0),
                min(ys.max() + gy, h - 1),
                min(xs.max() + gx, w - 1),
            ]
        )
    if kind == "lasso":
        from scipy.spatial import ConvexHull

        grown = ndimage.binary_dilation(m, iterations=3)
        pts = np.argwhere(grown).astype(np.float64)
        hull = ConvexHull(pts)
        return z, pts[hull.vertices]
    if kind != "scribble":
        raise ValueError(f"unknown first prompt {kind!r}")
    sy, sx = _inplane_spacing(spacing)
    dist = ndimage.distance_transform_edt(np.pad(m, 1), sampling=(sy, sx))[1:-1, 1:-1]
    deep = m & (dist >= 0.3 * dist.max())
    cy, cx = interior_point(m, spacing)
    pts = np.argwhere(m) * (sy, sx)
    cov = np.cov((pts - pts.mean(0)).T) if len(pts) > 2 else np.eye(2)
    vals, vecs = np.linalg.eigh(np.atleast_2d(cov))
    d = vecs[:, int(np.argmax(vals))] / np.array([sy, sx])  # long axis, in voxels
    d = d / max(np.abs(d).max(), 1e-9)
    ends = []
    for sign in (1.0, -1.0):
        t, last = 0.0, (float(cy), float(cx))
        while True:
            t += 0.5
            y, x = cy + sign * t * d[0], cx + sign * t * d[1]
            iy, ix = int(round(y)), int(round(x))
            if not (0 <= iy < h and 0 <= ix < w and deep[iy, ix]):
                break
            last = (y, x)
        ends.append(last)
    return z, np.array(ends)


def next_click(
    gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float] | None = None
) -> Click | None:
    """Round r > 1: a click on the slice with the largest error area, or None when perfect."""
    g = _as_bool(gt, 3, "gt")
    p = _as_bool(pred, 3, "pred")
    if g.shape != p.shape:
        raise ValueError(f"gt {g.shape} and pred {p.shape} differ in shape")
    err = g != p
    area = err.sum(axis=(1, 2))
    if area.max(initial=0) == 0:
        return None
    z = int(np.argmax(area))  # first slice on a tie
    c = click_2d(g[z], p[z], spacing)
    assert c is not None  # the slice has errors
    return Click(z, c[0], c[1], c[2])
