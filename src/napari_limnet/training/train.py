"""Training of the three LIM-Net networks (``limnet train``).

Each network trains in its own stage (they can run one after another, or as parallel
processes sharing one GPU), on a mix of synthetic stacks (``synthetic.generate``) and stacks
cut from the real training cases (``real_bank``):

- interaction: RITM-style iterative clicks. Per batch, a first click near the object's
  centre (or a box), optionally a start from an imperfect existing mask, then 0-4 rounds
  without gradient that add a click on the largest error and feed the prediction back as the
  previous mask; the last round is trained.
- memory: propagation over stacks of ``frames`` slices from an imperfect first-slice mask,
  each prediction fed back into the memory as at inference.
- scorer: which of two imperfect masks of a slice is better (multi-round fusion).

The stage runs for a wall-clock budget (``seconds``) or a number of steps, writes
checkpoints (resumable) and a JSON-lines log; ``export`` combines the stage checkpoints into
the weights file the engine loads. With ``torchrun`` (WORLD_SIZE > 1) it uses
DistributedDataParallel (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..engine.networks import (
    CROP,
    FIRST_CONV,
    InteractionEnsemble,
    InteractionNet,
    LimNet,
    context_of,
    widths_of,
)
from ..engine.preprocess import click_maps, norm_stats, normalise, shrink_mask
from . import perturb
from .real_bank import LabelledVolume, RealBank, build_bank
from .synthetic import generate, paint_labels

STAGES = ("interaction", "memory", "scorer")
REWARM_STEPS = 100  # learning-rate warm-up after resuming without optimizer state


@dataclass
class StageConfig:
    seconds: float = 600.0  # wall-clock budget (the schedule follows it)
    steps: int = 0  # if > 0, a step budget instead of seconds
    batch: int = 32
    lr: float = 2e-3
    real_fraction: float = 0.3
    frames: int = 6  # memory stage stack length
    # Options the shipped weights were trained without (their defaults reproduce them):
    click_jitter: float = 2.0  # interaction: first-click noise on the interior distance (pixels)
    compartments: float = 0.0  # share of synthetic targets with a core / rim of other intensity
    empty_dice: bool = False  # memory: the Dice term also penalises masks past the object's end
    end_fraction: float = 0.0  # memory: share of real stacks in which the object ends
    prev_erode: int = 0  # memory: the guiding mask is eroded by 0..prev_erode pixels per sample
    # memory: share of stacks whose first (prompted) slice's mask is leaked into neighbouring
    # tissue of similar intensity (``perturb.leaked``), as a correction's 2D mask can be; the
    # later slices' targets stay the object, so the network learns not to carry the leak on
    leak_start: float = 0.0
    # interaction: share of correction starts whose previous mask looks like a propagated one
    # (the object's mask on a neighbouring slice, leaked into similar tissue, or shrunk)
    # rather than a mild corruption of the target; see ``perturb.propagated_like``
    realistic_prev: float = 0.0
    # interaction: share of samples that start from an existing mask (a correction of a
    # propagated or imperfect mask) rather than from nothing; the rest start from a first
    # click. Their own click rounds (0-4) follow either way. 0.35 = the shipped weights.
    correction_start: float = 0.35
    # interaction: > 0 replaces the BCE term by RITM's normalised focal loss with this gamma
    # (each pixel weighted by (1 - p_t)^gamma, the weights rescaled to average 1 per sample),
    # so the loss follows the hard pixels (edges, the region a click should change) rather
    # than the easy background; 0 = BCE, as the shipped weights
    focal_gamma: float = 0.0
    # share of the real stacks whose intensities are drawn anew per labelled structure
    # (SynthSeg-style, ``synthetic.paint_labels``): real anatomy in any contrast
    label_synth: float = 0.0
    # share of real targets that are a structure joined with a touching neighbour
    union_fraction: float = 0.0
    # interaction: share of first clicks placed anywhere inside the object (uniformly, at any
    # depth) instead of near its most interior point: users do not click the centre
    click_anywhere: float = 0.0
    # interaction: share of first prompts that are a positive scribble (a stroke inside the
    # object, drawn into the positive click map) and share that are a lasso (a rough outline
    # around the object, filled into the box channel); see ``perturb.scribbles`` / ``lassos``
    scribble: float = 0.0
    lasso: float = 0.0
    # interaction: training boxes are the object's box with N(0, 2) pixel noise on each side;
    # with box_margin > 0 each side also moves out by up to this share of the object's
    # height or width (uniform), as a user's quick, loose box (issue: a loose box around the
    # spleen came back box-shaped)
    box_margin: float = 0.0
    # scorer: also learn from the fusion decisions of simulated rounds on this many real
    # training objects (``round_pairs``), run with the ``init_weights`` networks; 1/5 of the
    # objects are held out to choose the fusion threshold stored with the weights
    round_pairs: int = 0
    pair_rounds: int = 8
    pair_fraction: float = 0.5  # share of each batch taken from those pairs (1: only them)


@dataclass
class TrainConfig:
    out: str = "runs/train"
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # CPU threads (0: torch default)
    # bf16 autocast on the CPU too (CUDA always uses it): about 2x faster training steps where
    # the CPU has AMX / AVX512-BF16 (interaction, batch 96, 2 threads: 4 s against 9 s)
    cpu_bf16: bool = False
    # neighbouring slices on each side that the interaction network sees (2.5D input; see
    # ``InteractionNet``); 0 = one slice, as the shipped weights. With ``init_weights`` of
    # fewer, the new input channels start at zero (the network starts as the old one).
    interaction_context: int = 0
    # the interaction network's channels per level (``networks.WIDTHS`` when empty); a run from
    # ``init_weights`` keeps that file's
    interaction_widths: list[int] = field(default_factory=list)
    cases: str = ""  # cases.json of labelled real cases ("" = synthetic only)
    split: str = ""  # split.json (train cases are used; default: the packaged split)
    real_bank: int = 2000  # number of real stacks to cut
    bank_workers: int = 0  # > 1: cut them in that many processes (GPU machines' many cores)
    init_weights: str = ""  # start from this weights file (fine-tuning); "" = random init
    # interaction stage: a weights file whose (one) interaction network, frozen, is averaged
    # with the trained one as the shipped ensemble averages its members (``_with_partner``);
    # the simulated clicks and the loss then see the pair's mask, so the trained network learns
    # to mend its partner's errors rather than to be good alone. "" = trained alone
    partner_weights: str = ""
    checkpoint_every: float = 60.0  # seconds
    # every this many seconds (and at the end) the stage's loss and Dice / accuracy on fixed
    # stacks cut from the split's validation cases are logged as val_*; 0 = never. Needs a
    # cases.json (a folder of .npz training volumes has no validation cases).
    validate_every: float = 0.0
    val_stacks: int = 64
    stages: dict[str, StageConfig] = field(
        default_factory=lambda: {s: StageConfig() for s in STAGES}
    )

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        raw = json.loads(Path(path).read_text())
        stages = {k: StageConfig(**v) for k, v in raw.pop("stages", {}).items()}
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown training stage(s) {sorted(unknown)}; use {STAGES}")
        cfg = cls(**raw)
        cfg.stages.update(stages)
        return cfg


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the engine's choice (CUDA, then MPS, then CPU); else the named device."""
    from ..engine.model import pick_device as engine_pick

    return engine_pick(None if name == "auto" else name)


