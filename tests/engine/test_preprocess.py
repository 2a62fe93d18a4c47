"""Pre-processing geometry and intensities: windows, crop / uncrop, normalisation, prompt maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_limnet.engine import preprocess as pp
from napari_limnet.engine.networks import CROP

torch.set_num_threads(2)


def _disk(shape, cy, cx, r, spacing=(1.0, 1.0)):
    y, x = np.mgrid[: shape[0], : shape[1]]
    return ((y - cy) * spacing[0]) ** 2 + ((x - cx) * spacing[1]) ** 2 <= r**2


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_window_around_holds_the_points() -> None:
    ys, xs = np.array([10, 30]), np.array([20, 60])
    w = pp.window_around(ys, xs, (1.0, 1.0), zoom=1.5)
    assert (w.cy, w.cx) == (20.0, 40.0)
    assert w.side_mm == pytest.approx(41 * 1.5)
    # anisotropic pixels: the side is in mm, the larger physical extent wins
    w = pp.window_around(ys, xs, (2.0, 0.5), zoom=1.0)
    assert w.side_mm == pytest.approx(max(21 * 2.0, 41 * 0.5))
    sy, sx = pp.window_sides(w, (2.0, 0.5))
    assert (sy, sx) == pytest.approx((w.side_mm / 2.0, w.side_mm / 0.5))
    # a single point gets the minimum side
    w = pp.window_around(np.array([5]), np.array([5]), (0.8, 0.8))
    assert w.side_mm == pytest.approx(pp.MIN_SIDE_PX * 0.8)


@pytest.mark.parametrize(
    ("shape", "spacing", "centre", "radius_mm"),
    [
        ((200, 180), (1.0, 1.0), (90, 100), 30.0),
        ((300, 300), (0.7, 0.7), (140, 160), 12.0),  # small object, zoomed in
        ((64, 256), (3.0, 0.75), (30, 120), 40.0),  # anisotropic pixels
        ((512, 512), (0.8, 0.8), (250, 260), 150.0),  # large: box-filtered downsampling
    ],
)
def test_crop_then_uncrop_returns_the_mask(shape, spacing, centre, radius_mm) -> None:
    mask = _disk(shape, *centre, radius_mm, spacing)
    ys, xs = np.nonzero(mask)
    win = pp.window_around(ys, xs, spacing)
    crop = pp.crop_slice(mask, win, spacing, is_mask=True)
    assert crop.shape == (1, 1, CROP, CROP)
    # the object fills about 1 / ZOOM of the window side
    frac = (crop[0, 0] > 0.5).float().mean().item()
    assert frac == pytest.approx(np.pi / 4 / pp.ZOOM**2, rel=0.1)
    logits = torch.logit(crop.clamp(1e-4, 1 - 1e-4)) * 4
    prob, (sy, sx) = pp.uncrop_logits(logits, win, spacing, shape)
    assert prob.shape == (sy.stop - sy.start, sx.stop - sx.start)
    full = np.zeros(shape, bool)
    full[sy, sx] = prob > 0.5
    assert _dice(full, mask) > 0.97
    far = ~_disk(shape, *centre, radius_mm * 1.2, spacing)
    assert not (full & far).any()


def test_crop_of_an_image_keeps_intensities_and_geometry() -> None:
    shape, spacing = (120, 140), (1.0, 1.0)
    img = np.zeros(shape, np.float32)
    img[40:80, 50:90] = 100.0
    win = pp.Window(60.0 - 0.5, 70.0 - 0.5, float(CROP))  # one crop pixel per voxel
    crop = pp.crop_slice(img, win, spacing)[0, 0].numpy()
    # one crop pixel per voxel: crop[i, j] samples voxel (i - 4, j + 6) exactly
    off_y, off_x = -4, 6
    assert crop[40 - off_y, 60 - off_x] == pytest.approx(100.0)
    assert crop[39 - off_y, 60 - off_x] == pytest.approx(0.0)
    assert crop[60 - off_y, 50 - off_x] == pytest.approx(100.0)
    assert crop[60 - off_y, 49 - off_x] == pytest.approx(0.0)


def test_crop_grid_maps_the_window_centre_to_the_crop_centre() -> None:
    cy, cx, sy, sx = 37.0, 81.5, 50.0, 80.0
    h, w = 100, 160
    grid = pp.crop_grid(*(torch.tensor([v]) for v in (cy, cx, sy, sx)), (h, w))
    assert grid.shape == (1, CROP, CROP, 2)
    # grid_sample (align_corners=False): voxel v <-> normalised (2v + 1) / n - 1
    vox_x = ((grid[0, ..., 0] + 1) * w - 1) / 2
    vox_y = ((grid[0, ..., 1] + 1) * h - 1) / 2
    mid = CROP // 2
    assert (vox_y[mid - 1 : mid + 1, 0].mean().item()) == pytest.approx(cy, abs=1e-4)
    assert (vox_x[0, mid - 1 : mid + 1].mean().item()) == pytest.approx(cx, abs=1e-4)
    # the grid spans the side: pixel centres at (i + 0.5) / CROP of it
    assert (vox_y[-1, 0] - vox_y[0, 0]).item() == pytest.approx(sy * (CROP - 1) / CROP, rel=1e-5)
    assert (vox_x[0, -1] - vox_x[0, 0]).item() == pytest.approx(sx * (CROP - 1) / CROP, rel=1e-5)
    # y varies along rows only, x along columns only
    assert torch.allclose(vox_y, vox_y[:, :1].expand_as(vox_y))
    assert torch.allclose(vox_x, vox_x[:1, :].expand_as(vox_x))


def test_to_crop_coords_inverts_crop_grid() -> None:
    spacing = (0.9, 0.6)
    win = pp.Window(70.3, 40.8, 45.0)
    sy, sx = pp.window_sides(win, spacing)
    shape = (150, 120)
    grid = pp.crop_grid(*(torch.tensor([v]) for v in (win.cy, win.cx, sy, sx)), shape)
    rng = np.random.default_rng(0)
    iy = rng.integers(0, CROP, 20)
    ix = rng.integers(0, CROP, 20)
    vox_y = ((grid[0, iy, ix, 1].numpy().astype(np.float64) + 1) * shape[0] - 1) / 2
    vox_x = ((grid[0, iy, ix, 0].numpy().astype(np.float64) + 1) * shape[1] - 1) / 2
    u, v = pp.to_crop_coords(vox_y, vox_x, win, spacing)
    np.testing.assert_allclose(u, iy, atol=1e-3)
    np.testing.assert_allclose(v, ix, atol=1e-3)


@pytest.mark.parametrize(("a", "b"), [(1.0, 0.0), (3.7, -1024.0), (0.02, 5.0), (250.0, 1e4)])
def test_normalisation_is_invariant_to_affine_intensity_changes(a: float, b: float) -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(3, 1, CROP, CROP, generator=g) * 20
    base[:, :, 40:80, 50:90] += 100.0
    ref = torch.zeros(3, 1, CROP, CROP, dtype=torch.bool)
    ref[:, :, 55:65, 65:75] = True
    want = pp.normalise(base, pp.norm_stats(base, ref))
    x = base.double() * a + b
    got = pp.normalise(x, pp.norm_stats(x, ref))
    assert got.shape == (3, 2, CROP, CROP)
    torch.testing.assert_close(got.float(), want, atol=2e-4, rtol=0)


def test_normalisation_channels() -> None:
    x = torch.linspace(-1000, 3000, CROP * CROP).view(1, 1, CROP, CROP)
    ref = torch.zeros_like(x, dtype=torch.bool)
    ref[0, 0, 64, 64] = True
    stats = pp.norm_stats(x, ref)
    lo, hi, r, scale = stats[0].tolist()
    assert lo < hi and scale > 0
    assert r == pytest.approx(x[0, 0, 64, 64].item())
    out = pp.normalise(x, stats)
    assert out[:, 0].min() >= -1.5 and out[:, 0].max() <= 1.5
    assert out[0, 1, 64, 64].abs().item() < 1e-5  # the clicked tissue reads 0
    assert torch.isfinite(out).all()
    # no reference region: the median is used
    stats2 = pp.norm_stats(x, torch.zeros_like(ref))
    assert stats2[0, 2].item() == pytest.approx(x.median().item(), abs=1.0)
    # a constant crop does not divide by zero
    c = torch.full((1, 1, CROP, CROP), 7.0)
    assert torch.isfinite(pp.normalise(c, pp.norm_stats(c, ref))).all()


def test_click_maps_peak_at_the_clicks() -> None:
    pts = torch.tensor(
        [[[10.0, 20.0], [100.0, 90.0], [50.0, 50.0]], [[64.0, 3.0], [0, 0], [0, 0]]]
    )
    valid = torch.tensor([[True, True, False], [True, False, False]])
    m = pp.click_maps(pts, valid)
    assert m.shape == (2, 1, CROP, CROP)
    assert m[0, 0, 10, 20] == pytest.approx(1.0)
    assert m[0, 0, 100, 90] == pytest.approx(1.0)
    assert m[0, 0, 50, 50] < 1e-6  # an invalid click leaves no trace
    assert m[1, 0, 64, 3] == pytest.approx(1.0)
    assert m[1, 0, 0, 0] < 1e-6
    # a Gaussian of CLICK_SIGMA
    assert m[0, 0, 10, 23] == pytest.approx(np.exp(-9 / (2 * pp.CLICK_SIGMA**2)), rel=1e-5)
    # local maxima are exactly the valid clicks
    peaks = (m == torch.nn.functional.max_pool2d(m, 3, 1, 1)) & (m > 0.5)
    assert {tuple(p) for p in torch.nonzero(peaks[0, 0]).tolist()} == {(10, 20), (100, 90)}
    # no clicks at all
    empty = pp.click_maps(torch.zeros(2, 0, 2), torch.zeros(2, 0, dtype=torch.bool))
    assert empty.shape == (2, 1, CROP, CROP) and not empty.any()


def test_click_maps_match_the_gaussian_formula_off_the_grid() -> None:
    g = torch.Generator().manual_seed(3)
    pts = torch.rand(3, 5, 2, generator=g) * (CROP + 20) - 10  # some outside the crop
    valid = torch.rand(3, 5, generator=g) > 0.3
    r = torch.arange(CROP, dtype=torch.float64)
    p = pts.double()
    d2 = (r[None, None, :, None] - p[..., 0, None, None]) ** 2 + (
        r[None, None, None, :] - p[..., 1, None, None]
    ) ** 2
    want = (torch.exp(-d2 / (2 * pp.CLICK_SIGMA**2)) * valid[..., None, None]).amax(1, True)
    got = pp.click_maps(pts, valid)
    assert torch.allclose(got.double(), want, atol=1e-6)


def test_box_map_fills_the_inclusive_box() -> None:
    boxes = torch.tensor([[[10.0, 20.0, 30.0, 25.0]], [[0.0, 0.0, 5.0, 5.0]]])
    m = pp.box_map(boxes, torch.tensor([[True], [False]]))
    assert m.shape == (2, 1, CROP, CROP)
    want = torch.zeros(CROP, CROP)
    want[10:31, 20:26] = 1
    assert torch.equal(m[0, 0], want)
    assert not m[1].any()
    assert not pp.box_map(torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool)).any()
