"""The fusion rule: when a propagated slice keeps its previous round's mask.

A correction round propagates from its prompted slice and meets slices that already have a
mask. The slice keeps that mask (the new one is dropped) where the new mask went against the
click the round came from, judged by area, or where the fusion scorer is sure enough that the
previous mask was better. One :class:`FusionRule` holds every number of that decision; a round
gets it with its options (``RoundOptions.fusion_rule``), by default the model's
(:meth:`FusionRule.of`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NEVER_KEEP", "FusionRule"]

# After a click asking for more (a positive click or a box) a slice keeps its old mask wherever
# the new one is smaller: a "more" click may grow a mask, never shrink it (a gain at 10 clicks
# on the training-case checks).
GROW_RATIO = 1.0
# After a negative click the slice keeps its old mask when that is under this share of the new
# one's area: a "less" click that more than doubled a slice spoiled it. On 37 objects of the
# training cases (10 clicks) Dice@6/@10 went from 0.588/0.642 (scorer only, 0.99) to
# 0.618/0.667 (this rule only), 0.615/0.659 without fusion; objects falling by more than 0.05
# from one click to the next: 14, 11 and 16 times; 0.7 gave the same. "Never grow" after a
# negative click changed nothing measurable (docs/decisions.md, "Fusion and the scorer").
SHRINK_RATIO = 0.5
# The scorer also keeps the old mask where it is surer than this that the old one was better;
# 1 switches it off, as for the shipped weights (it ranks real masks poorly: with the area rule
# it lowered Dice@6/@10 to 0.608/0.642 at 0.99). Weights whose scorer was fine-tuned on real
# rounds carry their own threshold (``fusion_threshold`` in their metadata).
SCORER_OFF = 1.0


@dataclass(frozen=True)
class FusionRule:
    """When a propagated slice keeps its previous mask.

    grow_ratio: after a click asking for more, keep the old mask if the new one's area is
    under this times the old one's.
    shrink_ratio: after a negative click, keep the old mask if its area is under this times
    the new one's.
    scorer_threshold: also keep it where the scorer's probability that the old mask was
    better exceeds this (1 or more: the scorer is not run).
    probe: training only: called with (old, new, image crop, old crop, new crop,
    probability) at every decision the area rule leaves to the scorer; the scorer then runs
    whatever its threshold (``training.round_pairs`` collects real pairs this way).
    """

    grow_ratio: float = GROW_RATIO
    shrink_ratio: float = SHRINK_RATIO
    scorer_threshold: float = SCORER_OFF
    probe: Callable[..., None] | None = field(default=None, compare=False)

    @classmethod
    def of(cls, model: Any) -> FusionRule:
        """The rule for ``model``: the area rule and the model's scorer threshold."""
        return cls(scorer_threshold=float(getattr(model, "fusion_threshold", SCORER_OFF)))

    def keeps_by_area(self, area_old: int, area_new: int, grow: bool) -> bool:
        """Whether the new mask went against the round's click (``grow``: it asked for more)."""
        if grow:
            return area_new < self.grow_ratio * area_old
        return area_old < self.shrink_ratio * area_new

    @property
    def runs_scorer(self) -> bool:
        return self.scorer_threshold < SCORER_OFF or self.probe is not None


# Each round shows its own result: no slice ever keeps its old mask (training.round_pairs).
NEVER_KEEP = FusionRule(grow_ratio=0.0, shrink_ratio=0.0, scorer_threshold=2.0)
