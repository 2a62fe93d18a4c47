"""Running the networks on full-resolution slices: the 2D prompt step, propagation, fusion.

All functions take numpy slices at the volume's own resolution and return full-resolution
bool masks; the windows, resampling and intensity normalisation of ``preprocess`` happen here.
Call them under ``torch.inference_mode()`` (the session does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .fusion import FusionRule
from .networks import CROP
from .preprocess import (
    IntensityNorm,
    Window,
    box_map,
    click_maps,
    crop_slice,
    norm_stats,
    normalise,
    shrink_mask,
    stats_of,
    to_crop_coords,
    uncrop_logits,
    window_around,
)
from .prompts import SlicePrompts, fill_polygon

WIDE_SIDE_MM = 160.0  # first-click window: wide enough for an organ, fine enough for a lesion
MAX_PASSES = 3  # zoom-in passes of the 2D step
RECENT = 2  # propagated slices kept in memory besides the permanent ones
# Crop pixels the neighbouring slice's mask is shrunk by before it guides the next slice.
# The memory network leans on that mask and tends to copy it past the object's end; shrunk,
# it must be regrown from the image, so propagation fades out where the image gives no
# support (one-click 3D Dice on validation objects: hippocampus 0.11 -> 0.28, pulmonary artery
# 0.22 -> 0.39, a CT lesion 0.51 -> 0.60; 3 and 4 cut large tumours short).
PREV_ERODE = 2


@dataclass
class SliceResult:
    mask: np.ndarray  # bool (Y, X)
    window: Window
    norm: IntensityNorm


def _full_mask(logits: torch.Tensor, window: Window, spacing_yx, shape) -> np.ndarray:
    prob, (sy, sx) = uncrop_logits(logits, window, spacing_yx, shape)
    out = np.zeros(shape, bool)
    out[sy, sx] = prob > 0.5
    return out


def _ref_region(pos_yx: np.ndarray, size: int = CROP, radius: float = 3.0) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float32)
    region = torch.zeros(size, size, dtype=torch.bool)
    for y, x in pos_yx:
        region |= ((r[:, None] - y) ** 2 + (r[None, :] - x) ** 2) <= radius**2
    return region[None, None]


def segment_slice(
    model,
    image: np.ndarray,
    spacing_yx: tuple[float, float],
    prompts: SlicePrompts,
    prev: np.ndarray | None,
    neighbours: Callable[[int], list[np.ndarray]] | None = None,
    size_hint: np.ndarray | None = None,
) -> SliceResult:
    """The interaction network on one slice: all its prompts + its previous mask -> mask.

    The first window is wide when nothing is known about the object's size, then the window
    zooms in around the predicted mask (up to ``MAX_PASSES`` passes, the prediction fed back
    as the previous mask), so organs and small lesions are both seen at a useful scale.
    ``neighbours(c)``: the slices z-c .. z-1, z+1 .. z+c (``neighbour_slices``), called only
    for a network with ``context_slices`` c > 0 (a 2.5D input), so others read no more slices.
    ``size_hint``: the object's mask on another slice (bool (Y, X)); on a slice with no
    previous mask and no box, the first window takes the size of that mask's window instead
    of the wide one, centred on the clicks.
    """
    dev = model.device
    net = model.net.interaction
    context = net.context_slices
    nbs: list[np.ndarray] = []
    if context:
        nbs = list(neighbours(context)) if neighbours is not None else []
        if len(nbs) != 2 * context:
            raise ValueError(f"this network needs {2 * context} neighbouring slices")
    shape = image.shape
    clicks = np.array([(y, x) for y, x, _ in prompts.clicks], dtype=np.float64).reshape(-1, 2)
    signs = np.array([p for _, _, p in prompts.clicks], dtype=bool)
    rects = np.array(prompts.boxes, dtype=np.float64).reshape(-1, 4)
    # a lasso counts as its bounding box for the windows; the channel gets its filled polygon
    lasso = np.zeros(shape, bool)
    lasso_boxes = []
    for region in prompts.regions:
        v = np.asarray(region, dtype=np.float64).reshape(-1, 2)
        lasso |= fill_polygon(v, shape)
        lasso_boxes.append((v[:, 0].min(), v[:, 1].min(), v[:, 0].max(), v[:, 1].max()))
    boxes = np.concatenate([rects, np.array(lasso_boxes, dtype=np.float64).reshape(-1, 4)])
    has_prev = prev is not None and bool(prev.any())
    pts_y = [clicks[:, 0]] + [boxes[:, 0], boxes[:, 2]]
    pts_x = [clicks[:, 1]] + [boxes[:, 1], boxes[:, 3]]
    if has_prev:
        py, px = np.nonzero(prev)
        pts_y.append(py)
        pts_x.append(px)
    ys, xs = np.concatenate(pts_y), np.concatenate(pts_x)
    if ys.size == 0:
        raise ValueError("a prompted slice needs at least one click or box")
    if len(boxes) or has_prev:
        window = window_around(ys, xs, spacing_yx)
    elif size_hint is not None and size_hint.any():
        # The object's size is known from another slice: a thin or small object seen
        # through the wide window comes out several times too large.
        hy, hx = np.nonzero(size_hint)
        side = window_around(hy, hx, spacing_yx).side_mm
        window = window_around(ys, xs, spacing_yx, min_side_mm=side)
    else:
        extent = max(shape[0] * spacing_yx[0], shape[1] * spacing_yx[1])
        window = window_around(ys, xs, spacing_yx, min_side_mm=min(WIDE_SIDE_MM, extent))
    prev_full = prev.astype(np.float32) if has_prev else None
    for n in range(MAX_PASSES):
        raw = crop_slice(image, window, spacing_yx, dev)
        cy, cx = to_crop_coords(clicks[:, 0], clicks[:, 1], window, spacing_yx)
        pts = torch.tensor(np.stack([cy, cx], 1), dtype=torch.float32, device=dev)[None]
        sg = torch.tensor(signs, device=dev)[None]
        by0, bx0 = to_crop_coords(boxes[:, 0], boxes[:, 1], window, spacing_yx)
        by1, bx1 = to_crop_coords(boxes[:, 2], boxes[:, 3], window, spacing_yx)
        if prev_full is not None:
            pm = crop_slice(prev_full, window, spacing_yx, dev, is_mask=True)
        else:
            pm = torch.zeros(1, 1, CROP, CROP, device=dev)
        if signs.any():
            ref = _ref_region(np.stack([cy, cx], 1)[signs]).to(dev)
        elif prev_full is not None:
            ref = pm > 0.5
        else:  # a box alone: its centre region
            c = np.stack([(by0 + by1) / 2, (bx0 + bx1) / 2], 1)
            ref = _ref_region(c, radius=max(3.0, float(np.min(np.abs(by1 - by0))) / 4)).to(dev)
        stats = norm_stats(raw, ref)
        x_img = normalise(raw, stats)
        extra = [normalise(crop_slice(nb, window, spacing_yx, dev), stats) for nb in nbs]
        pos = click_maps(pts, sg)
        neg = click_maps(pts, ~sg)
        n_rect = len(rects)
        if n_rect:
            bt = torch.tensor(
                np.stack([by0, bx0, by1, bx1], 1)[:n_rect], dtype=torch.float32, device=dev
            )
            bmap = box_map(bt[None], torch.ones(1, n_rect, dtype=torch.bool, device=dev))
        else:
            bmap = torch.zeros(1, 1, CROP, CROP, device=dev)
        if prompts.regions:
            fill = crop_slice(lasso.astype(np.float32), window, spacing_yx, dev, is_mask=True)
            bmap = torch.maximum(bmap, (fill > 0.5).float())
        logits = net(torch.cat([x_img, pos, neg, bmap, pm, *extra], 1))
        mask = _full_mask(logits, window, spacing_yx, shape)
        norm = IntensityNorm(*(float(v) for v in stats[0]))
        if not mask.any() or n == MAX_PASSES - 1:
            break
        my, mx = np.nonzero(mask)
        nxt = window_around(
            np.concatenate([my, clicks[:, 0], boxes[:, 0], boxes[:, 2]]),
            np.concatenate([mx, clicks[:, 1], boxes[:, 1], boxes[:, 3]]),
            spacing_yx,
        )
        # Zoom in when the object is much smaller than the window. Only a first click (nothing
        # known of the object's size) zooms out: a correction's window already holds the
        # previous mask and the clicks, and a mask that outgrows it is mostly a leak, which a
        # wider pass fed with that mask made worse (docs/decisions.md, "2D step: windows and
        # zoom").
        grows = nxt.side_mm > window.side_mm
        if 0.6 * window.side_mm <= nxt.side_mm and (not grows or has_prev):
            break
        window = nxt
        prev_full = mask.astype(np.float32)
    return SliceResult(_drop_hit_parts(mask, clicks, signs), window, norm)


def neighbour_slices(volume, z: int, context: int) -> list[np.ndarray]:
    """Slices z-c .. z-1, z+1 .. z+c of ``volume`` (``.slice(z)``, ``.shape``) for a 2.5D
    interaction network; past the volume's ends the edge slice is repeated."""
    nz = volume.shape[0]
    zs = [*range(z - context, z), *range(z + 1, z + context + 1)]
    return [volume.slice(min(max(k, 0), nz - 1)) for k in zs]


