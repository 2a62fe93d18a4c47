"""One interaction round for one object: prompted slices -> 2D masks -> propagation -> fusion.

This is the algorithm behind ``Session.run_iter``; the session owns all state (prompts,
history, other objects) and passes in what a round needs as plain values and callables.

PLACEHOLDER (being replaced by the network-based implementation): the current body
segments each prompted slice by intensity region growing and propagates nothing. Its
signature and yield contract are final.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class SlicePrompts:
    """All prompts the user placed on one slice (every round so far, in order).

    clicks: (y, x, positive) in voxel indices of that slice.
    boxes: (y0, x0, y1, x1), inclusive corners.
    """

    clicks: tuple[tuple[float, float, bool], ...] = ()
    boxes: tuple[tuple[int, int, int, int], ...] = ()


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
    from scipy import ndimage

    total = len(prompts)
    for z in sorted(prompts):
        img = volume.slice(z)
        sp = prompts[z]
        seed = np.zeros(img.shape, bool)
        for y, x, pos in sp.clicks:
            if pos:
                seed[int(round(y)), int(round(x))] = True
        for y0, x0, y1, x1 in sp.boxes:
            seed[(y0 + y1) // 2, (x0 + x1) // 2] = True
        if not seed.any():
            mask = np.zeros(img.shape, bool)
        else:
            vals = img[seed]
            tol = 0.1 * (np.percentile(img, 99) - np.percentile(img, 1) + 1e-6)
            region = (img >= vals.min() - tol) & (img <= vals.max() + tol)
            lab, _ = ndimage.label(region)
            mask = np.isin(lab, np.unique(lab[seed & region]))
        for y, x, pos in sp.clicks:
            if not pos:
                lab, _ = ndimage.label(mask)
                v = lab[int(round(y)), int(round(x))]
                if v:
                    mask[lab == v] = False
        b = blocked(z)
        if b is not None:
            mask &= ~b
        yield z, mask, total
