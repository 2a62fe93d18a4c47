"""One interaction round for one object: prompted slices -> 2D masks -> propagation -> fusion.

This is the algorithm behind ``Session.run_iter``; the session owns all state (prompts,
history, other objects) and passes in what a round needs as plain values and callables.

1. Every slice prompted this round gets a 2D mask from the interaction network
   (``predict.segment_slice``: a first window, then zoom-in around the mask). The first
   window holds the slice's previous mask when it has one; on a slice without one it is wide,
   or, when slices prompted in earlier rounds have masks, the size of the largest one's.
2. From each of them the memory network carries the mask up and down
   (``predict.Propagator``), slice by slice, until the object ends (the mask vanishes or
   shrinks to a remnant, or, in an object's first round, the network grows unsure of it; in
   later rounds it spreads to a slice that had no mask only where the network is sure), a
   slice prompted in this or an earlier round is reached, or (in a
   correction round) the new masks agree with the old ones again. Towards another slice
   prompted this round it goes halfway (that slice does the rest); after a negative click,
   towards a slice prompted in an earlier round it also goes only halfway, and the slices
   nearer to that one keep their masks. After a negative click on a slice that had a mask
   it also stops at the first slice that had none: a "less" click never spreads the object
   to new slices. A prompted slice left empty ends the object:
   beyond it (on a side with no other non-empty prompted slice) the old masks go; towards a
   non-empty slice prompted in an earlier round, that slice's mask is propagated again, with
   the empty slice pinned in the memory as "no object here".
3. Fusion: a propagated slice that already had a mask keeps it where the new mask went
   against the click the round came from (shrank at all after a positive click, more than
   doubled after a negative one), or where the scorer, when switched on, finds it better.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .fusion import FusionRule


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


class VolumeSource(Protocol):
    """What a round reads: slices on demand (lazy volumes are read only where needed)."""

    shape: tuple[int, int, int]  # (Z, Y, X)
    spacing: tuple[float, float, float]  # (sz, sy, sx) in mm

    def slice(self, z: int) -> np.ndarray:
        """Slice z as float32 (Y, X), NaNs already replaced."""
        ...


@dataclass(frozen=True)
class RoundOptions:
    fusion: bool = True
    propagation: bool = True
    z_min: int | None = None  # inclusive limits of propagation (None: volume ends)
    z_max: int | None = None
    directions: str = "both"  # "both", "up" (increasing z) or "down"
    fusion_rule: FusionRule | None = None  # None: the model's (``FusionRule.of``)


def run_round(
    model,
    volume: VolumeSource,
    prompts: dict[int, SlicePrompts],
    current: Callable[[int], np.ndarray | None],
    pinned: Collection[int],
    blocked: Callable[[int], np.ndarray | None],
    options: RoundOptions = RoundOptions(),
) -> Iterator[tuple[int, np.ndarray, int]]:
    """Run one round; yield ``(z, mask, total)`` for every slice whose mask this round decides.

    prompts: the slices that got new prompts this round, each with ALL its prompts.
    current(z): the object's mask of slice z before this round (bool (Y, X)) or None if empty.
    pinned: slices prompted in earlier rounds; propagation stops there and never changes them.
    blocked(z): voxels other objects hold on slice z (bool (Y, X)) or None; never taken.
    mask: the FINAL bool (Y, X) mask of slice z for this round (after fusion, minus blocked).
    total: current estimate of how many slices this round will yield (for progress).
    The prompted slices come first. Closing the generator early must leave no side effects.
    """
    from .predict import Propagator, neighbour_slices, norm_of_mask, segment_slice

    nz = volume.shape[0]
    spacing_yx = (float(volume.spacing[1]), float(volume.spacing[2]))
    z_lo = 0 if options.z_min is None else max(0, int(options.z_min))
    z_hi = nz - 1 if options.z_max is None else min(nz - 1, int(options.z_max))
    stops = set(prompts) | {int(z) for z in pinned}
    rule = options.fusion_rule or FusionRule.of(model)

    def without_blocked(z: int, m: np.ndarray) -> np.ndarray:
        b = blocked(z)
        return m & ~b if b is not None else m

    starts = []
    images = {}  # prompted slices, read once (lazy volumes)
    had_mask = {}  # whether each prompted slice had a mask before this round
    for z in sorted(prompts):
        images[z] = volume.slice(z)
        old = current(z)
        had_mask[z] = _had_mask(old)
        res = segment_slice(
            model,
            images[z],
            spacing_yx,
            prompts[z],
            old,
            neighbours=functools.partial(neighbour_slices, volume, z),
            size_hint=_size_hint(prompts[z], old, current, pinned),
        )
        final = without_blocked(z, res.mask)
        starts.append((z, final, res.norm))
    # the object's first round: nothing prompted before and no mask yet, so its ends are unknown
    first_round = not pinned and not any(had_mask.values())
    dirs = []
    if options.propagation and nz > 1:
        if options.directions in ("both", "up"):
            dirs.append(1)
        if options.directions in ("both", "down"):
            dirs.append(-1)
    spans = {}
    for z, _, _ in starts:
        for d in dirs:
            n = 0
            y = z + d
            while z_lo <= y <= z_hi and y not in stops:
                n += 1
                y += d
            spans[(z, d)] = n
    reach = _reach(spans, starts, prompts, current, pinned, dirs, (z_lo, z_hi))
    total = len(starts) + sum(reach.values())
    for z, final, _ in starts:
        yield z, final, total
    if not dirs:
        return
    # every non-empty prompted slice (this round's and earlier ones), with its image and mask
    memory_slices = {z: (images[z], m) for z, m, _ in starts if m.any()}
    for zp in pinned:
        m = current(int(zp))
        if m is not None and m.any():
            memory_slices.setdefault(int(zp), (volume.slice(int(zp)), m))
    emptied = {z for z, m, _ in starts if not m.any()}
    empty = emptied | ({int(z) for z in pinned} - memory_slices.keys())

    def clear_leak(z0: int, d: int, first: int, last: int):
        """The old masks of slices z0 + d * first .. z0 + d * last go, up to the first empty one."""
        for i in range(first, last + 1):
            old = current(z0 + d * i)
            if old is None or not old.any():
                return
            yield z0 + d * i, np.zeros_like(old), total

    # (source z, direction, span, source mask, its norm (None: from the mask), agreement stop,
    # whether the source's last prompt asked for more, whether it stays on slices that had a
    # mask); no agreement stop towards a slice emptied this round: the old masks next to it
    # are the ones in doubt. A negative click on a slice that had a mask asks for less of an
    # object already there, so its propagation never puts the object on slices without it.
    jobs = [
        (
            z0,
            d,
            reach[(z0, d)],
            m0,
            norm,
            z0 + d * (spans[(z0, d)] + 1) not in emptied,
            _asks_for_more(prompts[z0]),
            not _asks_for_more(prompts[z0]) and had_mask[z0],
        )
        for z0, m0, norm in starts
        for d in dirs
    ]
    for z0, m0, _ in starts:
        if m0.any():
            continue
        for d in dirs:
            if not any((z - z0) * d > 0 for z in memory_slices):
                # No non-empty prompted slice on this side: the empty slice (say, a negative
                # click removed a leak) cuts the object there, and the old masks beyond it go.
                yield from clear_leak(z0, d, 1, spans[(z0, d)])
                continue
            # Otherwise the object ends between the empty slice and the nearest prompted
            # slice on that side: when that one is from an earlier round, propagate from it
            # again towards the empty slice, which the memory now holds as "no object here".
            zs = z0 + d * (spans[(z0, d)] + 1)
            if zs in memory_slices and zs not in prompts and spans[(z0, d)] > 0:
                jobs.append(
                    (zs, -d, spans[(z0, d)], memory_slices[zs][1], None, False, False, True)
                )
                total += spans[(z0, d)]
    done = len(starts)
    for z0, d, span, m0, norm, agree_stop, grow, within_old in jobs:
        if span == 0 or not m0.any():
            total -= span
            continue
        if norm is None:
            norm = norm_of_mask(memory_slices[z0][0], m0, spacing_yx)
        prop = Propagator(model, spacing_yx, norm)
        # permanent memory: the source slice, and the nearest other prompted slices
        prop.remember(*memory_slices[z0], pinned=True)
        near = sorted((abs(z - z0), z) for z in memory_slices if z != z0)[:2]
        for _, z in near:
            prop.remember(*memory_slices[z], pinned=True)
        z_end = z0 + d * (span + 1)
        if z_end in empty:  # a prompted slice the user emptied ends this span
            rejected = current(z_end)
            where = rejected if rejected is not None and rejected.any() else m0
            prop.remember_empty(volume.slice(z_end), where)
        min_area = MIN_AREA_FRACTION * np.count_nonzero(m0)
        confidences: list[float] = []
        prev = m0
        agree = 0
        visited = 0
        for i in range(1, span + 1):
            z = z0 + d * i
            old = current(z)
            had = _had_mask(old)
            if within_old and not had:
                break  # "less" of the object: it does not spread to slices it was not on
            img = volume.slice(z)
            step = prop.step(img, prev)
            if np.count_nonzero(step) < min_area:  # a remnant this small: the object has ended
                step = np.zeros_like(step)
            if step.any():
                if first_round:
                    if _unsure(prop.confidence, confidences):
                        step = np.zeros_like(step)  # the object has ended
                    confidences.append(prop.confidence)
                elif not had and prop.confidence < EXTEND_CONFIDENCE:
                    step = np.zeros_like(step)  # too unsure to spread the object to a new slice
            cand = without_blocked(z, step)
            final = cand
            if options.fusion and had and prop.prefer_previous(img, old, cand, grow, rule):
                final = old
            visited += 1
            done += 1
            yield z, final, total
            if not cand.any():
                if not agree_stop:  # the object ended before the emptied slice; so does the leak
                    for event in clear_leak(z0, d, i + 1, span):
                        visited += 1
                        yield event
                break
            if agree_stop and old is not None and _dice(cand, old) >= AGREE_DICE:
                agree += 1
                if agree >= AGREE_SLICES:  # the correction no longer changes anything
                    break
            else:
                agree = 0
            prop.remember(img, final)
            prev = final
        total -= span - visited


# Propagation ends where the mask's area falls below this share of the source slice's mask.
# The memory network keeps a small blob alive past the end of an object with weak edges (one
# click on a hippocampus left a tail of 310 down to 14 pixels on 68 slices past its end); the end
# slices a real object loses this way hold little of its volume, and a click there restarts
# propagation with that slice's own, smaller reference.
MIN_AREA_FRACTION = 0.15

# In an object's first round propagation also ends where the memory network's confidence in its
# mask (``Propagator.confidence``) falls this far below the median of its first CONF_SLICES
# slices. Past an object's end the network often keeps a mask of plausible size in a
# neighbouring structure, less sure of it (median confidence of masks on slices without the object
# 0.918 against 0.940 with it, first clicks on 120 training-case objects). On those objects
# one-click Dice +0.018 +- 0.006; from 6 clicks on the corrections had mended the same leaks
# anyway (Dice@6 -0.002 +- 0.004). In later rounds it gave nothing more (twenty-fourth session).
CONF_DROP = 0.06
CONF_SLICES = 3
# In later rounds the object spreads to a slice that had no mask only where the network's
# confidence is at least this (the 5 % quantile on slices holding the object above was 0.864).
# A positive click on an object's tip carried it 30 slices into a neighbouring structure at
# 0.78-0.90; a drop against the run's start cannot catch that. On the training-case checks:
# Dice@6 +0.006 +- 0.003, Dice@10 +0.003 +- 0.002 (twenty-fourth session).
EXTEND_CONFIDENCE = 0.85

AGREE_DICE = 0.97  # a correction round stops where new and old masks agree this well ...
AGREE_SLICES = 2  # ... on this many slices in a row


def _reach(
    spans: dict[tuple[int, int], int],
    starts: list[tuple[int, np.ndarray, object]],
    prompts: dict[int, SlicePrompts],
    current: Callable[[int], np.ndarray | None],
    pinned: Collection[int],
    dirs: list[int],
    limits: tuple[int, int],
) -> dict[tuple[int, int], int]:
    """How many slices each prompted slice's propagation may cover in each direction.

    ``spans[(z, d)]``: the slices from z in direction d up to the next prompted slice (or the
    volume's or the limits' end). Two cases stop halfway, at the slices nearer to z:
    - the next slice is another non-empty slice prompted this round, which propagates
      towards z: each takes its nearer half (the lower one the middle slice), where
      otherwise the one run last would overwrite the whole span;
    - z's latest prompt asks for less (a negative click) and the next slice is a non-empty
      slice prompted in an earlier round: the far half keeps its masks. Carried all the way,
      a "less here" click spoils masks that an earlier prompt, nearer to them, had made (on
      the training-case checks: Dice@6 +0.006, objects falling by more than 0.05 from one
      click to the next 62 -> 49; see ``docs/training/experiments.md``).
    A click asking for more goes the whole way (growth needs it); fusion keeps it from
    shrinking the masks there.
    """
    with_mask = {z for z, m, _ in starts if m.any()}
    earlier = {int(z) for z in pinned}
    reach = dict(spans)
    for (z, d), n in spans.items():
        z_end = z + d * (n + 1)
        if z not in with_mask or not limits[0] <= z_end <= limits[1]:
            continue
        if z_end in with_mask and -d in dirs:
            reach[(z, d)] = (n + 1) // 2 if d > 0 else n // 2
        elif z_end in earlier and not _asks_for_more(prompts[z]) and _had_mask(current(z_end)):
            reach[(z, d)] = (n + 1) // 2
    return reach


def _size_hint(
    prompts: SlicePrompts,
    old: np.ndarray | None,
    current: Callable[[int], np.ndarray | None],
    pinned: Collection[int],
) -> np.ndarray | None:
    """The mask that sets the first window of a prompted slice without a mask or a box.

    The largest mask of the slices prompted in earlier rounds (None if they have none):
    their masks come from clicks. Not the nearest mask: where propagation faded out, that
    is a remnant whose window is far too small (a brain tumour's second click, next to
    such a remnant, came out with 27 of its 4,388 pixels). ``old``: the prompted slice's
    mask before this round.
    """
    if prompts.boxes or prompts.regions or _had_mask(old):
        return None
    best, hint = 0, None
    for zp in sorted(pinned):
        m = current(int(zp))
        n = 0 if m is None else int(np.count_nonzero(m))
        if n > best:
            best, hint = n, m
    return hint


def _unsure(confidence: float, earlier: list[float]) -> bool:
    """Whether a propagation step's confidence fell ``CONF_DROP`` below the median of the run's
    first ``CONF_SLICES`` steps (``earlier``: the confidences of the run's steps so far)."""
    if len(earlier) < CONF_SLICES:
        return False
    return confidence < float(np.median(earlier[:CONF_SLICES])) - CONF_DROP


def _had_mask(m: np.ndarray | None) -> bool:
    return m is not None and bool(m.any())


def _asks_for_more(prompts: SlicePrompts) -> bool:
    """Whether a slice's prompts ask for more of the object: its latest click is positive, or
    it has boxes only (boxes are always positive)."""
    return prompts.clicks[-1][2] if prompts.clicks else True


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.count_nonzero(a & b)) / s
