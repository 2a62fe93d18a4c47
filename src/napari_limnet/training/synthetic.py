"""Domain-randomised synthetic volumes, generated in batches on any torch device.

Each sample is a short stack of ``T`` slices of ``size x size`` pixels in "window space" (the
space the networks see), holding one target object and distractors:

- shapes: deformed ellipsoids, whose random radii make blobs, tubes (one long axis) and thin
  sheets (one short axis); objects of two parts; objects with holes; small lesion-like targets
  inside a larger organ-like structure with low contrast; touching distractors painted over the
  target; optionally (``compartments``) targets made of parts of different intensity, a core
  and / or a rim (a tumour's necrosis and oedema, heart chambers and wall), the target being
  their union;
- appearance (SynthSeg-style): a random intensity per structure, smooth textures, noise, a bias
  field, blur (partial volume), a gamma curve and a random affine intensity scale (HU-like or
  arbitrary MR units);
- anisotropy: the distance between slices is 0.5 to 12 in-plane pixels, as for thin or thick
  (3 to 7 mm) clinical slices seen in windows of different sizes.

Frame 0 of every stack cuts the target near its centre plane, so it can be prompted and
propagated from. Everything is reproducible from a ``torch.Generator`` seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class SyntheticBatch:
    image: torch.Tensor  # (B, T, S, S) float32, raw intensities in random units
    target: torch.Tensor  # (B, T, S, S) bool
    kind: torch.Tensor  # (B,) 0 organ-like, 1 lesion-like


def _rand(g: torch.Generator, *shape: int, lo: float = 0.0, hi: float = 1.0, device=None):
    return lo + (hi - lo) * torch.rand(*shape, generator=g, device=device)


def _rotations(g: torch.Generator, b: int, device) -> torch.Tensor:
    q = torch.randn(b, 4, generator=g, device=device)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        1,
    ).view(b, 3, 3)  # fmt: skip


def _shape_field(
    g: torch.Generator,
    pts: torch.Tensor,
    centre: torch.Tensor,
    radii: torch.Tensor,
    wobble: torch.Tensor,
) -> torch.Tensor:
    """Signed field (< 0 inside) of randomly rotated, sinusoidally deformed ellipsoids.

    pts (B, N, 3) physical pixel coordinates; centre (B, 3); radii (B, 3); wobble (B,) amplitude.
    """
    b, dev = pts.shape[0], pts.device
    rot = _rotations(g, b, dev)
    q = torch.einsum("bij,bnj->bni", rot, pts - centre[:, None]) / radii[:, None]
    f = q.norm(dim=2) - 1
    for _ in range(4):
        direction = torch.randn(b, 3, generator=g, device=dev)
        direction = direction / direction.norm(dim=1, keepdim=True)
        freq = _rand(g, b, lo=1.0, hi=4.0, device=dev)
        phase = _rand(g, b, hi=2 * math.pi, device=dev)
        amp = wobble * _rand(g, b, device=dev)
        f = f + amp[:, None] * torch.sin(
            (q @ direction[:, :, None])[..., 0] * freq[:, None] + phase[:, None]
        )
    return f


def _smooth_noise(g: torch.Generator, b: int, t: int, s: int, cells: int, device) -> torch.Tensor:
    """(B, T, S, S) smooth random field in [-1, 1]-ish from a coarse grid."""
    coarse = torch.randn(b, 1, max(2, t // 2 + 1), cells, cells, generator=g, device=device)
    return F.interpolate(coarse, size=(t, s, s), mode="trilinear", align_corners=False)[:, 0]


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample in-plane Gaussian blur of (B, T, S, S) with sigma (B,) pixels."""
    b, t, s, _ = x.shape
    r = 4
    k = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    w = torch.exp(-(k[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    w = w / w.sum(1, keepdim=True)  # B K
    y = x.reshape(1, b * t, s, s)
    wt = w.repeat_interleave(t, 0)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), wt[:, None, None, :], groups=b * t)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), wt[:, None, :, None], groups=b * t)
    return y.view(b, t, s, s)


