"""Propagation keeps only the parts of a mask that touch the slice it came from."""

from __future__ import annotations

import numpy as np

from napari_limnet.engine.predict import _touching_parts


def _boxes(shape: tuple[int, int], *boxes: tuple[int, int, int, int]) -> np.ndarray:
    """A bool mask holding the boxes (y0, y1, x0, x1), ends exclusive."""
    m = np.zeros(shape, bool)
    for y0, y1, x0, x1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def test_a_part_away_from_the_previous_mask_is_dropped() -> None:
    prev = _boxes((40, 40), (10, 20, 10, 20))
    # the object, moved a little, and another structure
    mask = _boxes((40, 40), (12, 22, 11, 21), (30, 35, 30, 35))
    out = _touching_parts(mask, prev)
    assert out[15, 15] and not out[32, 32]
    assert out.sum() == 100


def test_a_part_one_pixel_off_still_counts_as_touching() -> None:
    prev = _boxes((30, 30), (5, 10, 5, 10))
    # the first box is a diagonal neighbour of prev's corner
    out = _touching_parts(_boxes((30, 30), (10, 14, 10, 14), (20, 25, 20, 25)), prev)
    assert out[12, 12] and not out[22, 22]


def test_nothing_touching_or_a_single_part_is_kept_as_is() -> None:
    prev = _boxes((30, 30), (0, 3, 0, 3))
    mask = _boxes((30, 30), (10, 14, 10, 14), (20, 25, 20, 25))
    assert np.array_equal(_touching_parts(mask, prev), mask)  # a thin object that moved
    single = _boxes((30, 30), (5, 8, 20, 28))
    assert np.array_equal(_touching_parts(single, prev), single)
    assert not _touching_parts(_boxes((30, 30)), prev).any()


def test_parts_touching_at_the_image_border() -> None:
    prev = _boxes((20, 20), (0, 4, 16, 20))
    out = _touching_parts(_boxes((20, 20), (0, 5, 15, 20), (15, 20, 0, 3)), prev)
    assert out[0, 19] and not out[18, 1]
