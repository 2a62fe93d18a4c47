"""Training stacks cut from real labelled volumes, in the same window space as inference.

A bank is built once (on the training device) from a list of labelled volumes: each entry is a
stack of ``frames`` neighbouring slices of one labelled structure, cropped with
``engine.preprocess.resample`` (the inference code) around the structure's bounding box on the
first slice, at a random zoom. Slices are taken along every axis (the acquisition axis half
the time), which multiplies what a few volumes can teach.

Sampling balances sources, not volumes: a stack first draws a source (a volume's ``source``,
e.g. one data set) with probability proportional to the square root of the number of labelled
structures in it, then a volume of that source, then one of its structures. So 234 hippocampus
crops (two structures each) weigh about as much as 31 head-and-neck label maps with 20 organs
each, and a data set of one case still appears. A share of targets (``union_fraction``) is the
union of the structure and a neighbour touching it on the first slice: objects users outline
are often several labelled parts.

A volume without an image (``image`` None: a real label map whose scan is not available) gives
stacks flagged ``synth_only``: their intensities are always synthesised from the labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..engine.preprocess import MIN_SIDE_PX, resample


@dataclass
class LabelledVolume:
    image: np.ndarray | None  # (Z, Y, X) float32, axis 0 the slice axis; None: labels only
    labels: np.ndarray  # (Z, Y, X) integer label map (0 background)
    spacing: tuple[float, float, float]
    name: str = ""
    source: str = ""  # the data set it comes from (sampling balances sources)


@dataclass
class RealBank:
    image: torch.Tensor  # (N, T, S, S) float16 raw intensities
    target: torch.Tensor  # (N, T, S, S) bool
    # (N, T, S, S) int16 label map of each stack, labels renumbered 0 .. K-1 per stack (0 the
    # background; the target is one of them): only with ``build_bank(..., keep_labels=True)``
    labels: torch.Tensor | None = None
    # (N,) bool: stacks cut from a label map without image (their ``image`` is zeros); they
    # are always repainted from ``labels``. None: no such stack.
    synth_only: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.image.shape[0]


_SHARED: list[LabelledVolume] = []  # the volumes forked bank workers read (copy-on-write)


def _bank_part(args: tuple) -> tuple:
    torch.set_num_threads(1)
    n, seed, kwargs = args
    bank = build_bank(_SHARED, n, seed=seed, **kwargs)
    return bank.image, bank.target, bank.labels, bank.synth_only


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
    union_fraction: float = 0.0,
    workers: int = 0,
) -> RealBank:
    """``n`` random stacks (see the module docstring) from ``volumes``.

    ``end_fraction`` of the stacks are placed so that the structure ends inside the stack
    (after frame 1), with empty slices after its end: propagation must learn to stop there.
    ``keep_labels``: also keep every stack's whole label map (``RealBank.labels``, for
    ``synthetic.paint_labels``); it draws nothing more from the seed, so the stacks are the same.
    Volumes without an image need ``keep_labels``. ``union_fraction``: share of targets that
    are a structure together with a touching neighbour. ``workers`` > 1 cuts the stacks in
    that many forked processes (seeds ``seed`` .. ``seed + workers - 1``; another bank than
    one process cuts), for GPU machines whose many cores would otherwise wait.
    """
    if workers > 1:
        import multiprocessing as mp

        kwargs = {
            "frames": frames,
            "size": size,
            "min_voxels": min_voxels,
            "end_fraction": end_fraction,
            "keep_labels": keep_labels,
            "union_fraction": union_fraction,
        }
        sizes = [n // workers + (i < n % workers) for i in range(workers)]
        _SHARED[:] = volumes
        try:
            with mp.get_context("fork").Pool(workers) as pool:
                parts = pool.map(_bank_part, [(k, seed + i, kwargs) for i, k in enumerate(sizes)])
        finally:
            _SHARED.clear()
        dev = torch.device(device)
        image, target = (torch.cat([p[j] for p in parts]).to(dev) for j in (0, 1))
        labels = torch.cat([p[2] for p in parts]).to(dev) if keep_labels else None
        only = [
            p[3] if p[3] is not None else torch.zeros(len(p[0]), dtype=torch.bool) for p in parts
        ]
        synth_only = torch.cat(only).to(dev)
        return RealBank(image, target, labels, synth_only if bool(synth_only.any()) else None)
    rng = np.random.default_rng(seed)
    dev = torch.device(device)
    by_source: dict[str, list[_Prepared]] = {}
    for v in volumes:
        if v.image is None and not keep_labels:
            continue  # nothing to train on without synthesised intensities
        prep = _Prepared.of(v, min_voxels)
        if prep.keep:
            by_source.setdefault(v.source or v.name, []).append(prep)
    if not by_source:
        raise ValueError("no labelled structure large enough to train on")
    sources = list(by_source)
    weight = np.array([np.sqrt(sum(len(e.keep) for e in by_source[s])) for s in sources])
    weight = weight / weight.sum()
    images = torch.zeros(n, frames, size, size, dtype=torch.float16, device=dev)
    targets = torch.zeros(n, frames, size, size, dtype=torch.bool, device=dev)
    labels = (
        torch.zeros(n, frames, size, size, dtype=torch.int16, device=dev) if keep_labels else None
    )
    synth_only = torch.zeros(n, dtype=torch.bool, device=dev)
    filled = 0
    while filled < n:
        entries = by_source[sources[rng.choice(len(sources), p=weight)]]
        vol = entries[rng.integers(len(entries))]
        axis = 0 if rng.random() < 0.5 else int(rng.integers(3))
        if vol.image is None and not _fine_plane(vol.spacing, axis):
            axis = 0  # a label map cut across thick slices is a staircase: keep its own plane
        if vol.labels.shape[axis] < frames:
            continue
        order = [axis] + [a for a in range(3) if a != axis]
        lab_p = vol.labels.transpose(order)
        values = [vol.keep[rng.integers(len(vol.keep))]]
        sp = [vol.spacing[a] for a in order]
        area = vol.area(values, axis)
        if area.max() < 4:
            continue
        p = np.sqrt(area)
        z = int(rng.choice(len(area), p=p / p.sum()))
        if rng.random() < union_fraction:
            nb = _neighbour(lab_p[z], values[0], rng)
            if nb is not None and nb in vol.boxes:
                values.append(nb)
                area = vol.area(values, axis)
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
        lab_stack = np.ascontiguousarray(lab_p[zs])
        obj = np.isin(lab_stack, values)
        ys, xs = np.nonzero(obj[0])
        y0, y1 = int(ys.min()), int(ys.max())
        x0, x1 = int(xs.min()), int(xs.max())
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
        if vol.image is not None:
            stack = torch.as_tensor(
                np.ascontiguousarray(vol.image.transpose(order)[zs]), device=dev
            )[:, None]
            images[filled] = (resample(stack, *args, size=size)[:, 0] * vol.scale).half()
        else:
            images[filled] = 0
        obj_t = torch.as_tensor(obj, device=dev)
        m = resample(obj_t[:, None].float(), *args, size=size, padding="zeros")[:, 0]
        targets[filled] = m > 0.5
        if targets[filled, 0].sum() < 4:
            continue
        if labels is not None:
            lab_t = torch.as_tensor(lab_stack.astype(np.int32), device=dev)
            labels[filled] = _label_crop(lab_t, values[0], targets[filled], args)
        synth_only[filled] = vol.image is None
        filled += 1
    return RealBank(images, targets, labels, synth_only if bool(synth_only.any()) else None)


@dataclass
class _Prepared:
    """A volume ready for cutting: its structures' bounding boxes, found once."""

    image: np.ndarray | None
    labels: np.ndarray
    spacing: tuple[float, float, float]
    keep: list[int]  # the structures large enough to train on
    boxes: dict[int, tuple[slice, ...]]  # every structure's bounding box
    scale: float  # intensity factor that keeps the float16 bank finite

    @classmethod
    def of(cls, v: LabelledVolume, min_voxels: int) -> _Prepared:
        lab = np.ascontiguousarray(v.labels)
        if lab.dtype.kind not in "iu" or lab.min(initial=0) < 0:
            lab = lab.astype(np.int64).clip(0)
        counts = np.bincount(lab.ravel())
        found = ndimage.find_objects(lab)
        boxes = {i + 1: b for i, b in enumerate(found) if b is not None}
        keep = [int(a) for a in np.nonzero(counts >= min_voxels)[0] if a != 0]
        scale = 1.0
        if v.image is not None:
            peak = float(np.abs(v.image).max())
            if peak > 30000:  # (MR in arbitrary units): the networks normalise per crop
                scale = 30000 / peak
        return cls(v.image, lab, v.spacing, keep, boxes, scale)

    def area(self, values: list[int], axis: int) -> np.ndarray:
        """Pixels of ``values`` on each slice normal to ``axis`` (float, full length)."""
        box = [
            slice(
                min(self.boxes[v][a].start for v in values),
                max(self.boxes[v][a].stop for v in values),
            )
            for a in range(3)
        ]
        sub = np.isin(self.labels[tuple(box)], values)
        other = tuple(a for a in range(3) if a != axis)
        out = np.zeros(self.labels.shape[axis], np.float64)
        out[box[axis]] = sub.sum(other)
        return out


def _fine_plane(spacing: tuple[float, float, float], axis: int) -> bool:
    """The plane normal to ``axis`` has spacings within a factor 1.5 of each other."""
    a, b = (spacing[i] for i in range(3) if i != axis)
    return max(a, b) <= 1.5 * min(a, b)


def _neighbour(lab: np.ndarray, value: int, rng: np.random.Generator) -> int | None:
    """A structure touching ``value`` on the 2D label slice ``lab`` (None if none does)."""
    obj = torch.as_tensor(lab == value)[None, None].float()
    ring = (F.max_pool2d(obj, 5, 1, 2)[0, 0] > 0).numpy() & (lab != value)
    near = [int(v) for v in np.unique(lab[ring]) if v not in (0, value)]
    return near[rng.integers(len(near))] if near else None


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