def generate(
    batch: int,
    frames: int,
    size: int,
    g: torch.Generator,
    device: torch.device | str = "cpu",
    compartments: float = 0.0,
) -> SyntheticBatch:
    """A batch of synthetic stacks; see the module docstring.

    compartments: share of targets made of a core and / or a rim of their own intensities
    (0 draws nothing extra from ``g``, so older recipes stay reproducible).
    """
    dev = torch.device(device)
    b, t, s = batch, frames, size
    if b == 0:  # an all-real batch (``real_fraction`` 1)
        return SyntheticBatch(
            torch.zeros(0, t, s, s, device=dev),
            torch.zeros(0, t, s, s, dtype=torch.bool, device=dev),
            torch.zeros(0, dtype=torch.long, device=dev),
        )
    dz = torch.exp(_rand(g, b, lo=math.log(0.5), hi=math.log(12.0), device=dev))
    # frame 0 sits near the target's centre plane (a little off it, sometimes)
    z0 = _rand(g, b, lo=-1.0, hi=1.0, device=dev) * dz * 0.5
    zz = torch.arange(t, device=dev, dtype=torch.float32)[None] * dz[:, None] + z0[:, None]
    yy, xx = torch.meshgrid(
        torch.arange(s, device=dev, dtype=torch.float32),
        torch.arange(s, device=dev, dtype=torch.float32),
        indexing="ij",
    )
    pts = torch.stack(
        [
            zz[:, :, None, None].expand(b, t, s, s),
            yy[None, None].expand(b, t, s, s),
            xx[None, None].expand(b, t, s, s),
        ],
        -1,
    ).reshape(b, t * s * s, 3)

    lesion = _rand(g, b, device=dev) < 0.45
    # target size: lesions small, organs anywhere from small to overflowing the window
    log_r = torch.where(
        lesion,
        _rand(g, b, lo=math.log(2.5), hi=math.log(16.0), device=dev),
        _rand(g, b, lo=math.log(5.0), hi=math.log(70.0), device=dev),
    )
    base_r = torch.exp(log_r)
    # aspect: blobs; tubes (one long axis); sheets (one short axis)
    aspect = torch.exp(_rand(g, b, 3, lo=-0.5, hi=0.5, device=dev))
    style = _rand(g, b, device=dev)
    tube = style < 0.15
    sheet = (style >= 0.15) & (style < 0.25)
    aspect[tube, 0] *= _rand(g, int(tube.sum()), lo=2.0, hi=5.0, device=dev)
    aspect[sheet, 0] *= _rand(g, int(sheet.sum()), lo=0.15, hi=0.4, device=dev)
    radii = base_r[:, None] * aspect
    centre = torch.stack(
        [
            torch.zeros(b, device=dev),
            s / 2 + _rand(g, b, lo=-0.2, hi=0.2, device=dev) * s,
            s / 2 + _rand(g, b, lo=-0.2, hi=0.2, device=dev) * s,
        ],
        1,
    )
    wobble = _rand(g, b, lo=0.0, hi=0.6, device=dev)
    f_target = _shape_field(g, pts, centre, radii, wobble)
    # a second part (separate or touching) for some objects
    two = _rand(g, b, device=dev) < 0.15
    offset = torch.randn(b, 3, generator=g, device=dev) * base_r[:, None] * 1.6
    offset[:, 0] *= 0.3
    f2 = _shape_field(g, pts, centre + offset, radii * 0.7, wobble)
    f_target = torch.where(two[:, None], torch.minimum(f_target, f2), f_target)
    # holes
    hole = (_rand(g, b, device=dev) < 0.12) & ~lesion
    fh = _shape_field(
        g, pts, centre + offset * 0.2, radii * _rand(g, b, 1, lo=0.2, hi=0.45, device=dev), wobble
    )
    f_target = torch.where(hole[:, None], torch.maximum(f_target, -fh), f_target)

    # label map painted in order: 0 background, 1 organ (host), 2.. distractors, 9 target
    lab = torch.zeros(b, t * s * s, dtype=torch.uint8, device=dev)
    organ_r = torch.maximum(
        base_r * _rand(g, b, lo=1.8, hi=4.0, device=dev), torch.full_like(base_r, s * 0.3)
    )
    has_organ = lesion | (_rand(g, b, device=dev) < 0.5)
    f_org = _shape_field(
        g,
        pts,
        centre + torch.randn(b, 3, generator=g, device=dev) * base_r[:, None] * 0.5,
        organ_r[:, None] * torch.exp(_rand(g, b, 3, lo=-0.3, hi=0.3, device=dev)),
        wobble * 0.5,
    )
    lab[(f_org < 0) & has_organ[:, None]] = 1
    n_distract = 5
    before = _rand(g, b, n_distract, device=dev) < 0.6
    for i in range(n_distract):
        c = torch.stack(
            [
                _rand(g, b, lo=-2, hi=2, device=dev) * dz * 2,
                _rand(g, b, lo=-0.1, hi=1.1, device=dev) * s,
                _rand(g, b, lo=-0.1, hi=1.1, device=dev) * s,
            ],
            1,
        )
        r = torch.exp(_rand(g, b, 3, lo=math.log(3.0), hi=math.log(40.0), device=dev))
        f = _shape_field(g, pts, c, r, _rand(g, b, lo=0, hi=0.3, device=dev))
        lab[(f < 0) & before[:, i : i + 1]] = 2 + i
    lab[f_target < 0] = 9
    for i in range(n_distract):  # distractors after the target may cut into it (touching)
        c = torch.stack(
            [
                _rand(g, b, lo=-2, hi=2, device=dev) * dz * 2,
                _rand(g, b, lo=-0.1, hi=1.1, device=dev) * s,
                _rand(g, b, lo=-0.1, hi=1.1, device=dev) * s,
            ],
            1,
        )
        r = torch.exp(_rand(g, b, 3, lo=math.log(3.0), hi=math.log(25.0), device=dev))
        use = (_rand(g, b, device=dev) < 0.25)[:, None]
        f = _shape_field(g, pts, c, r, _rand(g, b, lo=0, hi=0.3, device=dev))
        lab[(f < 0) & use] = 2 + i
    if compartments > 0:
        comp = _rand(g, b, device=dev) < compartments
        core_scale = _rand(g, b, 1, lo=0.3, hi=0.75, device=dev)
        f_core = _shape_field(g, pts, centre + offset * 0.15, radii * core_scale, wobble)
        rim = _rand(g, b, lo=0.05, hi=0.3, device=dev)  # in units of the target's radius
        kind = _rand(g, b, device=dev)  # core only, rim only, or both
        use_core = comp & (kind < 0.75)
        use_rim = comp & (kind >= 0.4)
        inside = lab == 9
        lab[inside & (f_target > -rim[:, None]) & use_rim[:, None]] = 11
        lab[inside & (f_core < 0) & use_core[:, None]] = 10
    lab = lab.view(b, t, s, s)
    target = lab >= 9

    # intensities: one mean per label, target relative to its host for lesions
    means = _rand(g, b, 10, device=dev)
    contrast = torch.exp(_rand(g, b, lo=math.log(0.04), hi=math.log(0.6), device=dev))
    sign = torch.where(_rand(g, b, device=dev) < 0.5, -1.0, 1.0)
    host = torch.where(has_organ, means[:, 1], means[:, 0])
    means[:, 9] = torch.where(lesion, host + sign * contrast, means[:, 9])
    if compartments > 0:  # labels 10, 11: intensities of their own, any contrast to the rest
        means = torch.cat([means, _rand(g, b, 2, device=dev)], 1)
    img = torch.gather(means, 1, lab.view(b, -1).long()).view(b, t, s, s)
    img = _appearance(img, lab.clamp(max=9), 10, g)
    return SyntheticBatch(img.float(), target, lesion.long())


