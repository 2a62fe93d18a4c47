"""The training loop of the three LIM-Net networks (``limnet train``): one generic loop,
:func:`train_stage`, that calls the stage's own step.

Each network trains in its own stage (they can run one after another, or as parallel
processes sharing one GPU), on a mix of synthetic stacks (``synthetic.generate``) and stacks
cut from the real training cases (``real_bank``):

- interaction (``interaction.step``): RITM-style iterative clicks. Per batch, a first click near the object's
  centre (or a box), optionally a start from an imperfect existing mask, then 0-4 rounds
  without gradient that add a click on the largest error and feed the prediction back as the
  previous mask; the last round is trained.
- memory (``memory.step``): propagation over stacks of ``frames`` slices from an imperfect first-slice mask,
  each prediction fed back into the memory as at inference.
- scorer (``scorer.step``): which of two imperfect masks of a slice is better (multi-round
  fusion).

The stage runs for a wall-clock budget (``seconds``) or a number of steps, writes
checkpoints (resumable) and a JSON-lines log; ``weights.export`` combines the stage
checkpoints into the weights file the engine loads. The options are in ``config``, the
batches in ``batches``, the loss in ``losses``. With ``torchrun`` (WORLD_SIZE > 1) it uses
DistributedDataParallel (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..engine.networks import CROP, InteractionEnsemble, LimNet
from . import interaction, memory, scorer
from .batches import Batches, FixedBatches, case_volumes, is_npz_folder, load_training_volumes
from .config import STAGE_CONFIGS, STAGES, ScorerConfig, StageConfig, TrainConfig
from .real_bank import RealBank, build_bank
from .weights import with_context

REWARM_STEPS = 100  # learning-rate warm-up after resuming without optimizer state
STEP = {"interaction": interaction.step, "memory": memory.step, "scorer": scorer.step}


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the engine's choice (CUDA, then MPS, then CPU); else the named device."""
    from ..engine.model import pick_device as engine_pick

    return engine_pick(None if name == "auto" else name)


# --- data ------------------------------------------------------------------------------------


def _validation_bank(cfg: TrainConfig, scfg: StageConfig, device: torch.device):
    if cfg.validate_every <= 0 or not cfg.cases:
        return None
    if is_npz_folder(cfg.cases):  # no validation cases in it
        return None
    vols = case_volumes(cfg.cases, cfg.split, "validation")
    if not vols:
        return None
    return build_bank(vols, cfg.val_stacks, max(scfg.frames, 1), CROP, 12345, device)


@torch.no_grad()
def _validate(net: nn.Module, stage: str, bank: RealBank, scfg: StageConfig, amp) -> dict:
    """The stage's own step (same clicks, rounds and losses, from a fixed seed) on ``bank``."""
    data = FixedBatches(bank, bank.image.device)
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
    if not isinstance(scfg, STAGE_CONFIGS[stage]):
        raise ValueError(
            f"the {stage} stage's options must be a {STAGE_CONFIGS[stage].__name__} "
            f"(config.stage_config), not a {type(scfg).__name__}"
        )
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
                "members as weights files of their own with training.weights.split_ensemble "
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
    if stage == "memory":  # ``load_model`` runs it channels-last on the CPU: not for training
        net = net.to(memory_format=torch.contiguous_format)
    # oneDNN's bf16 convolutions are faster in NHWC. Not for the memory network: its bf16
    # backward in channels-last corrupts the heap on the CPU (torch 2.13: "double free" or a
    # segfault within two steps), while in the default layout it trains.
    if device.type == "cpu" and cfg.cpu_bf16 and stage == "interaction":
        net = net.to(memory_format=torch.channels_last)
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
    model = nn.parallel.DistributedDataParallel(net) if world > 1 and not ddp_grads else net
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
    if isinstance(scfg, ScorerConfig) and scfg.round_pairs > 0:
        data.pairs, held_out = scorer.round_pairs(cfg, scfg, out)
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
        extra = scorer.choose_threshold(net, held_out, device)
        if log:
            log.write(json.dumps({"step": step, **extra}) + "\n")
            log.flush()
    save(extra)
    if progress and rank == 0:
        print(file=sys.stderr)
    if world > 1:
        dist.barrier()
    return ckpt


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
