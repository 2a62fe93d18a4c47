"""The simulated annotator on hand-made masks: positions, signs, tie rules, spacing, border."""

from __future__ import annotations

import numpy as np
import pytest

from napari_limnet.evaluation.annotator import (
    Click,
    click_2d,
    first_click,
    first_click_2d,
    interior_point,
    largest_region,
    next_click,
)


def test_interior_point_of_a_square_is_its_centre() -> None:
    m = np.zeros((9, 9), bool)
    m[2:7, 3:8] = True  # 5 x 5, centre (4, 5)
    assert interior_point(m) == (4, 5)


def test_image_border_counts_as_border() -> None:
    # The object touches the left and top image borders; without padding the transform would
    # push the maximum to the corner. With the border counting as border: the centre.
    m = np.zeros((10, 12), bool)
    m[0:5, 0:5] = True
    assert interior_point(m) == (2, 2)
    # A full 5 x 7 image: the middle row is 3 from the padding, every column 2..4 at least 3:
    # a tie along the middle row -> the first.
    full = np.ones((5, 7), bool)
    assert interior_point(full) == (2, 2)


def test_tie_goes_to_first_in_row_major_order() -> None:
    # A 2 x 4 block: every voxel has distance 1; the first is the top-left one.
    m = np.zeros((6, 8), bool)
    m[2:4, 3:7] = True
    assert interior_point(m) == (2, 3)
    # Two equal squares: the upper one wins, then the left one.
    m = np.zeros((12, 12), bool)
    m[7:10, 1:4] = True
    m[1:4, 8:11] = True
    assert interior_point(m) == (2, 9)
    m = np.zeros((8, 12), bool)
    m[2:5, 7:10] = True
    m[2:5, 1:4] = True
    assert interior_point(m) == (3, 2)


def _two_blocks() -> np.ndarray:
    # A: 5 rows x 3 columns (top); B: 3 rows x 5 columns (below). Isotropic: both reach 2.
    m = np.zeros((16, 10), bool)
    m[1:6, 1:4] = True  # A: maxima at rows 2..4, column 2
    m[9:12, 3:8] = True  # B: maxima at row 10, columns 4..6
    return m


def test_spacing_changes_the_most_interior_point() -> None:
    m = _two_blocks()
    assert interior_point(m, (1.0, 1.0)) == (2, 2)  # tie -> first (A)
    # Rows 2 mm apart: B (3 rows x 5 columns) is 4 mm tall / 5 mm wide, A only 3 mm wide.
    assert interior_point(m, (2.0, 1.0)) == (10, 5)
    # Columns 2 mm apart: A is wider in mm; its centre.
    assert interior_point(m, (1.0, 2.0)) == (3, 2)
    # A 3-value spacing uses its last two values (sy, sx).
    assert interior_point(m, (9.0, 2.0, 1.0)) == (10, 5)


def test_largest_region_is_four_connected_with_first_on_tie() -> None:
    m = np.zeros((6, 6), bool)
    m[0, 0] = m[1, 1] = m[2, 2] = True  # diagonal: three regions of 1
    r = largest_region(m)
    assert r.sum() == 1 and r[0, 0]
    m[4:6, 4:6] = True
    r = largest_region(m)
    assert r.sum() == 4 and r[4:6, 4:6].all()
    assert not largest_region(np.zeros((3, 3), bool)).any()


def test_first_click_on_largest_slice_first_on_tie() -> None:
    gt = np.zeros((5, 10, 10), bool)
    gt[1, 2:5, 2:5] = True  # 9
    gt[2, 4:9, 4:9] = True  # 25
    gt[3, 0:5, 5:10] = True  # 25, a tie with slice 2: slice 2 wins
    c = first_click(gt, (3.0, 1.0, 1.0))
    assert c == Click(2, 6, 6, True)
    assert c.position == (2, 6, 6)
    gt[3, 0:6, 5:10] = True  # now slice 3 is larger; touches the top and right borders
    c = first_click(gt, (3.0, 1.0, 1.0))
    assert (c.z, c.positive) == (3, True)
    assert (c.y, c.x) == (2, 7)  # border counts: 6 rows -> rows 2/3 tie, first is 2


def test_first_click_rejects_empty_objects() -> None:
    with pytest.raises(ValueError):
        first_click(np.zeros((3, 4, 4), bool), (1, 1, 1))
    with pytest.raises(ValueError):
        first_click(np.zeros((4, 4), bool), (1, 1))
    with pytest.raises(ValueError):
        first_click_2d(np.zeros((4, 4), bool))


def test_first_click_2d() -> None:
    m = np.zeros((7, 7), bool)
    m[1:6, 2:7] = True
    assert first_click_2d(m) == (3, 4, True)


def test_next_click_none_when_perfect() -> None:
    gt = np.zeros((3, 6, 6), bool)
    gt[1, 1:4, 1:4] = True
    assert next_click(gt, gt.copy(), (1, 1, 1)) is None
    assert next_click(np.zeros_like(gt), np.zeros_like(gt), (1, 1, 1)) is None