# --- data ------------------------------------------------------------------------------------


class Batches:
    """Mixed synthetic / real stacks with flips and 90-degree rotations."""

    def __init__(self, bank: RealBank | None, seed: int, device: torch.device) -> None:
        self.bank = bank
        self.pairs = None  # scorer stage: PairBank of real fusion decisions, if any
        self.device = device
        self.g = torch.Generator(device=device).manual_seed(seed)

    def get(
        self,
        batch: int,
        frames: int,
        real_fraction: float,
        compartments: float = 0.0,
        label_synth: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_real = int(round(batch * real_fraction)) if self.bank is not None else 0
        syn = generate(batch - n_real, frames, CROP, self.g, self.device, compartments)
        img, tgt = syn.image, syn.target
        if n_real:
            idx = torch.randint(len(self.bank), (n_real,), generator=self.g, device=self.device)
            real = self.bank.image[idx, :frames].float()
            if label_synth > 0 or self.bank.synth_only is not None:
                if self.bank.labels is None:
                    raise ValueError("label_synth needs a bank built with keep_labels=True")
                redraw = torch.rand(n_real, generator=self.g, device=self.device) < label_synth
                if self.bank.synth_only is not None:  # label maps without image: always
                    redraw |= self.bank.synth_only[idx]
                if redraw.any():
                    labels = self.bank.labels[idx[redraw], :frames]
                    real[redraw] = paint_labels(labels, self.g, real[redraw])
            img = torch.cat([img, real])
            tgt = torch.cat([tgt, self.bank.target[idx, :frames]])
        k = int(torch.randint(4, (1,), generator=self.g, device=self.device).item())
        img, tgt = torch.rot90(img, k, (2, 3)), torch.rot90(tgt, k, (2, 3))
        if torch.rand(1, generator=self.g, device=self.device).item() < 0.5:
            img, tgt = img.flip(3), tgt.flip(3)
        return img.contiguous(), tgt.contiguous()


def _is_npz_folder(cases: str) -> bool:
    """``cases`` names a folder of ``.npz`` training volumes rather than a case list."""
    return Path(cases).is_dir() and not (Path(cases) / "cases.json").exists()


def load_training_volumes(cases: str, split: str = "") -> list[LabelledVolume]:
    """Every label map of the split's ``train`` cases (validation-only cases are refused).

    ``cases`` is a ``cases.json``, or a folder of ``.npz`` volumes written by
    ``export_training_volumes`` (for machines without the NIfTI readers).
    """
    if _is_npz_folder(cases):
        out = []
        for f in sorted(Path(cases).glob("*.npz")):
            z = np.load(f)
            sp = tuple(float(v) for v in z["spacing"])
            out.append(LabelledVolume(z["image"].astype(np.float32), z["labels"], sp, f.stem))
        if not out:
            raise ValueError(f"no .npz training volumes in {cases}")
        return out

    return _case_volumes(cases, split, "train")


def _case_volumes(cases: str, split: str, purpose: str) -> list[LabelledVolume]:
    from ..evaluation.cases import SharedCases, load_split

    source = SharedCases(cases, load_split(split or None))
    out = []
    for cid in source.case_ids(purpose):  # type: ignore[arg-type]
        case = source.load_case(cid, purpose=purpose)  # type: ignore[arg-type]
        origin = str(source.info(cid).meta.get("source", cid))
        for name, lab in case.labels.items():
            out.append(LabelledVolume(case.image, lab, case.spacing, f"{cid}/{name}", origin))
    for mid in source.label_map_ids(purpose):  # type: ignore[arg-type]
        maps, spacing = source.load_label_map(mid, purpose=purpose)  # type: ignore[arg-type]
        origin = str(source.label_maps[mid].meta.get("source", mid))
        for name, lab in maps.items():
            out.append(LabelledVolume(None, lab, spacing, f"{mid}/{name}", origin))
    return out


def export_training_volumes(cases: str, folder: str | Path, split: str = "") -> list[Path]:
    """Write the training volumes of ``cases`` as compressed ``.npz`` files into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for v in load_training_volumes(cases, split):
        if v.image is None:
            continue  # (label maps without image are read from the cases folder itself)
        p = folder / (v.name.replace("/", "__") + ".npz")
        img = v.image
        if np.array_equal(img, np.round(img)) and np.abs(img).max() < 32000:
            img = img.astype(np.int16)
        np.savez_compressed(
            p, image=img, labels=v.labels.astype(np.int16), spacing=np.array(v.spacing)
        )
        paths.append(p)
    return paths


# --- losses ----------------------------------------------------------------------------------


def seg_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    empty_dice: bool = False,
    focal_gamma: float = 0.0,
) -> torch.Tensor:
    """BCE (or normalised focal loss) + soft Dice over (B, 1, H, W).

    By default Dice is skipped for empty targets (stop slices), as for the shipped weights.
    ``empty_dice`` counts them too: any area predicted past the object's end then costs nearly
    a full Dice loss, which should teach propagation to stop instead of copying the mask on.
    ``focal_gamma`` > 0: the pixel term is the normalised focal loss of RITM (Sofiiuk et al.
    2022): BCE weighted by (1 - p_t)^gamma, the weights (not differentiated) scaled to a mean
    of 1 per sample, so the easy pixels count less and the hard ones more (on equally hard
    pixels it equals BCE).
    """
    t = target.float()
    x = logits.float()
    pix = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    if focal_gamma > 0:
        with torch.no_grad():
            p_t = torch.exp(-pix)  # the probability given to the true class
            w = (1 - p_t).pow(focal_gamma)
            w = w / w.mean((1, 2, 3), keepdim=True).clamp_min(1e-6)
        pix = pix * w
    bce = pix.mean()
    p = torch.sigmoid(x)
    inter = (p * t).sum((1, 2, 3))
    denom = p.sum((1, 2, 3)) + t.sum((1, 2, 3))
    has = torch.ones_like(denom, dtype=torch.bool) if empty_dice else t.sum((1, 2, 3)) > 0
    d = 1 - (2 * inter + 1) / (denom + 1)
    dice = (d * has).sum() / has.sum().clamp_min(1)
    return bce + dice


# --- one step of each stage --------------------------------------------------------------------


def _interaction_step(net: nn.Module, data: Batches, cfg: StageConfig, amp) -> dict:
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
    loss = seg_loss(logits, gt, focal_gamma=cfg.focal_gamma)
    with torch.no_grad():
        dsc = perturb.dice(logits.float() > 0, gt).mean()
    return {"loss": loss, "dice": dsc, "clicks": n_clicks}


def _memory_step(net: nn.Module, data: Batches, cfg: StageConfig, amp) -> dict:
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
    if cfg.leak_start > 0:  # (no draws when 0: the defaults' RNG order is kept)
        leaky = torch.rand(b, generator=g, device=img.device) < cfg.leak_start
        # channel 1 is the intensity relative to the object's own (the engine's normalise)
        grown = perturb.leaked(first.float(), frames[0][:, 1:2], g)
        start = torch.where(leaky[:, None, None, None], grown, start)
    losses, dices = [], []
    # inference erodes the guiding mask by PREV_ERODE pixels; train for 0..prev_erode of it
    n_erode = (
        torch.randint(0, cfg.prev_erode + 1, (b,), generator=g, device=img.device)
        if cfg.prev_erode
        else None
    )

    def guide(m: torch.Tensor) -> torch.Tensor:
        out = m
        for i in range(cfg.prev_erode):  # (no draws when 0: the defaults' RNG order is kept)
            e = shrink_mask(out)  # the engine's erosion (predict.PREV_ERODE)
            out = torch.where((n_erode > i)[:, None, None, None], e, out)  # type: ignore[operator]
        return out

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
            logits = mem.segment(readout, skips, guide(prev))
            losses.append(seg_loss(logits, tgt[:, i : i + 1], cfg.empty_dice))
            prob = (logits.float() > 0).float().detach()  # binary, as at inference
            with torch.no_grad():
                dices.append(perturb.dice(prob > 0.5, tgt[:, i : i + 1]).mean())
            keys.append(k)
            values.append(mem.encode_value(frames[i], prob.to(frames[i].dtype), skips[3]))
            prev = prob
    return {"loss": torch.stack(losses).mean(), "dice": torch.stack(dices).mean()}


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


def _scorer_step(net: nn.Module, data: Batches, cfg: StageConfig, amp) -> dict:
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


STEP = {"interaction": _interaction_step, "memory": _memory_step, "scorer": _scorer_step}


# --- the loop --------------------------------------------------------------------------------


class _FixedBatches(Batches):
    """The validation stacks in order, no synthetic ones, no flips: the same data every time."""

    def __init__(self, bank: RealBank, device: torch.device) -> None:
        super().__init__(bank, 0, device)
        self._next = 0

    def get(
        self,
        batch: int,
        frames: int,
        real_fraction: float,
        compartments: float = 0.0,
        label_synth: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        idx = (torch.arange(batch) + self._next) % len(self.bank)
        self._next += batch
        idx = idx.to(self.bank.image.device)
        return self.bank.image[idx, :frames].float(), self.bank.target[idx, :frames]


def _validation_bank(cfg: TrainConfig, scfg: StageConfig, device: torch.device):
    if cfg.validate_every <= 0 or not cfg.cases:
        return None
    if _is_npz_folder(cfg.cases):  # no validation cases in it
        return None
    vols = _case_volumes(cfg.cases, cfg.split, "validation")
    if not vols:
        return None
    return build_bank(vols, cfg.val_stacks, max(scfg.frames, 1), CROP, 12345, device)


@torch.no_grad()
def _validate(net: nn.Module, stage: str, bank: RealBank, scfg: StageConfig, amp) -> dict:
    """The stage's own step (same clicks, rounds and losses, from a fixed seed) on ``bank``."""
    data = _FixedBatches(bank, bank.image.device)
    vcfg = replace(scfg, batch=16)
    net.eval()
    sums: dict[str, float] = {}
    n = 0
    for _ in range(max(1, len(bank) // vcfg.batch)):
        out = STEP[stage](net, data, vcfg, amp)
        if not out:
            continue
        n += 1
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    net.train()
    return {f"val_{k}": round(v / max(n, 1), 4) for k, v in sums.items() if k != "clicks"}


def _with_partner(net: InteractionNet, path: str) -> InteractionEnsemble:
    """``net`` beside the interaction network of weights file ``path``, frozen, as one
    ``InteractionEnsemble`` (the shipped ensemble's mean); only ``net`` learns."""
    from ..engine.model import load_model

    partner = load_model(path, device="cpu").net.interaction
    if not isinstance(partner, InteractionNet):
        raise ValueError(
            f"partner_weights {path} holds an ensemble; give one member's file "
            "(training.train.split_ensemble)"
        )
    partner = partner.to(next(net.parameters()).device).requires_grad_(False).eval()
    return InteractionEnsemble.of([partner, net])


def with_context(net: InteractionNet, context: int) -> InteractionNet:
    """``net`` for a 2.5D input of ``context`` slices on each side: the same weights, the
    first convolution's weights for the new neighbour channels zero, so it computes exactly
    what ``net`` did until training moves them."""
    old = net.context_slices
    if context == old:
        return net
    if context < old:
        raise ValueError(f"cannot drop context slices ({old} -> {context})")
    new = InteractionNet(net.widths, context=context)
    state = net.state_dict()
    key = FIRST_CONV
    w = torch.zeros_like(new.state_dict()[key])
    w[:, : state[key].shape[1]] = state[key]
    state[key] = w
    new.load_state_dict(state)
    return new


def _ddp() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return (dist.get_rank() if world > 1 else 0), world


def train_stage(cfg: TrainConfig, stage: str, progress: bool = True) -> Path:
    """Train one stage to its budget; resumes from ``<out>/<stage>.ckpt``. Returns the ckpt path."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; use one of {STAGES}")
    rank, world = _ddp()
    scfg = cfg.stages[stage]
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + rank)
    widths = tuple(cfg.interaction_widths) if cfg.interaction_widths else None
    full = LimNet(interaction_context=cfg.interaction_context, interaction_widths=widths)
    if cfg.init_weights:
        from ..engine.model import load_model

        full = load_model(cfg.init_weights, device="cpu").net
        if stage == "interaction" and isinstance(full.interaction, InteractionEnsemble):
            raise ValueError(
                f"{cfg.init_weights} holds an ensemble of interaction networks; write its "
                "members as weights files of their own with training.train.split_ensemble "
                "and fine-tune one of those"
            )
        if stage == "interaction" and widths and widths != full.interaction.widths:
            raise ValueError(
                f"interaction_widths {list(widths)} differ from those of {cfg.init_weights} "
                f"({list(full.interaction.widths)}); leave them out to fine-tune it"
            )
        if stage == "interaction" and cfg.interaction_context > full.interaction.context_slices:
            full.interaction = with_context(full.interaction, cfg.interaction_context)
    net: nn.Module = getattr(full, stage).to(device).train()
    # oneDNN's bf16 convolutions are faster in NHWC. Not for the memory network: its bf16
    # backward in channels-last corrupts the heap on the CPU (torch 2.13: "double free" or a
    # segfault within two steps), while in the default layout it trains.
    if device.type == "cpu" and cfg.cpu_bf16 and stage == "interaction":
        net = net.to(memory_format=torch.channels_last)
    trained: nn.Module = net  # what the step calls: the network, or it with its partner
    if cfg.partner_weights and stage == "interaction":
        trained = _with_partner(net, cfg.partner_weights)
        if device.type == "cpu" and cfg.cpu_bf16:
            trained = trained.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=scfg.lr, weight_decay=1e-4)
    ckpt = out / f"{stage}.ckpt"
    state = {"step": 0, "elapsed": 0.0}
    rewarm_from = 0  # a checkpoint without optimizer state warms the learning rate up again
    if ckpt.exists():
        saved = torch.load(ckpt, map_location=device, weights_only=True)
        net.load_state_dict(saved["model"])
        state = {"step": int(saved["step"]), "elapsed": float(saved["elapsed"])}
        if "optim" in saved:
            opt.load_state_dict(saved["optim"])
        else:
            rewarm_from = state["step"]
    # the memory step calls the network's named parts (encode_key, ...), not forward(), so
    # DistributedDataParallel would not average its gradients: that stage averages them itself
    ddp_grads = world > 1 and stage == "memory"
    model = (
        nn.parallel.DistributedDataParallel(trained) if world > 1 and not ddp_grads else trained
    )
    if ddp_grads:  # start every rank from rank 0's weights, as DistributedDataParallel does
        for t in net.state_dict().values():
            dist.broadcast(t, 0)
    bank = None
    if cfg.cases and scfg.real_fraction > 0:
        vols = load_training_volumes(cfg.cases, cfg.split)
        frames = max(scfg.frames, 1)
        bank = build_bank(
            vols,
            cfg.real_bank,
            frames,
            CROP,
            cfg.seed + 1000 * rank,
            device,
            end_fraction=scfg.end_fraction,
            keep_labels=scfg.label_synth > 0 or any(v.image is None for v in vols),
            union_fraction=scfg.union_fraction,
            workers=cfg.bank_workers,
        )
    data = Batches(bank, cfg.seed * 7919 + state["step"] * 31 + rank, device)
    val_bank = _validation_bank(cfg, scfg, device) if rank == 0 else None
    last_val = time.time()
    held_out = None
    if stage == "scorer" and scfg.round_pairs > 0:
        data.pairs, held_out = _round_pairs(cfg, scfg, out)
    if device.type == "cuda":

        def amp():
            return torch.autocast("cuda", dtype=torch.bfloat16)
    else:

        def amp():
            return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.cpu_bf16)

    log = (out / f"{stage}.log.jsonl").open("a") if rank == 0 else None
    t_start = time.time() - state["elapsed"]
    last_ckpt = time.time()
    step = state["step"]
    ema: dict[str, float] = {}

    def frac_done() -> float:
        if scfg.steps > 0:
            return step / scfg.steps
        return (time.time() - t_start) / max(scfg.seconds, 1e-6)

    def save(extra: dict | None = None) -> None:
        if rank == 0:
            tmp = ckpt.with_suffix(".tmp")
            torch.save(
                {
                    "model": net.state_dict(),
                    "optim": opt.state_dict(),
                    "step": step,
                    "elapsed": time.time() - t_start,
                    "config": asdict(cfg),
                    **(extra or {}),
                },
                tmp,
            )
            tmp.replace(ckpt)

    while frac_done() < 1.0:
        # warm-up then cosine decay over the budget
        f = frac_done()
        warm = min(1.0, (step + 1) / 200, (step - rewarm_from + 1) / REWARM_STEPS)
        lr = scfg.lr * warm * (0.5 * (1 + math.cos(math.pi * min(f, 1.0))))
        for group in opt.param_groups:
            group["lr"] = max(lr, scfg.lr * 0.01)
        out_step = STEP[stage](model, data, scfg, amp)
        if not out_step:
            continue
        opt.zero_grad(set_to_none=True)
        out_step["loss"].backward()
        if ddp_grads:
            for p in net.parameters():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad /= world
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        for k, v in out_step.items():
            v = float(v.detach()) if torch.is_tensor(v) else float(v)
            ema[k] = v if k not in ema else 0.98 * ema[k] + 0.02 * v
        if log and (step % 50 == 0 or step == state["step"] + 1):  # and a (re)start's first
            rec = {
                "step": step,
                "t": round(time.time() - t_start, 1),
                "lr": lr,
                **{k: round(v, 4) for k, v in ema.items()},
            }
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if progress:
                print(
                    f"\r[{stage}] {min(f, 1) * 100:5.1f}% step {step} "
                    + " ".join(f"{k}={v:.3f}" for k, v in ema.items()),
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
        if val_bank is not None and time.time() - last_val > cfg.validate_every:
            _log_validation(log, net, stage, val_bank, scfg, amp, step, t_start, progress)
            last_val = time.time()
        if time.time() - last_ckpt > cfg.checkpoint_every:
            save()
            last_ckpt = time.time()
    if val_bank is not None:
        _log_validation(log, net, stage, val_bank, scfg, amp, step, t_start, progress)
    extra = {}
    if held_out is not None and len(held_out):
        extra = _choose_threshold(net, held_out, device)
        if log:
            log.write(json.dumps({"step": step, **extra}) + "\n")
            log.flush()
    save(extra)
    if progress and rank == 0:
        print(file=sys.stderr)
    if world > 1:
        dist.barrier()
    return ckpt


def compact_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Write a stage checkpoint small enough to commit: float16 weights, step, elapsed time and
    config, no optimizer state. ``train_stage`` resumes from it (put it in the run folder as
    ``<stage>.ckpt``); the AdamW moments then start afresh and the learning rate warms up again
    over ``REWARM_STEPS`` steps. For CPU trainings that span sessions on fresh machines."""
    from ..engine.model import half_state

    saved = torch.load(src, map_location="cpu", weights_only=True)
    keep = {k: v for k, v in saved.items() if k not in ("model", "optim")}
    keep["model"] = half_state(saved["model"])
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(keep, dst)
    return dst


def _log_validation(log, net, stage, bank, scfg, amp, step, t_start, progress) -> None:
    rec = {
        "step": step,
        "t": round(time.time() - t_start, 1),
        **_validate(net, stage, bank, scfg, amp),
    }
    if log:
        log.write(json.dumps(rec) + "\n")
        log.flush()
    if progress:
        vals = " ".join(f"{k}={v:.3f}" for k, v in rec.items() if k.startswith("val_"))
        print(f"\n[{stage}] step {step} validation: {vals}", file=sys.stderr, flush=True)


def _round_pairs(cfg: TrainConfig, scfg: StageConfig, out: Path):
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
def _choose_threshold(net: nn.Module, pairs, device: torch.device) -> dict:
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


def _settings(meta: dict) -> dict:
    """The inference settings of a weights file's meta that a file made from it keeps."""
    return {k: meta[k] for k in ("fusion_threshold",) if k in meta}


def export(
    out: str | Path, weights: str | Path, meta: dict | None = None, base: str | Path = ""
) -> Path:
    """Combine ``<out>/<stage>.ckpt`` of the stages into one weights file for ``load_model``.

    A stage without a checkpoint in ``out`` is taken from the ``base`` weights file (a
    fine-tuning run that trained only some stages); without ``base`` every stage is required.
    """
    from ..engine.model import load_model, save_weights

    base_model = load_model(base, device="cpu") if base else None
    net = base_model.net if base_model else LimNet()
    base_meta = base_model.meta if base_model else {}
    steps = dict(base_meta.get("training", {}))
    extra = _settings(base_meta)
    for stage in STAGES:
        path = Path(out) / f"{stage}.ckpt"
        if not path.exists() and base:
            continue
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if stage == "interaction":  # the run's own input (2.5D or not) and widths
            context, widths = context_of(saved["model"]), widths_of(saved["model"])
            inter = net.interaction
            if not isinstance(inter, InteractionNet) or (context, widths) != (
                inter.context_slices,
                inter.widths,
            ):
                net.interaction = InteractionNet(widths, context=context)
        getattr(net, stage).load_state_dict(saved["model"])
        steps[stage] = {"steps": int(saved["step"]), "seconds": round(float(saved["elapsed"]), 1)}
        # the run's own start point; a checkpoint without its config (older runs) is taken
        # to continue ``base``. A stage trained from random weights over a base has none.
        init = saved["config"].get("init_weights", "") if "config" in saved else base
        if init:
            steps[stage]["fine_tuned_from"] = Path(init).name
        if "fusion_threshold" in saved:  # chosen on held-out real rounds (scorer stage)
            extra["fusion_threshold"] = float(saved["fusion_threshold"])
    return save_weights(net, weights, {"training": steps, **extra, **(meta or {})})


def ensemble(members: list[str | Path], weights: str | Path, meta: dict | None = None) -> Path:
    """One weights file whose interaction network is the ``InteractionEnsemble`` of the
    ``members``' interaction networks (one-network weights files); the memory network, the
    scorer and the fusion settings are the first member's."""
    from ..engine.model import load_model, save_weights, sha256

    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two weights files, got {len(members)}")
    models = [load_model(m, device="cpu") for m in members]
    for path, model in zip(members, models, strict=True):
        if not isinstance(model.net.interaction, InteractionNet):
            raise ValueError(f"{path} already holds an ensemble; give its member files")
    net = models[0].net
    nets = [m.net.interaction for m in models]
    net.interaction = InteractionEnsemble(
        [n.context_slices for n in nets], [n.widths for n in nets]
    )
    for member, n in zip(net.interaction.members, nets, strict=True):
        member.load_state_dict(n.state_dict())
    first = models[0].meta
    extra = _settings(first)
    # the memory network's and scorer's training as the first file gives it; the interaction
    # networks' under ``ensemble_of``, member by member
    steps = {k: v for k, v in first.get("training", {}).items() if k != "interaction"}
    info = [
        {
            "file": Path(p).name,
            "sha256": sha256(p),
            "interaction": m.meta.get("training", {}).get("interaction", {}),
        }
        for p, m in zip(members, models, strict=True)
    ]
    meta = {"training": steps, "ensemble_of": info, **extra, **(meta or {})}
    return save_weights(net, weights, meta)


def split_ensemble(weights: str | Path, out_dir: str | Path) -> list[Path]:
    """Each member of an ensemble weights file as a one-network weights file
    (``<stem>_member<k>.pt``, with the file's memory network and scorer), to fine-tune."""
    from ..engine.model import load_model, save_weights

    model = load_model(weights, device="cpu")
    if not isinstance(model.net.interaction, InteractionEnsemble):
        raise ValueError(f"{weights} holds one interaction network, not an ensemble")
    info = model.meta.get("ensemble_of", [])
    base = {k: v for k, v in model.meta.items() if k not in ("ensemble_of", "name")}
    paths = []
    net = model.net  # its memory network and scorer go with every member
    for k, member in enumerate(list(net.interaction.members)):
        net.interaction = member
        meta = {**base, "training": dict(base.get("training", {}))}
        if k < len(info):
            meta["training"]["interaction"] = info[k].get("interaction", {})
        paths.append(save_weights(net, Path(out_dir) / f"{Path(weights).stem}_member{k}.pt", meta))
    return paths