def _drop_hit_parts(mask: np.ndarray, clicks: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Drop each connected part of the mask that holds a negative click and no positive one.

    A negative click on a part with no positive click says "this is not the object"; the
    network does not always obey it, so the rule is applied here. Parts that also hold a
    positive click are left to the network (the user is trimming, not removing).
    """
    if not (~signs).any() or not mask.any():
        return mask
    from scipy import ndimage

    lab, _ = ndimage.label(mask)
    idx = np.clip(np.round(clicks).astype(int), 0, np.array(mask.shape) - 1)
    at = lab[idx[:, 0], idx[:, 1]]
    keep = set(at[signs & (at > 0)].tolist())
    drop = {v for v in at[~signs & (at > 0)].tolist() if v not in keep}
    if not drop:
        return mask
    return mask & ~np.isin(lab, list(drop))


def _touching_parts(mask: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """The connected parts of a propagated mask that touch the neighbouring slice's mask.

    An object continues from slice to slice, so a part with no contact with the mask it was
    propagated from is a neighbouring structure the network picked up (another vessel, a bowel
    loop). If no part touches, the mask is left as it is (a thin object that moved).
    """
    from scipy import ndimage

    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return mask
    # the mask's bounding box with a one-pixel margin, so prev's dilation sees its neighbours
    box = (
        slice(max(ys.min() - 1, 0), ys.max() + 2),
        slice(max(xs.min() - 1, 0), xs.max() + 2),
    )
    sub = mask[box]
    lab, n = ndimage.label(sub)
    if n <= 1:
        return mask
    ref = ndimage.binary_dilation(prev[box], np.ones((3, 3), bool))  # 8-neighbourhood
    hit = np.unique(lab[ref & sub])
    hit = hit[hit > 0]
    if hit.size == 0 or hit.size == n:
        return mask
    out = mask.copy()
    out[box] = np.isin(lab, hit)
    return out


def norm_of_mask(
    image: np.ndarray, mask: np.ndarray, spacing_yx: tuple[float, float]
) -> IntensityNorm:
    """The intensity normalisation of a slice whose mask is known (as in memory training)."""
    ys, xs = np.nonzero(mask)
    window = window_around(ys, xs, spacing_yx)
    raw = crop_slice(image, window, spacing_yx, "cpu")
    pm = crop_slice(mask.astype(np.float32), window, spacing_yx, "cpu", is_mask=True)
    stats = norm_stats(raw, shrink_mask(pm, 1) > 0.5)
    return IntensityNorm(*(float(v) for v in stats[0]))


class Propagator:
    """Carries a mask slice by slice with the memory network (one direction of one round)."""

    def __init__(self, model, spacing_yx: tuple[float, float], norm: IntensityNorm) -> None:
        self.model = model
        self.net = model.net.memory
        self.dev = model.device
        self.spacing_yx = spacing_yx
        self.stats = stats_of(norm, self.dev)
        self.permanent: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.recent: list[tuple[torch.Tensor, torch.Tensor]] = []
        # the last step's encoding (x, key, skips, window), reused when that slice is remembered
        self._last: tuple | None = None
        # the last step's mean probability over the pixels it put in the mask (0: none)
        self.confidence = 0.0

    def _window(self, mask: np.ndarray) -> Window:
        ys, xs = np.nonzero(mask)
        return window_around(ys, xs, self.spacing_yx)

    def _encode(
        self, image: np.ndarray, window: Window
    ) -> tuple[torch.Tensor, torch.Tensor, list]:
        raw = crop_slice(image, window, self.spacing_yx, self.dev)
        x = normalise(raw, self.stats)
        key, skips = self.net.encode_key(x)
        return x, key, skips

    def remember(self, image: np.ndarray, mask: np.ndarray, pinned: bool = False) -> None:
        """Add a slice and its final mask to the memory (reuses the last step's encoding)."""
        if not mask.any():
            return
        if self._last is not None and not pinned:
            x, key, skips, window = self._last
        else:
            window = self._window(mask)
            x, key, skips = self._encode(image, window)
        m = crop_slice(mask.astype(np.float32), window, self.spacing_yx, self.dev, is_mask=True)
        value = self.net.encode_value(x, m, skips[3])
        if pinned:
            self.permanent.append((key, value))
        else:
            self.recent = (self.recent + [(key, value)])[-RECENT:]
        self._last = None

    def remember_empty(self, image: np.ndarray, ref: np.ndarray) -> None:
        """Pin a slice the user marked as holding none of the object (encoded in ref's window)."""
        window = self._window(ref)
        x, key, skips = self._encode(image, window)
        m = torch.zeros(1, 1, CROP, CROP, device=self.dev)
        self.permanent.append((key, self.net.encode_value(x, m, skips[3])))
        self._last = None

    def step(self, image: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """The mask of the next slice ``image``, given the neighbouring slice's mask ``prev``
        (``confidence`` then holds how sure the network was of it)."""
        window = self._window(prev)
        x, key, skips = self._encode(image, window)
        self._last = (x, key, skips, window)
        mem = self.permanent + self.recent
        mkeys = torch.stack([k for k, _ in mem], 1)
        mvals = torch.stack([v for _, v in mem], 1)
        readout = self.net.read_memory(key, mkeys, mvals)
        pm = crop_slice(prev.astype(np.float32), window, self.spacing_yx, self.dev, is_mask=True)
        logits = self.net.segment(readout, skips, shrink_mask(pm, PREV_ERODE))
        prob = torch.sigmoid(logits.float())
        inside = prob > 0.5
        self.confidence = float(prob[inside].mean()) if bool(inside.any()) else 0.0
        return _touching_parts(_full_mask(logits, window, self.spacing_yx, prev.shape), prev)

    def prefer_previous(
        self,
        image: np.ndarray,
        old: np.ndarray,
        new: np.ndarray,
        grow: bool,
        rule: FusionRule,
    ) -> bool:
        """Fusion: True when the slice keeps the previous round's mask, by ``rule``
        (:class:`~napari_limnet.engine.fusion.FusionRule`; ``grow``: the round's click asked
        for more)."""
        if np.array_equal(old, new):
            return False
        if rule.keeps_by_area(np.count_nonzero(old), np.count_nonzero(new), grow):
            return True
        if not rule.runs_scorer:
            return False
        union = old | new
        ys, xs = np.nonzero(union)
        window = window_around(ys, xs, self.spacing_yx)
        raw = crop_slice(image, window, self.spacing_yx, self.dev)
        x = normalise(raw, self.stats)
        po = crop_slice(old.astype(np.float32), window, self.spacing_yx, self.dev, is_mask=True)
        pn = crop_slice(new.astype(np.float32), window, self.spacing_yx, self.dev, is_mask=True)
        po, pn = (po > 0.5).float(), (pn > 0.5).float()
        prob = float(torch.sigmoid(self.model.net.scorer(x, po, pn))[0])
        if rule.probe is not None:
            rule.probe(old, new, x, po, pn, prob)
        return prob > rule.scorer_threshold
