"""The scorer stage (which of two masks of a slice is better, for multi-round fusion): its
training step, its real pairs from simulated rounds, and the fusion threshold."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.preprocess import norm_stats, normalise
from . import perturb
from .batches import Batches, load_training_volumes
from .config import ScorerConfig, StageConfig, TrainConfig


def _synthetic_pairs(data: Batches, n: int, cfg: StageConfig):
    """``n`` (x, prev, new, label, weight) pairs: two corruptions of a target, one mild."""
    g = data.g
    img, tgt = data.get(n, 1, cfg.real_fraction, cfg.compartments, cfg.label_synth)
    keep = tgt[:, 0].sum((1, 2)) >= 4
    raw, gt = img[keep][:, :1], tgt[keep][:, :1]
    b = raw.shape[0]
    if b == 0:
        return None
    sa = torch.rand(b, 1, 1, 1, generator=g, device=raw.device)
    a = perturb.corrupt(gt, g, 0.5) & (sa > 0.05) | (gt & (sa > 0.9))
    sb = torch.rand(b, generator=g, device=raw.device)
    b_ = perturb.corrupt(gt, g, 1.5)
    b_ = torch.where((sb < 0.1)[:, None, None, None], torch.zeros_like(b_), b_)
    swap = torch.rand(b, generator=g, device=raw.device) < 0.5
    prev = torch.where(swap[:, None, None, None], b_, a)
    new = torch.where(swap[:, None, None, None], a, b_)
    dp, dn = perturb.dice(prev, gt), perturb.dice(new, gt)
    label = (dp > dn).float()
    weight = ((dp - dn).abs() > 0.01).float()
    stats = norm_stats(raw, perturb.erode(gt.float(), 1) > 0)
    return normalise(raw, stats), prev.float(), new.float(), label, weight


def _real_pairs(data: Batches, n: int, device: torch.device):
    """``n`` fusion decisions of simulated rounds (``round_pairs``), flipped half the time."""
    g = data.g
    i = torch.randint(len(data.pairs), (n,), generator=g, device=g.device).cpu()
    x = data.pairs.x[i].to(device).float()
    prev = data.pairs.prev[i].to(device).float()
    new = data.pairs.new[i].to(device).float()
    if bool(torch.rand(1, generator=g, device=g.device) < 0.5):
        x, prev, new = x.flip(-1), prev.flip(-1), new.flip(-1)
    gain = data.pairs.gain[i].to(device)
    return x, prev, new, (gain > 0).float(), (gain.abs() > 0.01).float()


def step(net: nn.Module, data: Batches, cfg: ScorerConfig, amp) -> dict:
    # ``pair_fraction`` of the batch are real decisions (with ``round_pairs``), the rest
    # synthetic pairs; pairs closer than 0.01 Dice carry no label
    n_real = int(round(cfg.batch * cfg.pair_fraction)) if data.pairs is not None else 0
    parts = []
    if cfg.batch > n_real and (syn := _synthetic_pairs(data, cfg.batch - n_real, cfg)):
        parts.append(syn)
    if n_real:
        parts.append(_real_pairs(data, n_real, next(net.parameters()).device))
    if not parts:
        return {}
    x, prev, new, label, weight = (torch.cat(t) for t in zip(*parts, strict=True))
    with amp():
        logit = net(x, prev, new)
    loss = (
        F.binary_cross_entropy_with_logits(logit.float(), label, reduction="none") * weight
    ).sum()
    loss = loss / weight.sum().clamp_min(1)
    acc = (((logit.float() > 0).float() == label).float() * weight).sum() / weight.sum().clamp_min(
        1
    )
    return {"loss": loss, "acc": acc}


def round_pairs(cfg: TrainConfig, scfg: ScorerConfig, out: Path):
    """The scorer's real pairs (collected once per run folder), split by object into
    training pairs and the held-out pairs that choose the fusion threshold."""
    from .round_pairs import PairBank, collect_round_pairs

    if not cfg.init_weights or not cfg.cases:
        raise ValueError("round_pairs needs init_weights (the networks to simulate) and cases")
    cache = out / "round_pairs.pt"
    if cache.exists():
        bank = PairBank(**torch.load(cache, weights_only=True))
    else:
        from ..engine.model import load_model

        model = load_model(cfg.init_weights, device="cpu")
        vols = load_training_volumes(cfg.cases, cfg.split)
        bank = collect_round_pairs(
            model, vols, scfg.round_pairs, scfg.pair_rounds, cfg.seed, log=print
        )
        torch.save(bank.__dict__, cache)
    held = bank.group % 5 == 4
    return bank.subset(~held), bank.subset(held)


@torch.no_grad()
def choose_threshold(net: nn.Module, pairs, device: torch.device) -> dict:
    """Fusion threshold maximising the held-out pairs' Dice gain (see ``round_pairs``)."""
    from .round_pairs import best_threshold

    net.eval()
    probs = []
    for i in range(0, len(pairs), 256):
        sl = slice(i, i + 256)
        x = pairs.x[sl].to(device).float()
        logit = net(x, pairs.prev[sl].to(device).float(), pairs.new[sl].to(device).float())
        probs.append(torch.sigmoid(logit.float()).cpu())
    net.train()
    prob = torch.cat(probs)
    t, gain = best_threshold(prob, pairs.gain)
    oracle = float(pairs.gain.clamp_min(0).mean())
    return {
        "fusion_threshold": t,
        "held_out_gain": round(gain, 5),
        "oracle_gain": round(oracle, 5),
    }
