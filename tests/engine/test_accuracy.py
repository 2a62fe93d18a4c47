"""The shipped model finds clear objects, through the public API only (``napari_limnet``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_limnet
from napari_limnet.evaluation.annotator import next_click

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def model():
    return napari_limnet.load_model(device="cpu")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _ellipsoid(shape, spacing, centre_mm, radii_mm) -> np.ndarray:
    axes = [np.arange(n) * s for n, s in zip(shape, spacing, strict=True)]
    grids = np.meshgrid(*axes, indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre_mm, radii_mm, strict=True)) <= 1


def _noisy(gt: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (gt * 100.0 + rng.normal(0.0, 20.0, gt.shape)).astype(np.float32)


def _one_click(model, image: np.ndarray, spacing, click):
    """A session on ``image`` with one positive click at ``click``: (session, object, mask)."""
    s = napari_limnet.Session(image, spacing=spacing, model=model)
    obj = s.new_object()
    s.add_click(obj, click, positive=True)
    return s, obj, s.run(obj)


def test_ellipsoid_from_one_click_and_a_correction(model) -> None:
    shape, spacing = (40, 96, 96), (2.0, 1.0, 1.0)
    gt = _ellipsoid(shape, spacing, (40.0, 48.0, 46.0), (24.0, 20.0, 16.0))
    s, obj, mask = _one_click(model, _noisy(gt, 0), spacing, (20, 48, 46))
    assert mask.shape == shape and mask.dtype == bool
    d1 = _dice(mask, gt)
    assert d1 >= 0.9, f"Dice after one click {d1:.3f}"
    click = next_click(gt, mask, spacing)
    assert click is not None
    s.add_click(obj, click.position, positive=click.positive)
    d2 = _dice(s.run(obj), gt)
    assert d2 >= d1 - 0.005, f"the correction made it worse: {d1:.4f} -> {d2:.4f}"
    np.testing.assert_array_equal(s.labels() == obj, s.mask(obj))


def _disk_session(model, radius: float, offset: float):
    """A disk of ``radius`` px in noise, clicked ``offset`` x radius away from its centre."""
    y, x = np.mgrid[:80, :80]
    gt = (y - 40) ** 2 + (x - 40) ** 2 <= radius**2
    d = int(round(offset * radius / np.sqrt(2)))
    return _dice(_one_click(model, _noisy(gt, 1), (1.0, 1.0), (40 + d, 40 - d))[2], gt)


@pytest.mark.parametrize("radius", [10.0, 15.0, 20.0])
def test_click_off_centre(model, radius: float) -> None:
    # a click a quarter of the radius away from the centre still finds the whole disk
    d = _disk_session(model, radius, 0.25)
    assert d >= 0.9, f"Dice {d:.3f}"


@pytest.mark.xfail(
    reason="known weakness of the shipped weights: a click far from the "
    "centre of a large object gets only part of it",
    strict=False,
)
def test_click_far_off_centre(model) -> None:
    d = _disk_session(model, 20.0, 0.6)
    assert d >= 0.9, f"Dice {d:.3f}"


def test_2d_image(model) -> None:
    spacing = (0.8, 0.8)
    gt = _ellipsoid((90, 110), spacing, (36.0, 44.0), (14.0, 18.0))
    mask = _one_click(model, _noisy(gt, 2), spacing, (45, 55))[2]
    assert mask.shape == gt.shape and mask.dtype == bool
    d = _dice(mask, gt)
    assert d >= 0.9, f"2D Dice {d:.3f}"


def test_anisotropic_spacing(model) -> None:
    # 0.7 mm pixels, 5 mm slices: a 7 cm x 5 cm x 6 cm object over about 13 slices
    shape, spacing = (20, 140, 140), (5.0, 0.7, 0.7)
    gt = _ellipsoid(shape, spacing, (50.0, 49.0, 49.0), (35.0, 25.0, 30.0))
    mask = _one_click(model, _noisy(gt, 3), spacing, (10, 70, 70))[2]
    d = _dice(mask, gt)
    assert d >= 0.9, f"Dice {d:.3f}"
    # it propagated: most of the object's slices hold a mask, nothing far outside
    zs_gt = set(np.nonzero(gt.any((1, 2)))[0].tolist())
    zs = set(np.nonzero(mask.any((1, 2)))[0].tolist())
    assert len(zs & zs_gt) >= len(zs_gt) - 2
    assert zs <= {z for z in range(shape[0]) if any(abs(z - g) <= 1 for g in zs_gt)}
