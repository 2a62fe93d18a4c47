"""Weights surgery: stage checkpoints into weights files, ensembles and their members, a
network widened to a 2.5D input, compact checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

from ..engine.networks import (
    FIRST_CONV,
    InteractionEnsemble,
    InteractionNet,
    LimNet,
    context_of,
    widths_of,
)
from .config import STAGES


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
