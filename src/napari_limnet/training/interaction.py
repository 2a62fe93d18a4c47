"""One training step of the interaction stage (RITM-style iterative clicks)."""

from __future__ import annotations

import torch
from torch import nn

from ..engine.networks import CROP
from ..engine.preprocess import click_maps, norm_stats, normalise
from . import perturb
from .batches import Batches
from .config import InteractionConfig
from .losses import seg_loss


def step(net: nn.Module, data: Batches, cfg: InteractionConfig, amp) -> dict:
    g = data.g
    c = getattr(net, "module", net).context_slices
    # realistic starts and a 2.5D input need neighbouring slices (no extra draws when
    # neither is used: the same RNG order as the shipped run)
    frames = max(2 * c + 1, 2 if cfg.realistic_prev > 0 else 1)
    img, tgt = data.get(cfg.batch, frames, cfg.real_fraction, cfg.compartments, cfg.label_synth)
    if c:  # the clicked slice is the stack's middle one; then z-c .. z-1, z+1 .. z+c
        order = [c, *range(c), *range(c + 1, frames)]
        img, tgt = img[:, order], tgt[:, order]
    raw, gt = img[:, :1], tgt[:, :1]
    b, dev = raw.shape[0], raw.device
    keep = gt.sum((1, 2, 3)) >= 3
    raw, gt, tgt = raw[keep], gt[keep], tgt[keep]
    nb_raw = img[:, 1 : 1 + 2 * c][keep]  # (empty, not a copy of the batch, when c is 0)
    b = raw.shape[0]
    if b == 0:
        return {}
    max_clicks = 8
    pts = torch.zeros(b, max_clicks, 2, device=dev)
    sign = torch.zeros(b, max_clicks, dtype=torch.bool, device=dev)
    valid = torch.zeros(b, max_clicks, dtype=torch.bool, device=dev)
    pts[:, 0] = perturb.first_clicks(gt, g, cfg.click_jitter)
    if cfg.click_anywhere > 0:
        anywhere = torch.rand(b, generator=g, device=dev) < cfg.click_anywhere
        pts[:, 0] = torch.where(anywhere[:, None], perturb.random_inside(gt, g), pts[:, 0])
    sign[:, 0] = True
    valid[:, 0] = True
    yy = torch.arange(CROP, device=dev, dtype=torch.float32)
    d2 = (yy[None, :, None] - pts[:, 0, 0, None, None]) ** 2 + (
        yy[None, None, :] - pts[:, 0, 1, None, None]
    ) ** 2
    stats = norm_stats(raw, (d2 < 9)[:, None])
    x_img = normalise(raw, stats)
    nb = [normalise(nb_raw[:, j : j + 1], stats) for j in range(2 * c)]
    # boxes for some samples (the object's box, jittered), with or without the click
    use_box = torch.rand(b, generator=g, device=dev) < 0.15
    box = (perturb.boxes(gt[:, 0], g, cfg.box_margin) & use_box[:, None, None]).float()[:, None]
    valid[:, 0] &= ~(use_box & (torch.rand(b, generator=g, device=dev) < 0.5))
    # scribbles and lassos in place of some first clicks (boxes keep theirs)
    scribble = torch.zeros(b, 1, CROP, CROP, device=dev)
    if cfg.scribble > 0 or cfg.lasso > 0:
        r = torch.rand(b, generator=g, device=dev)
        use_scr = ~use_box & (r < cfg.scribble)
        use_lasso = ~use_box & (r >= cfg.scribble) & (r < cfg.scribble + cfg.lasso)
        spts, sok = perturb.scribbles(gt, g)
        scribble = click_maps(spts, sok & use_scr[:, None])
        valid[:, 0] &= ~use_scr
        box = torch.where(use_lasso[:, None, None, None], perturb.lassos(gt, g), box)
        valid[:, 0] &= ~(use_lasso & (torch.rand(b, generator=g, device=dev) < 0.5))
    # start from nothing, or from an imperfect existing mask (a correction round)
    start = torch.rand(b, generator=g, device=dev) < cfg.correction_start
    prev = perturb.corrupt(gt, g, 1.5)
    if cfg.realistic_prev > 0:
        real_start = torch.rand(b, generator=g, device=dev) < cfg.realistic_prev
        like = perturb.propagated_like(tgt, x_img[:, 1:2], g)
        prev = torch.where(real_start[:, None, None, None], like, prev)
    prev = (prev & start[:, None, None, None]).float()
    n_clicks = 1
    if start.any():  # a correction on an existing mask: the first click is on its error
        p, pos, ok = perturb.error_clicks(gt, prev > 0.5, g)
        pts[:, 0] = torch.where(start[:, None] & ok[:, None], p, pts[:, 0])
        sign[:, 0] = torch.where(start & ok, pos, sign[:, 0])
    rounds = int(torch.randint(0, 5, (1,), generator=g, device=dev).item())

    def inputs() -> torch.Tensor:
        pos = torch.maximum(click_maps(pts, valid & sign), scribble)
        neg = click_maps(pts, valid & ~sign)
        return torch.cat([x_img, pos, neg, box, prev, *nb], 1)

    with torch.no_grad():
        for _ in range(rounds):
            with amp():
                logits = net(inputs())
            pred = logits.float() > 0
            p, pos, ok = perturb.error_clicks(gt, pred, g)
            pts[:, n_clicks] = p
            sign[:, n_clicks] = pos
            valid[:, n_clicks] = ok
            n_clicks += 1
            prev = (logits.float() > 0).float()  # binary, as the session stores masks
    with amp():
        logits = net(inputs())
    loss = seg_loss(logits, gt)
    with torch.no_grad():
        dsc = perturb.dice(logits.float() > 0, gt).mean()
    return {"loss": loss, "dice": dsc, "clicks": n_clicks}
