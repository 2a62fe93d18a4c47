"""What a user places on a slice: :class:`Prompt` (one click, box, scribble or lasso, checked
against the volume when it is made), :class:`SlicePrompts` (a slice's prompts as a round takes
them: scribbles come as the clicks of their stroke), and strokes and polygons drawn as pixels.

The checks need only the volume's shape, not a model: ``limnet segment`` checks a whole
prompt file with them before it loads the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

__all__ = ["Prompt", "SlicePrompts", "fill_polygon", "slice_prompts", "stroke_points"]


class Grid(Protocol):
    """What a prompt is checked against (a :class:`~napari_limnet.engine.volume.Volume`)."""

    @property
    def shape(self) -> tuple[int, int, int]: ...

    @property
    def is_2d(self) -> bool: ...


def rest_axes(axis: int) -> tuple[int, int]:
    """The two volume axes of a slice across ``axis``, in volume order."""
    r0, r1 = (a for a in range(3) if a != axis)
    return r0, r1


def _index(grid: Grid, value: Any, axis: int, what: str) -> int:
    n = grid.shape[axis]
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, not {value!r}") from None
    if not np.isfinite(f):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    i = int(round(f))
    if not 0 <= i < n:
        axis_name = "zyx"[axis]
        raise ValueError(
            f"{what} = {value} is outside the volume ({axis_name} must be in 0..{n - 1})"
        )
    return i


def _axis(grid: Grid, axis: Any) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
        raise ValueError(f"axis must be 0, 1 or 2, not {axis!r}")
    if grid.is_2d and axis != 0:
        raise ValueError(f"a 2D image has one slice: axis must be 0, not {axis}")
    if not 0 <= axis <= 2:
        raise ValueError(
            f"axis must be 0, 1 or 2 (the volume axis normal to the prompt's slice), not {axis}"
        )
    return int(axis)


def _slice_points(grid: Grid, points: Any, what: str, axis: int) -> tuple[int, tuple[float, ...]]:
    """(N, 3) voxel indices on one slice across ``axis`` -> (index along the axis,
    (y0, x0, y1, x1, ...) in the slice's own two axes)."""
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"a {what} is (N, 3) voxel indices (z, y, x), not {points!r}") from None
    if grid.is_2d and pts.ndim == 2 and pts.shape[1] == 2:
        pts = np.concatenate([np.zeros((len(pts), 1)), pts], 1)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(
            f"a {what} is (N, 3) voxel indices (z, y, x), not an array of shape {pts.shape}"
        )
    if not np.isfinite(pts).all():
        raise ValueError(f"a {what} must have finite coordinates")
    name = "zyx"[axis]
    zs = {_index(grid, v, axis, f"{what} {name}") for v in pts[:, axis]}
    if len(zs) != 1:
        raise ValueError(
            f"a {what} must lie on one slice; its points are on slices {sorted(zs)} "
            f"of axis {axis} ({name})"
        )
    rest = rest_axes(axis)
    for row in pts:
        for k in rest:
            _index(grid, row[k], k, f"{what} {'zyx'[k]}")
    return zs.pop(), tuple(float(v) for v in pts[:, list(rest)].ravel())


