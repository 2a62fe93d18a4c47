"""Volume: validation, NaN handling, 2D images, lazy (dask / zarr) reading."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_limnet import Session
from napari_limnet.engine import session as session_mod
from napari_limnet.engine.volume import Volume


class Counting:
    """An array-like that records which z slices are read (and refuses whole reads)."""

    def __init__(self, arr: np.ndarray) -> None:
        self.arr, self.shape, self.dtype, self.ndim = arr, arr.shape, arr.dtype, arr.ndim
        self.reads: list[int] = []

    def __getitem__(self, key):
        k0 = key[0] if isinstance(key, tuple) else key
        zs = range(self.shape[0])[k0] if isinstance(k0, slice) else [k0]
        self.reads.extend(int(z) for z in np.atleast_1d(zs))
        return self.arr[key]

    def __array__(self, *a, **k):
        raise AssertionError("the whole volume was read")


def test_numpy_is_not_copied_and_slices_are_float32():
    v = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    vol = Volume(v, (3, 1, 2))
    assert vol.shape == (4, 5, 6) and vol.spacing == (3.0, 1.0, 2.0) and not vol.lazy
    assert vol._data is v
    s = vol.slice(2)
    assert s.dtype == np.float32 and s.shape == (5, 6)
    np.testing.assert_array_equal(s, v[2])
    s[:] = 0  # the caller owns the slice
    assert vol.slice(2)[0, 1] == v[2, 0, 1]
    assert vol.stats["min"] <= vol.stats["p1"] <= vol.stats["p99"] <= vol.stats["max"]
    with pytest.raises(IndexError):
        vol.slice(4)


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64, bool]
)
def test_numeric_dtypes(dtype):
    assert Volume(np.ones((2, 4, 4), dtype)).slice(0).dtype == np.float32


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (np.zeros((2, 3, 8, 8)), "4D"),
        (np.zeros((16, 16, 3), np.uint8), "RGB"),
        (np.zeros((10, 16, 16, 4), np.uint8), "4D"),
        (np.zeros((0, 8, 8)), "empty"),
        (np.zeros((4, 8, 0)), "empty"),
        (np.zeros(8), "3D"),
        (np.full((5, 8, 8), np.nan, np.float32), "NaN"),
        (np.array([["a", "b"], ["c", "d"]]), "numbers"),
        (np.zeros((2, 4, 4), complex), "numbers"),
        (np.zeros((2, 4, 4), object), "numbers"),
        (np.zeros((2, 4), [("r", "u1"), ("g", "u1")]), "structured"),
    ],
)
def test_bad_volumes(data, match):
    with pytest.raises(ValueError, match=match):
        Volume(data)


@pytest.mark.parametrize(
    ("spacing", "match"),
    [
        ((1, 0, 1), "positive"),
        ((1, -2, 1), "positive"),
        ((1, float("nan"), 1), "positive"),
        ((1, float("inf"), 1), "positive"),
        ((1, 1), "spacing must have"),
        ((1, 1, 1, 1), "spacing must have"),
        (("a", 1, 1), "numbers"),
        (3.0, "numbers"),
    ],
)
def test_bad_spacing(spacing, match):
    with pytest.raises(ValueError, match=match):
        Volume(np.zeros((3, 4, 4)), spacing)


def test_2d_image():
    img = np.arange(20, dtype=np.uint8).reshape(4, 5)
    vol = Volume(img, (0.5, 0.25))
    assert vol.is_2d and vol.shape == (1, 4, 5) and vol.spacing == (1.0, 0.5, 0.25)
    np.testing.assert_array_equal(vol.slice(0), img)
    assert Volume(img, (2, 0.5, 0.25)).spacing == (2.0, 0.5, 0.25)
    with pytest.raises(ValueError, match="spacing"):
        Volume(img, (1,))


def test_isolated_nans_are_replaced_with_a_warning():
    v = np.linspace(-100, 100, 3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8)
    v[1, 2, 3] = np.nan
    v[2, 0, 0] = np.inf
    with pytest.warns(RuntimeWarning, match="NaN"):
        vol = Volume(v)
        s1, s2 = vol.slice(1), vol.slice(2)
    assert np.isfinite(s1).all() and s1[2, 3] == vol.stats["min"] == -100
    assert s2[0, 0] == vol.stats["max"]


def test_nans_outside_the_sample_warn_when_read():
    v = np.zeros((100, 64, 64), np.float32)
    v[37, 5, 5] = np.nan  # not in the strided sample
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vol = Volume(v)
        vol.slice(36)
    with pytest.warns(RuntimeWarning):
        assert np.isfinite(vol.slice(37)).all()


def test_all_nan_sample_but_finite_elsewhere():
    v = np.full((50, 8, 8), np.nan, np.float32)
    v[23] = 5.0  # missed by the strided sample: the volume is still valid
    with pytest.warns(RuntimeWarning):
        vol = Volume(v)
    assert vol.stats["min"] == 5.0 and (vol.slice(0) == 5.0).all()


def test_creation_reads_only_a_sample():
    arr = np.random.default_rng(0).normal(size=(200, 64, 64)).astype(np.float32)
    c = Counting(arr)
    vol = Volume(c)
    assert vol.lazy and len(set(c.reads)) <= 8
    c.reads.clear()
    np.testing.assert_array_equal(vol.slice(150), arr[150])
    assert c.reads == [150]


def _blob(shape=(60, 32, 32)):
    v = np.zeros(shape, np.int16)
    v[20:26, 8:20, 8:20] = 100
    return v


def _fake_round(model, volume, prompts, current, pinned, blocked, options=None):
    """Reads the prompted slices and their neighbours only."""
    for z in sorted(prompts):
        for zz in (z, z - 1, z + 1):
            if 0 <= zz < volume.shape[0]:
                yield zz, volume.slice(zz) > 50, len(prompts) * 3


def test_lazy_array_is_read_only_where_the_round_needs(monkeypatch):
    monkeypatch.setattr(session_mod.rounds, "run_round", _fake_round)
    c = Counting(_blob())
    s = Session(c, model=object())
    c.reads.clear()
    a = s.new_object()
    s.add_click(a, (22, 10, 10))
    m = s.run(a)
    assert set(c.reads) == {21, 22, 23}
    assert m[21:24, 8:20, 8:20].all() and m.sum() == 3 * 144
    s.labels()
    assert set(c.reads) == {21, 22, 23}


def test_dask_array_is_read_lazily(monkeypatch):
    da = pytest.importorskip("dask.array")
    monkeypatch.setattr(session_mod.rounds, "run_round", _fake_round)
    c = Counting(_blob())
    d = da.from_array(c, chunks=(1, 32, 32))
    s = Session(d, spacing=(2, 1, 1), model=object())
    assert s.volume.lazy
    before = set(c.reads)
    assert len(before) <= 8
    c.reads.clear()
    a = s.new_object()
    s.add_click(a, (22, 10, 10))
    s.run(a)
    assert set(c.reads) == {21, 22, 23}


def test_zarr_array_is_read_lazily(monkeypatch):
    zarr = pytest.importorskip("zarr")
    monkeypatch.setattr(session_mod.rounds, "run_round", _fake_round)
    v = _blob()
    z = zarr.create_array(store={}, shape=v.shape, chunks=(1, 32, 32), dtype=v.dtype)
    z[:] = v
    s = Session(z, model=object())
    assert s.volume.lazy and s.volume._data is z
    a = s.new_object()
    s.add_click(a, (22, 10, 10))
    m = s.run(a)
    np.testing.assert_array_equal(m[21:24], v[21:24] > 50)
    assert not m[:21].any() and not m[24:].any()


def test_creation_is_fast_on_a_large_volume():
    import time

    v = np.zeros((400, 512, 512), np.int16)
    t = time.perf_counter()
    Volume(v, (1, 0.7, 0.7))
    assert time.perf_counter() - t < 0.5
