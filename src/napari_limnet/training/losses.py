"""The segmentation loss of the interaction and memory stages."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice over (B, 1, H, W); Dice is skipped for empty targets (stop slices)."""
    t = target.float()
    x = logits.float()
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none").mean()
    p = torch.sigmoid(x)
    inter = (p * t).sum((1, 2, 3))
    denom = p.sum((1, 2, 3)) + t.sum((1, 2, 3))
    has = t.sum((1, 2, 3)) > 0
    d = 1 - (2 * inter + 1) / (denom + 1)
    dice = (d * has).sum() / has.sum().clamp_min(1)
    return bce + dice
