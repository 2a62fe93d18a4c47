"""Pre-processing shared by inference and training: windows, resampling, intensities, prompts.

The networks see a square ``CROP x CROP`` window around the object, of a physical side in mm
(so anisotropic pixels are resampled to square ones), whatever the size of the slice.
Everything here is batched torch code so training (on a GPU) and inference use the same
functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .networks import CROP

MIN_SIDE_PX = 24.0  # smallest window side in voxels (the object then fills ~70% of it)
ZOOM = 1.5  # a window is the object's bounding box enlarged by this factor
CLICK_SIGMA = 3.0  # click map radius in crop pixels


@dataclass(frozen=True)
class Window:
    """A square window: centre (cy, cx) in voxel indices and side in mm."""

    cy: float
    cx: float
    side_mm: float


def window_around(
    ys: np.ndarray,
    xs: np.ndarray,
    spacing_yx: tuple[float, float],
    zoom: float = ZOOM,
    min_side_mm: float | None = None,
) -> Window:
    """The window that holds the points (ys, xs) (voxel indices), enlarged by ``zoom``."""
    sy, sx = spacing_yx
    if min_side_mm is None:
        min_side_mm = MIN_SIDE_PX * min(sy, sx)
    y0, y1 = float(np.min(ys)), float(np.max(ys))
    x0, x1 = float(np.min(xs)), float(np.max(xs))
    side = max((y1 - y0 + 1) * sy, (x1 - x0 + 1) * sx) * zoom
    return Window((y0 + y1) / 2, (x0 + x1) / 2, max(side, min_side_mm))


def crop_grid(
    cy: torch.Tensor,
    cx: torch.Tensor,
    side_y: torch.Tensor,
    side_x: torch.Tensor,
    shape: tuple[int, int],
    size: int = CROP,
) -> torch.Tensor:
    """grid_sample grid (B, size, size, 2) for windows given in voxels (centre, side per axis)."""
    h, w = shape
    t = (torch.arange(size, device=cy.device, dtype=torch.float32) + 0.5) / size - 0.5
    ys = cy[:, None] + t[None] * side_y[:, None]  # B S, voxel indices
    xs = cx[:, None] + t[None] * side_x[:, None]
    gy = (2 * ys + 1) / h - 1
    gx = (2 * xs + 1) / w - 1
    return torch.stack(
        [gx[:, None, :].expand(-1, size, -1), gy[:, :, None].expand(-1, -1, size)], -1
    )


def resample(
    img: torch.Tensor,
    cy: torch.Tensor,
    cx: torch.Tensor,
    side_y: torch.Tensor,
    side_x: torch.Tensor,
    size: int = CROP,
    mode: str = "bilinear",
    padding: str = "border",
) -> torch.Tensor:
    """Crop windows (voxel units) out of ``img`` (B, C, H, W) into (B, C, size, size).

    Large windows are box-filtered first (by the integer factor they shrink by), so strong
    downsampling averages noise instead of aliasing it.
    """
    factor = int(torch.clamp(torch.minimum(side_y, side_x).min() / size, min=1).item())
    h, w = img.shape[-2:]
    if factor >= 2 and mode == "bilinear":
        img = F.avg_pool2d(img, factor, stride=factor, ceil_mode=True)
        # voxel index v of the original maps to (v + 0.5) / factor - 0.5 in the pooled image
        cy, cx = (cy + 0.5) / factor - 0.5, (cx + 0.5) / factor - 0.5
        side_y, side_x = side_y / factor, side_x / factor
        h, w = img.shape[-2:]
    grid = crop_grid(cy, cx, side_y, side_x, (h, w), size)
    return F.grid_sample(img, grid, mode=mode, padding_mode=padding, align_corners=False)


def window_sides(window: Window, spacing_yx: tuple[float, float]) -> tuple[float, float]:
    """The window's side in voxels along y and x."""
    return window.side_mm / spacing_yx[0], window.side_mm / spacing_yx[1]


def crop_slice(
    image: np.ndarray | torch.Tensor,
    window: Window,
    spacing_yx: tuple[float, float],
    device: torch.device | str = "cpu",
    is_mask: bool = False,
) -> torch.Tensor:
    """One slice (Y, X) -> (1, 1, CROP, CROP) float tensor in the window."""
    t = torch.as_tensor(np.asarray(image, dtype=np.float32), device=device)[None, None]
    sy, sx = window_sides(window, spacing_yx)
    args = [torch.tensor([v], device=device) for v in (window.cy, window.cx, sy, sx)]
    if is_mask:
        return resample(t, *args, mode="bilinear", padding="zeros")
    return resample(t, *args)


