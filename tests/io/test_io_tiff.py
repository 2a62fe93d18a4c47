"""3D TIFF stacks: spacing, layout, writing labels, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_limnet._writer import write_labels
from napari_limnet.io import read_tiff, write_label_file


def test_imagej_stack_with_spacing_round_trip(tmp_path: Path) -> None:
    stack = np.random.default_rng(2).integers(0, 4000, size=(6, 9, 8)).astype(np.uint16)
    tifffile.imwrite(
        tmp_path / "stack.tif",
        stack,
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.25),
        metadata={"spacing": 3.0, "unit": "mm", "axes": "ZYX"},
    )
    vol = read_tiff(tmp_path / "stack.tif")
    np.testing.assert_array_equal(vol.data, stack)
    np.testing.assert_allclose(vol.spacing, (3.0, 0.25, 0.5))
    labels = (stack > 2000).astype(np.uint8)
    [out] = write_label_file(tmp_path / "seg.tif", labels, vol.source, vol.affine)
    back = read_tiff(out)
    np.testing.assert_array_equal(back.data, labels)
    np.testing.assert_allclose(back.spacing, vol.spacing)


def test_plain_stack_2d_image_and_int32_labels(tmp_path: Path) -> None:
    tifffile.imwrite(
        tmp_path / "plain.tiff",
        np.arange(60, dtype=np.float32).reshape(3, 4, 5),
        photometric="minisblack",
    )
    vol = read_tiff(tmp_path / "plain.tiff")
    assert vol.data.shape == (3, 4, 5) and vol.spacing == (1.0, 1.0, 1.0)
    tifffile.imwrite(tmp_path / "one.tif", np.ones((4, 5), np.uint8))
    one = read_tiff(tmp_path / "one.tif")
    assert one.data.shape == (1, 4, 5)
    big = np.full((1, 4, 5), 70000, np.int32)
    [out] = write_labels(str(tmp_path / "big.tif"), big, {"metadata": dict(one.metadata)})
    assert tifffile.imread(out).shape == (4, 5)  # back in the source's own layout
    assert tifffile.imread(out).max() == 70000


def test_rgb_and_corrupt_tiff_refused(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((4, 8, 8, 3), np.uint8), photometric="rgb")
    with pytest.raises(ValueError, match="rgb.tif.*colour"):
        read_tiff(tmp_path / "rgb.tif")
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match="bad.tif: cannot read as TIFF"):
        read_tiff(tmp_path / "bad.tif")


@pytest.mark.parametrize("spacing", [float("nan"), float("inf"), -2.0, 0.0])
def test_bad_imagej_spacing_is_refused(tmp_path: Path, spacing: float) -> None:
    p = tmp_path / "stack.tif"
    data = np.zeros((4, 8, 8), np.uint16)
    tifffile.imwrite(p, data, imagej=True, metadata={"spacing": 1.0, "axes": "ZYX"})
    raw = p.read_bytes()
    bad = raw.replace(b"spacing=1.0", f"spacing={spacing}".encode()[:11].ljust(11))
    assert bad != raw
    p.write_bytes(bad)
    if spacing == 0.0:  # "spacing=0.0" reads as absent (ImageJ's own default): 1
        assert read_tiff(p).spacing[0] == 1.0
        return
    with pytest.raises(ValueError, match="stack.tif: (TIFF ImageJ spacing|ImageJ spacing)"):
        read_tiff(p)


def test_unparsable_imagej_spacing_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, np.zeros((4, 8, 8), np.uint16), imagej=True, metadata={"spacing": 1.0})
    p.write_bytes(p.read_bytes().replace(b"spacing=1.0", b"spacing=x.0"))
    with pytest.raises(ValueError, match="stack.tif: "):
        read_tiff(p)