def test_next_click_positive_in_missed_region() -> None:
    gt = np.zeros((3, 10, 10), bool)
    gt[1, 2:7, 2:7] = True
    pred = np.zeros_like(gt)
    c = next_click(gt, pred, (2, 1, 1))
    assert c == Click(1, 4, 4, True)
    assert gt[c.position]


def test_next_click_negative_in_extra_region() -> None:
    gt = np.zeros((3, 10, 10), bool)
    gt[1, 0:3, 0:3] = True
    pred = gt.copy()
    pred[1, 5:10, 5:10] = True  # 25 extra voxels touching the bottom-right border
    pred[1, 0, 0] = False  # 1 missed
    c = next_click(gt, pred, (1, 1, 1))
    assert c == Click(1, 7, 7, False)
    assert pred[c.position] and not gt[c.position]


def test_missed_wins_a_tie_with_extra() -> None:
    gt = np.zeros((1, 8, 8), bool)
    pred = np.zeros_like(gt)
    gt[0, 0:2, 0:3] = True  # missed: 6 voxels
    pred[0, 5:7, 4:7] = True  # extra: 6 voxels
    c = next_click(gt, pred, (1, 1, 1))
    assert c is not None and c.positive and gt[c.position]
    pred[0, 7, 4] = True  # extra: 7 -> negative
    c = next_click(gt, pred, (1, 1, 1))
    assert c is not None and not c.positive and pred[c.position]


def test_regions_are_four_connected() -> None:
    # Missed: two 2x2 squares touching at a corner (8 voxels if 8-connected, 4 if 4-connected);
    # extra: a 2x3 block (6). With 4-connectivity the extra region is the larger.
    gt = np.zeros((1, 10, 10), bool)
    pred = np.zeros_like(gt)
    gt[0, 0:2, 0:2] = True
    gt[0, 2:4, 2:4] = True
    pred[0, 6:8, 5:8] = True
    c = next_click(gt, pred, (1, 1, 1))
    assert c == Click(0, 6, 5, False)  # 2 rows: all at distance 1 -> first


def test_slice_with_largest_error_area_counts_missed_plus_extra() -> None:
    gt = np.zeros((3, 12, 12), bool)
    pred = np.zeros_like(gt)
    gt[0, 0:3, 0:3] = True  # slice 0: 9 missed
    gt[2, 0:2, 0:3] = True  # slice 2: 6 missed + 5 extra = 11 -> chosen
    pred[2, 8:9, 4:9] = True
    c = next_click(gt, pred, (1, 1, 1))
    assert c is not None and c.z == 2 and c.positive  # 6 missed > 5 extra
    assert c.position == (2, 0, 0)  # 2 rows at the top border: all at distance 1 -> first


def test_slice_tie_goes_to_first_slice() -> None:
    gt = np.zeros((4, 8, 8), bool)
    gt[1, 2:5, 2:5] = True
    gt[3, 2:5, 2:5] = True
    c = next_click(gt, np.zeros_like(gt), (1, 1, 1))
    assert c == Click(1, 3, 3, True)


def test_largest_missed_region_and_its_tie() -> None:
    gt = np.zeros((1, 12, 12), bool)
    gt[0, 8:11, 8:11] = True  # 9, later in row-major order
    gt[0, 1:4, 1:4] = True  # 9, first -> chosen
    gt[0, 0, 10] = True  # 1
    c = next_click(gt, np.zeros_like(gt), (1, 1, 1))
    assert c == Click(0, 2, 2, True)
    gt[0, 11, 8:11] = True  # the lower region grows to 12
    c = next_click(gt, np.zeros_like(gt), (1, 1, 1))
    assert c is not None and c.position[1:] in {(9, 9), (10, 9)} and c.position == (0, 9, 9)


def test_next_click_uses_in_plane_spacing() -> None:
    gt = _two_blocks()[None]
    pred = np.zeros_like(gt)
    # A and B are separate 15-voxel regions: a tie -> first (A); the point depends on spacing.
    assert next_click(gt, pred, (5.0, 1.0, 1.0)) == Click(0, 2, 2, True)
    # Rows 2 mm apart: A is still the region chosen (first on the tie of sizes); every row of A
    # is now at least 2 mm from the top/bottom, so the 3-column width decides: first row.
    assert next_click(gt, pred, (5.0, 2.0, 1.0)) == Click(0, 1, 2, True)
    assert next_click(gt, pred, (5.0, 1.0, 2.0)) == Click(0, 3, 2, True)


def test_click_2d_and_shapes() -> None:
    gt = np.zeros((6, 6), bool)
    gt[1:5, 1:5] = True
    pred = gt.copy()
    pred[1:3, 1:3] = False
    assert click_2d(gt, pred) == (1, 1, True)  # 2x2 missed: all distance 1 -> first
    assert click_2d(gt, gt) is None
    with pytest.raises(ValueError):
        click_2d(gt, np.zeros((5, 5), bool))
    with pytest.raises(ValueError):
        next_click(gt[None], np.zeros((2, 6, 6), bool), (1, 1, 1))
