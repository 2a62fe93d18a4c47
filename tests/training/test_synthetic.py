"""The synthetic training generator: shapes, dtypes, seeds, targets, kinds."""

from __future__ import annotations

import pytest
import torch

from napari_limnet.training.synthetic import SyntheticBatch, generate

torch.set_num_threads(2)

B, T, S = 32, 3, 64


@pytest.fixture(scope="module")
def batch() -> SyntheticBatch:
    return generate(B, T, S, torch.Generator().manual_seed(0))


def test_shapes_and_dtypes(batch: SyntheticBatch) -> None:
    assert batch.image.shape == (B, T, S, S) and batch.image.dtype == torch.float32
    assert batch.target.shape == (B, T, S, S) and batch.target.dtype == torch.bool
    assert batch.kind.shape == (B,)
    assert set(batch.kind.unique().tolist()) <= {0, 1}
    assert batch.image.device.type == "cpu"


def test_intensities_finite_and_varied(batch: SyntheticBatch) -> None:
    img = batch.image
    assert torch.isfinite(img).all()
    # every sample has contrast, and units vary widely between samples (HU-like to ~1)
    span = img.amax((1, 2, 3)) - img.amin((1, 2, 3))
    assert (span > 0).all()
    assert span.max() / span.min() > 10


def test_frame0_holds_the_target(batch: SyntheticBatch) -> None:
    area0 = batch.target[:, 0].sum((1, 2))
    assert (area0 >= 4).float().mean() >= 0.9
    # frame 0 is near the target's centre plane: its largest (or close to it) slice
    biggest = batch.target.sum((2, 3)).amax(1)
    assert (area0 >= 0.5 * biggest).float().mean() >= 0.9
    # the target is inside the window, not only at its border
    inner = batch.target[:, 0, 4:-4, 4:-4].sum((1, 2))
    assert (inner > 0).float().mean() >= 0.9


def test_both_kinds_and_lesions_are_smaller(batch: SyntheticBatch) -> None:
    lesion = batch.kind == 1
    assert 0 < lesion.sum() < B
    area0 = batch.target[:, 0].sum((1, 2)).float()
    assert area0[lesion].median() < area0[~lesion].median()


def test_stacks_vary_in_slice_distance(batch: SyntheticBatch) -> None:
    # thin slices change the target little from frame to frame, thick ones a lot
    a = batch.target.sum((2, 3)).float()
    ok = a[:, 0] >= 20
    change = ((a[ok, 1] - a[ok, 0]).abs() / a[ok, 0]).sort().values
    assert change[0] < 0.1
    assert change[-1] > 0.5


def test_same_seed_same_output() -> None:
    a = generate(6, 2, 48, torch.Generator().manual_seed(123))
    b = generate(6, 2, 48, torch.Generator().manual_seed(123))
    assert torch.equal(a.image, b.image)
    assert torch.equal(a.target, b.target)
    assert torch.equal(a.kind, b.kind)


def test_different_seed_or_next_call_differs() -> None:
    g = torch.Generator().manual_seed(123)
    a = generate(6, 2, 48, g)
    b = generate(6, 2, 48, g)  # the generator moved on
    c = generate(6, 2, 48, torch.Generator().manual_seed(124))
    assert not torch.equal(a.image, b.image)
    assert not torch.equal(a.image, c.image)
    assert not torch.equal(a.target, c.target)


def test_device_string_and_frames_one() -> None:
    out = generate(2, 1, 32, torch.Generator().manual_seed(5), device="cpu")
    assert out.image.shape == (2, 1, 32, 32)
    assert torch.isfinite(out.image).all()


def _spread_inside_targets(batch: SyntheticBatch) -> float:
    """Mean 5-95 % intensity range inside the targets, relative to each image's range."""
    spreads = []
    for img, tgt in zip(batch.image[:, 0], batch.target[:, 0], strict=True):
        if tgt.sum() >= 50:
            q = torch.quantile(img[tgt], torch.tensor([0.05, 0.95]))
            spreads.append(float((q[1] - q[0]) / (img.amax() - img.amin())))
    return sum(spreads) / len(spreads)


def test_compartments_make_targets_of_several_intensities() -> None:
    # the same seed without compartments gives the old recipe, bit for bit
    old = generate(4, 2, 48, torch.Generator().manual_seed(9))
    zero = generate(4, 2, 48, torch.Generator().manual_seed(9), compartments=0.0)
    assert torch.equal(old.image, zero.image) and torch.equal(old.target, zero.target)

    mixed = generate(32, 1, 64, torch.Generator().manual_seed(9), compartments=1.0)
    plain = generate(32, 1, 64, torch.Generator().manual_seed(9))
    assert torch.isfinite(mixed.image).all()
    # a core / rim of their own intensity widen the range of intensities inside the target
    assert _spread_inside_targets(mixed) > 1.3 * _spread_inside_targets(plain)