def uncrop_logits(
    logits: torch.Tensor,
    window: Window,
    spacing_yx: tuple[float, float],
    shape: tuple[int, int],
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Map (1, 1, CROP, CROP) logits back to full resolution.

    Returns the probability map of the part of the slice the window covers, and that part's
    slices into the full (Y, X) slice.
    """
    sy, sx = window_sides(window, spacing_yx)
    h, w = shape
    y0 = max(int(np.floor(window.cy - sy / 2)), 0)
    y1 = min(int(np.ceil(window.cy + sy / 2)) + 1, h)
    x0 = max(int(np.floor(window.cx - sx / 2)), 0)
    x1 = min(int(np.ceil(window.cx + sx / 2)) + 1, w)
    if y1 <= y0 or x1 <= x0:
        return np.zeros((0, 0), np.float32), (slice(0, 0), slice(0, 0))
    dev = logits.device
    ys = torch.arange(y0, y1, device=dev, dtype=torch.float32)
    xs = torch.arange(x0, x1, device=dev, dtype=torch.float32)
    gy = 2 * (ys - window.cy) / sy
    gx = 2 * (xs - window.cx) / sx
    grid = torch.stack([gx[None, :].expand(len(ys), -1), gy[:, None].expand(-1, len(xs))], -1)[
        None
    ]
    up = F.grid_sample(
        logits.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    inside = (gy.abs() <= 1)[:, None] & (gx.abs() <= 1)[None, :]
    prob = torch.sigmoid(up[0, 0]) * inside
    return prob.cpu().numpy(), (slice(y0, y1), slice(x0, x1))


# --- intensities -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IntensityNorm:
    """Fixed per round and prompted slice, so every slice of a propagation is seen alike.

    lo, hi: robust range of the window (channel 0 maps it to [-1, 1]);
    ref, scale: the clicked tissue's intensity and a robust spread (channel 1 is
    tanh((v - ref) / scale), which reads the same for CT in HU and MR in any unit).
    """

    lo: float
    hi: float
    ref: float
    scale: float


def norm_stats(crop: torch.Tensor, ref_region: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) raw crops and (B, 1, S, S) bool reference regions -> (B, 4) lo, hi, ref, scale."""
    b = crop.shape[0]
    flat = crop.reshape(b, -1).float()
    q = torch.quantile(flat, torch.tensor([0.01, 0.5, 0.99], device=crop.device), dim=1).T
    lo, med, hi = q[:, 0], q[:, 1], q[:, 2]
    mad = (flat - med[:, None]).abs().median(dim=1).values * 1.4826
    ref_vals = torch.where(ref_region.reshape(b, -1), flat, torch.full_like(flat, float("nan")))
    ref = torch.nanmedian(ref_vals, dim=1).values
    ref = torch.where(torch.isnan(ref), med, ref)
    span = (hi - lo).clamp_min(1e-6)
    scale = torch.maximum(mad, 0.05 * span).clamp_min(1e-6) * 2.0
    return torch.stack([lo, hi, ref, scale], 1)


def normalise(crop: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) raw crops + (B, 4) stats -> (B, IMG_CH, S, S) network image channels."""
    lo, hi, ref, scale = (stats[:, i, None, None, None] for i in range(4))
    a = ((crop - lo) / (hi - lo).clamp_min(1e-6) * 2 - 1).clamp(-1.5, 1.5)
    b = torch.tanh((crop - ref) / scale)
    return torch.cat([a, b], 1)


def stats_of(norm: IntensityNorm, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.tensor([[norm.lo, norm.hi, norm.ref, norm.scale]], device=device)


# --- prompts ---------------------------------------------------------------------------------


def shrink_mask(mask: torch.Tensor, pixels: int = 1) -> torch.Tensor:
    """Erode (B, 1, H, W) float masks by ``pixels`` 3 x 3 steps; outside the crop counts as
    inside, so a mask that fills the window is not cut at its edge."""
    for _ in range(pixels):
        mask = -F.max_pool2d(-mask, 3, stride=1, padding=1)
    return mask


def click_maps(points: torch.Tensor, valid: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """Gaussian disks: points (B, K, 2) in crop pixels (y, x), valid (B, K) -> (B, 1, S, S)."""
    dev = points.device
    r = torch.arange(size, device=dev, dtype=torch.float32)
    # separable: exp(-(dy^2 + dx^2) / 2s^2) = exp(-dy^2 / 2s^2) * exp(-dx^2 / 2s^2), which
    # saves B*K*S*S exponentials (a sixth of a CPU training step at batch 96)
    gy = torch.exp(-((r[None, None, :] - points[..., 0:1]) ** 2) / (2 * CLICK_SIGMA**2))  # B K S
    gx = torch.exp(-((r[None, None, :] - points[..., 1:2]) ** 2) / (2 * CLICK_SIGMA**2))
    g = (gy * valid[..., None])[..., :, None] * gx[..., None, :]  # B K S S
    if g.shape[1] == 0:
        return torch.zeros(points.shape[0], 1, size, size, device=dev)
    return g.amax(1, keepdim=True)


def box_map(boxes: torch.Tensor, valid: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """Filled rectangles: boxes (B, K, 4) as (y0, x0, y1, x1) crop pixels -> (B, 1, S, S)."""
    dev = boxes.device
    r = torch.arange(size, device=dev, dtype=torch.float32)
    iny = (r[None, None] >= boxes[..., 0:1] - 0.5) & (r[None, None] <= boxes[..., 2:3] + 0.5)
    inx = (r[None, None] >= boxes[..., 1:2] - 0.5) & (r[None, None] <= boxes[..., 3:4] + 0.5)
    m = (iny[..., :, None] & inx[..., None, :]) & valid[..., None, None]
    if m.shape[1] == 0:
        return torch.zeros(boxes.shape[0], 1, size, size, device=dev)
    return m.any(1, keepdim=True).float()


def to_crop_coords(
    ys: np.ndarray, xs: np.ndarray, window: Window, spacing_yx: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel indices on the slice -> pixel coordinates in the window's crop."""
    sy, sx = window_sides(window, spacing_yx)
    u = (np.asarray(ys, np.float64) - window.cy) / sy * CROP + CROP / 2 - 0.5
    v = (np.asarray(xs, np.float64) - window.cx) / sx * CROP + CROP / 2 - 0.5
    return u, v
