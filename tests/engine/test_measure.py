"""Object measures against values computed by hand."""

from __future__ import annotations

import numpy as np

from napari_limnet.engine.measure import measure_object, measures_csv


def test_box_measures() -> None:
    mask = np.zeros((10, 20, 30), bool)
    mask[2:6, 5:9, 10:20] = True  # 4 x 4 x 10 voxels
    image = np.zeros(mask.shape, np.int16)
    image[mask] = 40
    image[2, 5, 10] = 80
    m = measure_object(3, "box", mask, image.__getitem__, (2.0, 0.5, 0.5))
    assert m.voxels == 160
    assert np.isclose(m.volume_ml, 160 * 2.0 * 0.5 * 0.5 / 1000)
    assert np.isclose(m.mean, (159 * 40 + 80) / 160)
    assert np.isclose(m.std, np.std([40] * 159 + [80]))
    # corner to corner: 3 slices x 2 mm, 3 rows x 0.5 mm, 9 columns x 0.5 mm
    assert np.isclose(m.largest_diameter_mm, np.sqrt(6.0**2 + 1.5**2 + 4.5**2))


def test_flat_and_empty_objects() -> None:
    mask = np.zeros((3, 8, 8), bool)
    mask[1, 2, 1:7] = True  # a line on one slice
    m = measure_object(1, "line", mask, np.ones(mask.shape).__getitem__, (3.0, 1.0, 2.0))
    assert np.isclose(m.largest_diameter_mm, 10.0)
    empty = measure_object(
        2, "none", np.zeros_like(mask), np.ones(mask.shape).__getitem__, (1, 1, 1)
    )
    assert empty.voxels == 0 and np.isnan(empty.mean)
    text = measures_csv([m, empty])
    assert text.splitlines()[0] == "id,name,voxels,volume_ml,mean,std,largest_diameter_mm"
    assert text.splitlines()[1].startswith("1,line,6,0.036,1,0,10")
