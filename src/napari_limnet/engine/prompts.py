"""What a user places on one slice, as a round takes it: clicks, boxes, lassos (scribbles come
as the clicks of their stroke), and the drawing of strokes and polygons into pixel masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SlicePrompts", "fill_polygon", "stroke_points"]


@dataclass(frozen=True)
class SlicePrompts:
    """All prompts the user placed on one slice (every round so far, in order).

    clicks: (y, x, positive) in voxel indices of that slice (a scribble comes as the clicks
    of ``stroke_points``).
    boxes: (y0, x0, y1, x1), inclusive corners.
    regions: lassos, each the (y, x) vertices of a closed polygon; like a box, the object
    lies inside (the network sees the filled polygon in its box channel).
    """

    clicks: tuple[tuple[float, float, bool], ...] = ()
    boxes: tuple[tuple[int, int, int, int], ...] = ()
    regions: tuple[tuple[tuple[float, float], ...], ...] = ()


STROKE_STEP = 0.5  # voxels between the clicks a scribble is drawn with
STROKE_MAX = 256  # at most this many (a longer stroke is sampled more coarsely)


def stroke_points(coords: tuple[float, ...]) -> list[tuple[float, float]]:
    """Points along the polyline (y0, x0, y1, x1, ...), ``STROKE_STEP`` voxels apart, so their
    click-map disks merge into a stroke (the training draws scribbles the same way)."""
    v = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    if len(v) == 1:
        return [(float(v[0, 0]), float(v[0, 1]))]
    seg = np.linalg.norm(np.diff(v, axis=0), axis=1)
    total = float(seg.sum())
    n = int(min(STROKE_MAX, max(2, np.ceil(total / STROKE_STEP) + 1)))
    t = np.linspace(0.0, total, n)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    ys = np.interp(t, cum, v[:, 0])
    xs = np.interp(t, cum, v[:, 1])
    return [(float(y), float(x)) for y, x in zip(ys, xs, strict=True)]


def fill_polygon(vertices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bool (Y, X) mask of the pixels whose centre lies inside the closed polygon (even-odd
    rule); ``vertices`` (N, 2) as (y, x) voxel indices."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 2)
    out = np.zeros(shape, bool)
    y0 = max(int(np.floor(v[:, 0].min())), 0)
    y1 = min(int(np.ceil(v[:, 0].max())), shape[0] - 1)
    x0 = max(int(np.floor(v[:, 1].min())), 0)
    x1 = min(int(np.ceil(v[:, 1].max())), shape[1] - 1)
    if y1 < y0 or x1 < x0:
        return out
    yy = np.arange(y0, y1 + 1, dtype=np.float64)[:, None]
    xx = np.arange(x0, x1 + 1, dtype=np.float64)[None, :]
    inside = np.zeros((y1 - y0 + 1, x1 - x0 + 1), bool)
    ay, ax = v[:, 0], v[:, 1]
    by, bx = np.roll(ay, -1), np.roll(ax, -1)
    for i in range(len(v)):
        if ay[i] == by[i]:
            continue
        crosses = (ay[i] > yy) != (by[i] > yy)
        x_at = ax[i] + (yy - ay[i]) * (bx[i] - ax[i]) / (by[i] - ay[i])
        inside ^= crosses & (xx < x_at)
    out[y0 : y1 + 1, x0 : x1 + 1] = inside
    return out
