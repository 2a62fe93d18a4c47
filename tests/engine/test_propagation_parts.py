"""Propagation keeps only the parts of a mask that touch the slice it came from."""

from __future__ import annotations

import numpy as np

from napari_limnet.engine.predict import _touching_parts


def test_a_part_away_from_the_previous_mask_is_dropped() -> None:
    prev = np.zeros((40, 40), bool)
    prev[10:20, 10:20] = True
    mask = np.zeros_like(prev)
    mask[12:22, 11:21] = True  # the object, moved a little
    mask[30:35, 30:35] = True  # another structure
    out = _touching_parts(mask, prev)
    assert out[15, 15] and not out[32, 32]
    assert out.sum() == 100


def test_a_part_one_pixel_off_still_counts_as_touching() -> None:
    prev = np.zeros((30, 30), bool)
    prev[5:10, 5:10] = True
    mask = np.zeros_like(prev)
    mask[10:14, 10:14] = True  # diagonal neighbour of prev's corner
    mask[20:25, 20:25] = True
    out = _touching_parts(mask, prev)
    assert out[12, 12] and not out[22, 22]


def test_nothing_touching_or_a_single_part_is_kept_as_is() -> None:
    prev = np.zeros((30, 30), bool)
    prev[0:3, 0:3] = True
    mask = np.zeros_like(prev)
    mask[10:14, 10:14] = True
    mask[20:25, 20:25] = True
    assert np.array_equal(_touching_parts(mask, prev), mask)  # a thin object that moved
    single = np.zeros_like(prev)
    single[5:8, 20:28] = True
    assert np.array_equal(_touching_parts(single, prev), single)
    empty = np.zeros_like(prev)
    assert not _touching_parts(empty, prev).any()


def test_parts_touching_at_the_image_border() -> None:
    prev = np.zeros((20, 20), bool)
    prev[0:4, 16:20] = True
    mask = np.zeros_like(prev)
    mask[0:5, 15:20] = True
    mask[15:20, 0:3] = True
    out = _touching_parts(mask, prev)
    assert out[0, 19] and not out[18, 1]
