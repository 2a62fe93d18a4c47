"""One training step of the memory stage (propagation over stacks of slices)."""

from __future__ import annotations

import torch
from torch import nn

from ..engine.preprocess import norm_stats, normalise
from . import perturb
from .batches import Batches
from .config import MemoryConfig
from .losses import seg_loss


def step(net: nn.Module, data: Batches, cfg: MemoryConfig, amp) -> dict:
    g = data.g
    mem = net.module if hasattr(net, "module") else net
    img, tgt = data.get(
        cfg.batch, cfg.frames, cfg.real_fraction, cfg.compartments, cfg.label_synth
    )
    keep = tgt[:, 0].sum((1, 2)) >= 4
    img, tgt = img[keep], tgt[keep]
    b, t = img.shape[:2]
    if b == 0:
        return {}
    first = tgt[:, :1]
    start = torch.where(
        (torch.rand(b, generator=g, device=img.device) < 0.6)[:, None, None, None],
        perturb.corrupt(first, g, 0.7),
        first,
    ).float()
    stats = norm_stats(img[:, :1], perturb.erode(first.float(), 1) > 0)
    frames = [normalise(img[:, i : i + 1], stats) for i in range(t)]
    losses, dices = [], []
    with amp():
        k0, f0 = mem.encode_key(frames[0])
        keys = [k0]
        values = [mem.encode_value(frames[0], start, f0[3])]
        prev = start
        for i in range(1, t):
            k, skips = mem.encode_key(frames[i])
            # memory: the first (prompted) slice always, plus the two most recent
            idx = [0] + list(range(max(1, len(keys) - 2), len(keys)))
            readout = mem.read_memory(
                k, torch.stack([keys[j] for j in idx], 1), torch.stack([values[j] for j in idx], 1)
            )
            logits = mem.segment(readout, skips, prev)
            losses.append(seg_loss(logits, tgt[:, i : i + 1]))
            prob = (logits.float() > 0).float().detach()  # binary, as at inference
            with torch.no_grad():
                dices.append(perturb.dice(prob > 0.5, tgt[:, i : i + 1]).mean())
            keys.append(k)
            values.append(mem.encode_value(frames[i], prob.to(frames[i].dtype), skips[3]))
            prev = prob
    return {"loss": torch.stack(losses).mean(), "dice": torch.stack(dices).mean()}
