"""Training stacks cut from real labelled volumes, in the same window space as inference.

A bank is built once (on the training device) from a list of labelled volumes: each entry is a
stack of ``frames`` neighbouring slices of one labelled structure, cropped with
``engine.preprocess.resample`` (the inference code) around the structure's bounding box on the
first slice, at a random zoom. Slices are taken along every axis (the acquisition axis half
the time), which multiplies what a few volumes can teach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..engine.preprocess import MIN_SIDE_PX, resample


@dataclass
class LabelledVolume:
    image: np.ndarray  # (Z, Y, X) float32, axis 0 the acquisition's slice axis
    labels: np.ndarray  # (Z, Y, X) integer label map (0 background)
    spacing: tuple[float, float, float]
    name: str = ""


@dataclass
class RealBank:
    image: torch.Tensor  # (N, T, S, S) float16 raw intensities
    target: torch.Tensor  # (N, T, S, S) bool
    # (N, T, S, S) int16 label map of each stack, labels renumbered 0 .. K-1 per stack (0 the
    # background; the target is one of them): only with ``build_bank(..., keep_labels=True)``
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.image.shape[0]


def build_bank(
    volumes: list[LabelledVolume],
    n: int,
    frames: int,
    size: int,
    seed: int,
    device: torch.device | str = "cpu",
    min_voxels: int = 150,
    end_fraction: float = 0.0,
    keep_labels: bool = False,
) -> RealBank:
    """``n`` random stacks (see the module docstring) from ``volumes``.

    ``end_fraction`` of the stacks are placed so that the structure ends inside the stack
    (after frame 1), with empty slices after its end: propagation must learn to stop there.
    ``keep_labels``: also keep every stack's whole label map (``RealBank.labels``, for
    ``synthetic.paint_labels``); it draws nothing more from the seed, so the stacks are the same.
    """
    rng = np.random.default_rng(seed)
    dev = torch.device(device)
    prepared = []
    for v in volumes:
        values, counts = np.unique(v.labels, return_counts=True)
        keep = [int(a) for a, c in zip(values, counts, strict=True) if a != 0 and c >= min_voxels]
        if keep:
            img = torch.as_tensor(v.image.astype(np.float32), device=dev)
            lab = torch.as_tensor(v.labels.astype(np.int32), device=dev)
            prepared.append((img, lab, v.spacing, keep))
    if not prepared:
        raise ValueError("no labelled structure large enough to train on")
    images = torch.zeros(n, frames, size, size, dtype=torch.float16, device=dev)
    targets = torch.zeros(n, frames, size, size, dtype=torch.bool, device=dev)
    labels = (
        torch.zeros(n, frames, size, size, dtype=torch.int16, device=dev) if keep_labels else None
    )
    filled = 0
    while filled < n:
        img, lab, spacing, keep = prepared[rng.integers(len(prepared))]
        axis = 0 if rng.random() < 0.5 else int(rng.integers(3))
        order = [axis] + [a for a in range(3) if a != axis]
        if img.shape[axis] < frames:
            continue
        vol = img.permute(*order)
        value = keep[rng.integers(len(keep))]
        obj = lab.permute(*order) == value
        sp = [spacing[a] for a in order]
        area = obj.sum((1, 2)).float().cpu().numpy()
        if area.max() < 4:
            continue
        p = np.sqrt(area)
        z = int(rng.choice(len(area), p=p / p.sum()))
        step = 1 if rng.random() < 0.5 else -1
        if rng.random() < end_fraction:  # start 1..frames-2 slices before the last one
            nz = np.nonzero(area >= 1)[0]
            last = int(nz.max()) if step == 1 else int(nz.min())
            z = last - step * int(rng.integers(1, max(2, frames - 1)))
            inside = 0 <= z < len(area) and 0 <= z + step * (frames - 1) < len(area)
            if not inside or area[z] < 4:  # (never turned round: it must run past the end)
                continue
        if not 0 <= z + step * (frames - 1) < len(area):
            step = -step
            if not 0 <= z + step * (frames - 1) < len(area):
                continue
        zs = [z + step * i for i in range(frames)]
        ys, xs = torch.nonzero(obj[z], as_tuple=True)
        y0, y1 = ys.min().item(), ys.max().item()
        x0, x1 = xs.min().item(), xs.max().item()
        zoom = math.exp(rng.uniform(math.log(1.2), math.log(4.0)))
        if rng.random() < 0.15:
            zoom *= rng.uniform(1.5, 3.0)  # wide first-click windows
        side = max((y1 - y0 + 1) * sp[1], (x1 - x0 + 1) * sp[2]) * zoom
        side = max(side, MIN_SIDE_PX * min(sp[1], sp[2]))
        cy = (y0 + y1) / 2 + rng.uniform(-0.15, 0.15) * side / sp[1]
        cx = (x0 + x1) / 2 + rng.uniform(-0.15, 0.15) * side / sp[2]
        args = [
            torch.full((frames,), float(a), device=dev)
            for a in (cy, cx, side / sp[1], side / sp[2])
        ]
        stack = vol[zs][:, None]
        images[filled] = resample(stack, *args, size=size)[:, 0].half()
        m = resample(obj[zs][:, None].float(), *args, size=size, padding="zeros")[:, 0]
        targets[filled] = m > 0.5
        if targets[filled, 0].sum() < 4:
            continue
        if labels is not None:
            labels[filled] = _label_crop(lab.permute(*order)[zs], value, targets[filled], args)
        filled += 1
    return RealBank(images, targets, labels)


def _label_crop(lab: torch.Tensor, value: int, target: torch.Tensor, args) -> torch.Tensor:
    """The stack's label map in the crop (nearest neighbour), its target pixels exactly the
    target's, renumbered 0 .. K-1 (background stays 0)."""
    crop = resample(
        lab[:, None].float(), *args, size=target.shape[-1], mode="nearest", padding="zeros"
    )
    crop = crop[:, 0]
    crop = crop.round().long()
    crop = torch.where(crop == value, torch.zeros_like(crop), crop)
    crop = torch.where(target, torch.full_like(crop, value), crop)
    _, inverse = torch.unique(crop, return_inverse=True)
    if not bool((crop == 0).any()):  # keep 0 for the background even where none is in view
        inverse = inverse + 1
    return inverse.to(torch.int16)
