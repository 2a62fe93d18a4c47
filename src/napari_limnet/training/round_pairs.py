"""Fusion-scorer training pairs from real simulated rounds.

The synthetic pairs of the scorer stage (two corruptions of the truth) do not look like the
masks a real round produces, and the scorer trained on them alone misjudged real masks. Here
the engine itself runs the simulated annotator (``annotator``) on labelled training volumes,
with fusion on but never keeping the old mask, and records every fusion decision it meets: the
scorer's exact inputs (through the probe of the rounds' ``FusionRule``) and which of the two
masks is closer to the truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..engine.fusion import NEVER_KEEP
from ..evaluation.annotator import first_click, next_click
from ..evaluation.cases import object_is_usable
from .real_bank import LabelledVolume


@dataclass
class PairBank:
    x: torch.Tensor  # (N, IMG_CH, S, S) float16: normalised image crop
    prev: torch.Tensor  # (N, 1, S, S) bool: previous round's mask
    new: torch.Tensor  # (N, 1, S, S) bool: this round's mask
    gain: torch.Tensor  # (N,) float32: Dice(prev) - Dice(new) on the full slice
    group: torch.Tensor  # (N,) int64: which object the pair came from

    def __len__(self) -> int:
        return int(self.gain.shape[0])

    def subset(self, keep: torch.Tensor) -> PairBank:
        return PairBank(
            self.x[keep], self.prev[keep], self.new[keep], self.gain[keep], self.group[keep]
        )


def collect_round_pairs(
    model,
    volumes: list[LabelledVolume],
    n_objects: int,
    rounds: int,
    seed: int,
    log: Callable[[str], None] | None = None,
) -> PairBank:
    """Run ``rounds`` simulated clicks on ``n_objects`` random labelled structures of ``volumes``
    and return every fusion decision met on the way (rounds 2 and later)."""
    from ..engine.measure import dice
    from ..engine.session import Session

    rng = np.random.default_rng(seed)
    per_volume = []
    for vi, v in enumerate(volumes):
        values = [int(a) for a in np.unique(v.labels) if a != 0]
        usable = [a for a in values if object_is_usable(v.labels == a)]
        if usable:
            per_volume.append([(vi, a) for a in rng.permutation(usable).tolist()])
    if not per_volume:
        raise ValueError("no labelled structure to simulate rounds on")
    # one object per label map in turn, so atlases with hundreds of labels do not dominate
    picked = []
    while len(picked) < n_objects and any(per_volume):
        for k in rng.permutation(len(per_volume)).tolist():
            if per_volume[k] and len(picked) < n_objects:
                picked.append(per_volume[k].pop())
    xs, prevs, news, gains, groups = [], [], [], [], []
    pending: list[tuple] = []
    # never keep the old mask (each round shows its own result), and record every decision,
    # after positive clicks as after negative ones
    rule = replace(
        NEVER_KEEP, probe=lambda old, new, x, po, pn, _p: pending.append((old, new, x, po, pn))
    )
    for gi, (vi, value) in enumerate(picked):
        v = volumes[vi]
        gt = v.labels == value
        session = Session(v.image, spacing=v.spacing, model=model)
        session.fusion_rule = rule
        obj = session.new_object()
        pred = np.zeros(gt.shape, bool)
        n0 = len(gains)
        for r in range(rounds):
            click = first_click(gt, v.spacing) if r == 0 else next_click(gt, pred, v.spacing)
            if click is None:
                break
            session.add_click(obj, click.position, positive=click.positive)
            for ev in session.run_iter(obj):
                if pending:  # the decision just made was for this event's slice
                    old, new, x, po, pn = pending.pop()
                    pending.clear()
                    gain = dice(old, gt[ev.z]) - dice(new, gt[ev.z])
                    xs.append(x.half().cpu())
                    prevs.append(po.bool().cpu())
                    news.append(pn.bool().cpu())
                    gains.append(gain)
                    groups.append(gi)
            pred = np.asarray(session.mask(obj), bool)
        if log:
            log(f"{v.name} label {value}: {len(gains) - n0} pairs")
    if not gains:
        raise ValueError("the simulated rounds made no fusion decision")
    return PairBank(
        torch.cat(xs),
        torch.cat(prevs),
        torch.cat(news),
        torch.tensor(gains, dtype=torch.float32),
        torch.tensor(groups, dtype=torch.int64),
    )


def best_threshold(prob: torch.Tensor, gain: torch.Tensor) -> tuple[float, float]:
    """The probability threshold above which keeping the old mask gains the most Dice in sum
    over ``gain`` (Dice(old) - Dice(new)); returns (threshold, mean gain per decision)."""
    best = (1.01, 0.0)
    for t in np.arange(0.30, 1.0, 0.01):
        g = float(gain[prob > t].sum()) / max(1, len(gain))
        if g > best[1]:
            best = (round(float(t), 2), g)
    return best