def _appearance(img: torch.Tensor, tex_labels: torch.Tensor, n_tex: int, g: torch.Generator):
    """Per-label mean image (B, T, S, S) -> textured, blurred, noisy, biased image in random
    units. ``tex_labels`` (B, T, S, S) in 0 .. n_tex - 1 picks each voxel's texture strength."""
    b, t, s, _ = img.shape
    dev = img.device
    # texture per label: smooth noise of random scale and strength
    tex_amp = _rand(g, b, n_tex, lo=0.0, hi=0.12, device=dev)
    tex = _smooth_noise(g, b, t, s, int(_rand(g, 1, lo=4, hi=24, device=dev).item()), dev)
    tex_lab = tex_labels.reshape(b, -1).long()
    img = img + torch.gather(tex_amp, 1, tex_lab).view(b, t, s, s) * tex
    fine = _smooth_noise(g, b, t, s, s // 2, dev)
    img = img + _rand(g, b, lo=0.0, hi=0.05, device=dev)[:, None, None, None] * fine
    # partial volume / resolution, noise, bias, gamma, units
    img = _blur(img, _rand(g, b, lo=0.0, hi=1.6, device=dev))
    img = (
        img
        + torch.randn(img.shape, generator=g, device=dev)
        * _rand(g, b, lo=0.0, hi=0.08, device=dev)[:, None, None, None]
    )
    bias = (
        _smooth_noise(g, b, t, s, 3, dev)
        * _rand(g, b, lo=0.0, hi=0.25, device=dev)[:, None, None, None]
    )
    img = img * torch.exp(bias)
    lo = img.amin((1, 2, 3), keepdim=True)
    hi = img.amax((1, 2, 3), keepdim=True)
    img = (img - lo) / (hi - lo).clamp_min(1e-6)
    gamma = torch.exp(_rand(g, b, lo=-0.5, hi=0.5, device=dev))[:, None, None, None]
    img = img.clamp_min(0) ** gamma
    scale = torch.exp(_rand(g, b, lo=math.log(1.0), hi=math.log(3000.0), device=dev))
    img = (
        img * scale[:, None, None, None]
        - _rand(g, b, lo=0.0, hi=1.0, device=dev)[:, None, None, None] * scale[:, None, None, None]
    )
    return img


def paint_labels(
    labels: torch.Tensor, g: torch.Generator, image: torch.Tensor | None = None
) -> torch.Tensor:
    """SynthSeg-style new intensities for real label maps: (B, T, S, S) integer labels
    (0 .. K-1 per stack, 0 the unlabelled background) -> (B, T, S, S) float image in random
    units, a random mean per label and the same textures, blur, noise, bias, gamma and units
    as :func:`generate`. The anatomy stays real; its contrast becomes any modality's.

    ``image`` (the stacks' real intensities): the background keeps its real structure
    through a random, not necessarily monotonic, intensity curve instead of one mean, since
    a label map rarely names every tissue in view.
    """
    b = labels.shape[0]
    k = int(labels.max().item()) + 1 if labels.numel() else 1
    lab = labels.long()
    means = _rand(g, b, k, device=labels.device)
    img = torch.gather(means, 1, lab.reshape(b, -1)).view(labels.shape)
    if image is not None:
        flat = image.reshape(b, -1).float()
        q = torch.quantile(flat, torch.tensor([0.01, 0.99], device=flat.device), dim=1).T
        x = ((flat - q[:, :1]) / (q[:, 1:] - q[:, :1]).clamp_min(1e-6)).clamp(0, 1) * 4
        knots = _rand(g, b, 5, device=labels.device)  # the curve's values at 0, 1/4 .. 1
        i0 = x.floor().clamp(max=3).long()
        f = x - i0
        curve = torch.gather(knots, 1, i0) * (1 - f) + torch.gather(knots, 1, i0 + 1) * f
        img = torch.where(lab == 0, curve.view(labels.shape), img)
    return _appearance(img, lab, k, g).float()