@dataclass(frozen=True)
class Prompt:
    """One click, box, scribble or lasso of an object, as listed by ``Session.prompts``.

    kind: "click", "box", "scribble" or "lasso".
    z: the slice: its index along ``axis``.
    coords: (y, x) for a click; (y0, x0, y1, x1) inclusive corners for a box; the vertices
    (y0, x0, y1, x1, ...) of the stroke's polyline for a scribble, of the closed polygon for
    a lasso. For a prompt on another axis "y" and "x" are the slice's own two axes in volume
    order: (z, x) across axis 1, (z, y) across axis 2.
    positive: False for a negative (background) click or scribble; boxes and lassos are
    always positive.
    round: the round (1, 2, ...) that used the prompt, or None while it is pending.
    axis: the volume axis normal to the prompt's slice (0: an axial slice of an axial scan).

    Make prompts with :meth:`click`, :meth:`box`, :meth:`scribble` and :meth:`lasso`: they
    take the public API's arguments (volume indices) and raise ``ValueError`` on bad input.
    """

    kind: Literal["click", "box", "scribble", "lasso"]
    z: int
    coords: tuple[float, ...]
    positive: bool = True
    round: int | None = None
    axis: int = 0
    uid: int = field(default=0, compare=False, repr=False)

    @property
    def pending(self) -> bool:
        """True until a round has used the prompt."""
        return self.round is None

    @classmethod
    def click(
        cls, grid: Grid, point: Sequence[float], positive: bool = True, axis: int = 0
    ) -> Prompt:
        """A click at voxel ``(z, y, x)`` (``(y, x)`` for a 2D image) on a slice across
        ``axis``."""
        a = _axis(grid, axis)
        try:
            pt = [float(v) for v in point]
        except (TypeError, ValueError):
            raise ValueError(f"a click is (z, y, x) voxel indices, not {point!r}") from None
        if grid.is_2d and len(pt) == 2:
            pt = [0.0, *pt]
        if len(pt) != 3:
            raise ValueError(f"a click is (z, y, x) voxel indices, not {tuple(point)!r}")
        idx = [_index(grid, v, k, f"click {'zyx'[k]}") for k, v in enumerate(pt)]
        r0, r1 = rest_axes(a)
        return cls("click", idx[a], (pt[r0], pt[r1]), bool(positive), axis=a)

    @classmethod
    def box(cls, grid: Grid, z: int, box: Sequence[int], axis: int = 0) -> Prompt:
        """A box on slice ``z`` across ``axis``: inclusive corners ``(y0, x0, y1, x1)`` in
        the slice's own two axes, in volume order."""
        a = _axis(grid, axis)
        try:
            b = [float(v) for v in box]
        except (TypeError, ValueError):
            raise ValueError(f"a box is (y0, x0, y1, x1), not {box!r}") from None
        if len(b) != 4:
            raise ValueError(f"a box is (y0, x0, y1, x1), not {tuple(box)!r}")
        r0, r1 = rest_axes(a)
        n0, n1 = "zyx"[r0], "zyx"[r1]
        zi = _index(grid, z, a, f"box {'zyx'[a]}")
        y0, y1 = sorted(
            (_index(grid, b[0], r0, f"box {n0}0"), _index(grid, b[2], r0, f"box {n0}1"))
        )
        x0, x1 = sorted(
            (_index(grid, b[1], r1, f"box {n1}0"), _index(grid, b[3], r1, f"box {n1}1"))
        )
        if y0 == y1 or x0 == x1:
            raise ValueError(
                f"the box {tuple(box)} has no area (its corners share a row or a column)"
            )
        return cls("box", zi, (y0, x0, y1, x1), True, axis=a)

    @classmethod
    def scribble(cls, grid: Grid, points: Any, positive: bool = True, axis: int = 0) -> Prompt:
        """A stroke: ``points`` (N, 3) voxel indices on one slice, joined as a polyline."""
        a = _axis(grid, axis)
        z, coords = _slice_points(grid, points, "scribble", a)
        return cls("scribble", z, coords, bool(positive), axis=a)

    @classmethod
    def lasso(cls, grid: Grid, points: Any, axis: int = 0) -> Prompt:
        """A closed polygon around the object: its vertices ``points`` (N >= 3, 3) on one
        slice."""
        a = _axis(grid, axis)
        z, coords = _slice_points(grid, points, "lasso", a)
        if len(coords) < 6:
            raise ValueError("a lasso needs at least 3 vertices")
        ys, xs = np.asarray(coords[0::2]), np.asarray(coords[1::2])
        area = 0.5 * abs(float(np.dot(ys, np.roll(xs, 1)) - np.dot(xs, np.roll(ys, 1))))
        if area < 1.0:
            raise ValueError("the lasso encloses no area (its vertices are on one line)")
        return cls("lasso", z, coords, True, axis=a)


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


def slice_prompts(on_slice: Sequence[Prompt]) -> SlicePrompts:
    """The prompts of one slice as the round takes them."""
    clicks: list[tuple[float, float, bool]] = []
    for p in on_slice:
        if p.kind == "click":
            clicks.append((p.coords[0], p.coords[1], p.positive))
        elif p.kind == "scribble":  # a stroke: clicks close enough to merge into a line
            clicks.extend((y, x, p.positive) for y, x in stroke_points(p.coords))
    return SlicePrompts(
        clicks=tuple(clicks),
        boxes=tuple(tuple(int(c) for c in p.coords) for p in on_slice if p.kind == "box"),  # type: ignore[misc]
        regions=tuple(
            tuple(zip(p.coords[0::2], p.coords[1::2], strict=True))
            for p in on_slice
            if p.kind == "lasso"
        ),
    )


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
