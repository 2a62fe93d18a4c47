"""Batched torch helpers for training: imperfect masks and clicks on error regions.

``error_clicks`` is the GPU-friendly training form of the simulated annotator
(``evaluation.annotator``): the larger of the missed / extra areas gets a click at its most
interior point. Interior is measured with a chessboard distance (repeated 3x3 erosions) and a
little noise is added so that training also sees clicks a human would place off-centre; the
exact Euclidean, largest-connected-region protocol is used for evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def erode(x: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Binary erosion of (B, 1, H, W) float masks by k pixels; the border counts as outside."""
    for _ in range(k):
        x = 1 - _max3x3(1 - x, 1.0)
    return x


def dilate(x: torch.Tensor, k: int = 1) -> torch.Tensor:
    for _ in range(k):
        x = _max3x3(x, 0.0)
    return x


def _max3x3(x: torch.Tensor, pad: float) -> torch.Tensor:
    """3 x 3 max filter of (B, 1, H, W) with a constant border: the same as ``max_pool2d``
    on the padded input, done as two separable maxima of shifted views (several times
    faster on a CPU, where these filters took a sixth of a training step)."""
    p = F.pad(x, (1, 1, 1, 1), value=pad)
    r = torch.maximum(torch.maximum(p[..., :-2, :], p[..., 1:-1, :]), p[..., 2:, :])
    return torch.maximum(torch.maximum(r[..., :-2], r[..., 1:-1]), r[..., 2:])


def interior_distance(x: torch.Tensor, steps: int = 24) -> torch.Tensor:
    """Chessboard distance to the outside (capped at ``steps``) of (B, 1, H, W) masks."""
    d = torch.zeros_like(x)
    cur = x
    for _ in range(steps):
        d = d + cur
        cur = erode(cur)
        if not bool(cur.any()):
            break
    return d


