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

Every rule, and where it lives (each has a test in ``tests/engine/test_round_rules.py`` or
``test_fusion_rule.py``):

- the 2D step's windows: wide, the previous mask's, or a size hint (``_size_hint``), then
  zoom-in passes that never zoom out for a correction (``predict.segment_slice``); parts of
  the mask that hold a negative click go (``predict._drop_hit_parts``);
- how far each propagation goes: up to the next prompted slice, or halfway (``_reach``);
- a propagation run (``PropagationJob``) ends where the mask shrinks to a remnant
  (``MIN_AREA_FRACTION``), in a first round where the network grows unsure
  (``CONF_DROP``, ``CONF_SLICES``), in later rounds where it would spread to a new slice
  unsure (``EXTEND_CONFIDENCE``), where new and old masks agree (``AGREE_DICE``,
  ``AGREE_SLICES``; ``PropagationJob.agree_stop``), or, after a "less" click, at the first
  slice without a mask (``PropagationJob.within_old``);
- each step keeps only the parts touching the previous slice's mask, fed eroded
  (``predict._touching_parts``, ``predict.PREV_ERODE``);
- slices emptied this round: the old masks beyond go (``clear_leak``), or an earlier slice
  propagates again towards them, remembered as "no object here";
- fusion: ``engine.fusion.FusionRule``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import predict
from .fusion import FusionRule
from .measure import dice
from .prompts import SlicePrompts


@dataclass(frozen=True)
class PropagationJob:
    """One run of the memory network from a slice of this round, in one direction.

    source: the slice it starts from (prompted this round, or an earlier one propagated again
    towards a slice emptied this round); direction: +1 (increasing z) or -1; span: at most
    this many slices; mask: the source's mask; norm: its intensity normalisation (None: from
    the mask); agree_stop: it stops where new and old masks agree (``AGREE_*``); grow: the
    source's latest prompt asked for more (fusion's ``grow``); within_old: it never puts the
    object on a slice that had no mask (a "less" click).
    """

    source: int
    direction: int
    span: int
    mask: np.ndarray
    norm: object | None
    agree_stop: bool
    grow: bool
    within_old: bool


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
    z_range: tuple[int, int] | None = None  # inclusive limits of propagation (None: the ends)
    direction: str = "both"  # "both", "up" (increasing z) or "down"
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
    # looked up at each call (tests put stand-ins for the networks' steps in ``predict``)
    Propagator, segment_slice = predict.Propagator, predict.segment_slice
    neighbour_slices, norm_of_mask = predict.neighbour_slices, predict.norm_of_mask

    nz = volume.shape[0]
    spacing_yx = (float(volume.spacing[1]), float(volume.spacing[2]))
    z_lo, z_hi = options.z_range if options.z_range is not None else (0, nz - 1)
    z_lo, z_hi = max(0, int(z_lo)), min(nz - 1, int(z_hi))
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
        if options.direction in ("both", "up"):
            dirs.append(1)
        if options.direction in ("both", "down"):
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

    # No agreement stop towards a slice emptied this round: the old masks next to it are the
    # ones in doubt. A negative click on a slice that had a mask asks for less of an object
    # already there, so its propagation never puts the object on slices without it.
    jobs = [
        PropagationJob(
            source=z0,
            direction=d,
            span=reach[(z0, d)],
            mask=m0,
            norm=norm,
            agree_stop=z0 + d * (spans[(z0, d)] + 1) not in emptied,
            grow=_asks_for_more(prompts[z0]),
            within_old=not _asks_for_more(prompts[z0]) and had_mask[z0],
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
                    PropagationJob(
                        source=zs,
                        direction=-d,
                        span=spans[(z0, d)],
                        mask=memory_slices[zs][1],
                        norm=None,
                        agree_stop=False,
                        grow=False,
                        within_old=True,
                    )
                )
                total += spans[(z0, d)]
    done = len(starts)
    for job in jobs:
        z0, d, span, m0, norm = job.source, job.direction, job.span, job.mask, job.norm
        agree_stop, grow, within_old = job.agree_stop, job.grow, job.within_old
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
            if agree_stop and old is not None and dice(cand, old) >= AGREE_DICE:
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
# anyway (Dice@6 -0.002 +- 0.004). In later rounds it gave nothing more (docs/decisions.md,
# "Propagation and the memory network").
CONF_DROP = 0.06
CONF_SLICES = 3
# In later rounds the object spreads to a slice that had no mask only where the network's
# confidence is at least this (the 5 % quantile on slices holding the object above was 0.864).
# A positive click on an object's tip carried it 30 slices into a neighbouring structure at
# 0.78-0.90; a drop against the run's start cannot catch that. On the training-case checks:
# Dice@6 +0.006 +- 0.003, Dice@10 +0.003 +- 0.002 (docs/decisions.md, "Propagation and the
# memory network").
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
      click to the next 62 -> 49; ``docs/decisions.md``, "Round rules").
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