def error_clicks(
    gt: torch.Tensor, pred: torch.Tensor, g: torch.Generator, jitter: float = 1.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One corrective click per sample. gt, pred: (B, 1, H, W) bool.

    Returns points (B, 2) (y, x) float, positive (B,) bool, valid (B,) bool (False where the
    prediction is already perfect).
    """
    fn = (gt & ~pred).float()
    fp = (pred & ~gt).float()
    positive = fn.sum((1, 2, 3)) >= fp.sum((1, 2, 3))
    err = torch.where(positive[:, None, None, None], fn, fp)
    valid = err.sum((1, 2, 3)) > 0
    return _interior_point(err, g, jitter) + (positive, valid)


def first_clicks(gt: torch.Tensor, g: torch.Generator, jitter: float = 2.0) -> torch.Tensor:
    """A positive click inside each object, near its most interior point: (B, 2) (y, x)."""
    return _interior_point(gt.float(), g, jitter)[0]


def random_inside(gt: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A point drawn uniformly inside each (B, 1, H, W) mask, at any depth: (B, 2) (y, x)."""
    b, _, h, w = gt.shape
    score = torch.rand(gt.shape, generator=g, device=gt.device)
    score = torch.where(gt > 0, score, torch.full_like(score, -1.0))
    idx = score.view(b, -1).argmax(1)
    return torch.stack([(idx // w).float(), (idx % w).float()], 1)


def scribbles(
    gt: torch.Tensor, g: torch.Generator, points: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """A positive stroke inside each (B, 1, H, W) mask, as the engine draws a scribble.

    The stroke joins two random points inside the object; the parts of it that leave the
    object are dropped. Returns points (B, points, 2) (y, x), spaced at most about one click
    radius apart so their click-map disks merge into a line, and valid (B, points).
    """
    a = random_inside(gt, g)
    b = random_inside(gt, g)
    t = torch.linspace(0, 1, points, device=gt.device)
    pts = a[:, None] + t[None, :, None] * (b - a)[:, None]
    h, w = gt.shape[-2:]
    iy = pts[..., 0].round().long().clamp(0, h - 1)
    ix = pts[..., 1].round().long().clamp(0, w - 1)
    inside = gt[torch.arange(gt.shape[0], device=gt.device)[:, None], 0, iy, ix] > 0
    return pts, inside


def lassos(gt: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Rough filled outlines around each (B, 1, H, W) mask: (B, 1, H, W) float.

    A lasso is drawn loosely: the object, corrupted (grown, shifted, blobs), then grown by
    1 to 5 pixels, so it holds most of the object and some of its surroundings.
    """
    x = corrupt(gt, g, 1.0).float()
    k = torch.randint(1, 6, (gt.shape[0],), generator=g, device=gt.device)
    out = x
    for i in range(5):
        out = torch.where((k > i)[:, None, None, None], dilate(out, 1), out)
    return out


def _interior_point(
    region: torch.Tensor, g: torch.Generator, jitter: float
) -> tuple[torch.Tensor]:
    b, _, h, w = region.shape
    d = interior_distance(region)
    noise = torch.rand(d.shape, generator=g, device=d.device) * jitter
    score = torch.where(region > 0, d + noise, torch.full_like(d, -1.0))
    idx = score.view(b, -1).argmax(1)
    return (torch.stack([(idx // w).float(), (idx % w).float()], 1),)


def corrupt(mask: torch.Tensor, g: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Imperfect versions of (B, 1, H, W) bool masks: grown / shrunk, shifted, blobs added or cut.

    ``strength`` scales how wrong they get; imitates a 2D prediction or a drifting propagation.
    """
    b, _, h, w = mask.shape
    dev = mask.device
    x = mask.float()
    k = torch.randint(-3, 4, (b,), generator=g, device=dev)
    k = (k.float() * strength).round().long()
    for i in range(1, 4):  # per-sample erosion / dilation by |k| pixels
        grow = dilate(x, 1)
        shrink = erode(x, 1)
        x = torch.where((k >= i)[:, None, None, None], grow, x)
        x = torch.where((k <= -i)[:, None, None, None], shrink, x)
    shift = (torch.randn(b, 2, generator=g, device=dev) * 2.0 * strength).round().long()
    rolled = torch.stack([torch.roll(x[j], tuple(shift[j].tolist()), (1, 2)) for j in range(b)])
    x = rolled
    # random blobs near the object: add some, cut some
    coarse = torch.randn(b, 2, 8, 8, generator=g, device=dev)
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    near = dilate(mask.float(), 6) - erode(mask.float(), 4)
    thr = 1.6 - 0.6 * strength
    add = (field[:, :1] > thr) & (near > 0)
    cut = (field[:, 1:] > thr) & (near > 0)
    use = torch.rand(b, 2, generator=g, device=dev) < 0.5 * strength
    x = torch.where(add & use[:, 0, None, None, None], torch.ones_like(x), x)
    x = torch.where(cut & use[:, 1, None, None, None], torch.zeros_like(x), x)
    return x > 0.5


def propagated_like(
    stack: torch.Tensor, similarity: torch.Tensor, g: torch.Generator
) -> torch.Tensor:
    """Previous masks as propagation leaves them, for slice 0 of each (B, F, H, W) bool stack.

    A correction in a 3D round lands on the slice with the largest error, whose mask came from
    propagation: the object's mask of a slice 1..F-1 away (copied past a change of shape),
    often leaked into neighbouring tissue of similar intensity (``similarity``: (B, 1, H, W)
    click-relative intensity channel, near 0 where the tissue matches the clicked one), or
    shrunk. Far more wrong than ``corrupt``: the masks the interaction network meets after
    propagation are often 1.5x the object or more.
    """
    b, f, h, w = stack.shape
    dev = stack.device
    ar = torch.arange(b, device=dev)
    k = torch.randint(1, max(f, 2), (b,), generator=g, device=dev).clamp_max(f - 1)
    use_other = torch.rand(b, generator=g, device=dev) < 0.5
    x = torch.where(use_other[:, None, None], stack[ar, k], stack[:, 0])[:, None].float()
    leak = torch.rand(b, generator=g, device=dev) < 0.5
    x = torch.where(leak[:, None, None, None], leaked(x, similarity, g), x)
    # shrink: a mask that faded while propagating
    shrink = torch.rand(b, generator=g, device=dev) < 0.25
    s = torch.randint(1, 7, (b,), generator=g, device=dev) * shrink  # 0: not shrunk
    for i in range(int(s.max().item())):  # as in ``leaked``: only as many steps as needed
        x = torch.where((s > i)[:, None, None, None], erode(x, 1), x)
    return x > 0.5


def leaked(x: torch.Tensor, similarity: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(B, 1, H, W) float masks grown into neighbouring tissue like the object's.

    Each grows by up to 0.8 of its equivalent radius (a leak of the object's own scale, at most
    16 pixels) through pixels whose click-relative intensity (``similarity``, near 0 where the
    tissue matches the object) is within a random tolerance. Returns float masks.
    """
    b = x.shape[0]
    dev = x.device
    r_eq = (x.sum((1, 2, 3)) / torch.pi).sqrt()
    r = (torch.rand(b, generator=g, device=dev) * 0.8 * r_eq).ceil().clamp(1, 16)
    tol = 0.2 + 0.5 * torch.rand(b, 1, 1, 1, generator=g, device=dev)
    similar = (similarity.abs() < tol).float()
    grown = x
    for i in range(int(r.max().item())):  # samples with a smaller r stop growing earlier
        step = dilate(grown, 1) * similar
        grown = torch.where((r > i)[:, None, None, None], torch.maximum(grown, step), grown)
    return grown


def dice(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-sample Dice of bool (B, ...) masks; 1 when both are empty."""
    a = a.flatten(1).float()
    b = b.flatten(1).float()
    inter = (a * b).sum(1)
    s = a.sum(1) + b.sum(1)
    return torch.where(s > 0, 2 * inter / s.clamp_min(eps), torch.ones_like(s))


def boxes(gt: torch.Tensor, g: torch.Generator, margin: float = 0.0) -> torch.Tensor:
    """Filled training boxes (B, H, W) bool for the objects ``gt`` (B, H, W): each one's
    bounding box with N(0, 2) pixels of noise on every side, and with ``margin`` > 0 each side
    moved out by a further U(0, margin) times the object's height or width (a loose box)."""
    b, size = gt.shape[0], gt.shape[-1]
    dev = gt.device
    ys = gt.any(2).float()
    xs = gt.any(1).float()
    idx = torch.arange(size, device=dev, dtype=torch.float32)
    y0 = torch.where(ys > 0, idx, torch.full_like(ys, 1e9)).amin(1)
    y1 = torch.where(ys > 0, idx, torch.full_like(ys, -1e9)).amax(1)
    x0 = torch.where(xs > 0, idx, torch.full_like(xs, 1e9)).amin(1)
    x1 = torch.where(xs > 0, idx, torch.full_like(xs, -1e9)).amax(1)
    jit = torch.randn(b, 4, generator=g, device=dev) * 2
    if margin > 0:
        side = torch.stack([y1 - y0, x1 - x0, y1 - y0, x1 - x0], 1).clamp(min=1.0)
        out = torch.rand(b, 4, generator=g, device=dev) * margin * side
        jit = jit + out * torch.tensor([-1.0, -1.0, 1.0, 1.0], device=dev)
    inb = (idx[None, :, None] >= (y0 + jit[:, 0])[:, None, None]) & (
        idx[None, :, None] <= (y1 + jit[:, 2])[:, None, None]
    )
    return (
        inb
        & (idx[None, None, :] >= (x0 + jit[:, 1])[:, None, None])
        & (idx[None, None, :] <= (x1 + jit[:, 3])[:, None, None])
    )
