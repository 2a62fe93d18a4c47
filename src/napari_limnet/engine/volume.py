"""The image a session segments: a validated, lazily read (Z, Y, X) volume.

``Volume`` implements the ``VolumeSource`` protocol of :mod:`napari_limnet.engine.rounds`:
``shape`` (Z, Y, X), ``spacing`` (sz, sy, sx) and ``slice(z)`` -> float32 (Y, X).
``Volume.along(axis)`` is the same image seen with another axis as its slice axis (a round
on prompts placed in a coronal or sagittal view).

* numpy arrays are wrapped without a copy; dask, zarr and other array-likes (anything with
  ``shape``, ``dtype`` and numpy-style indexing) are read lazily, one slice at a time, only
  where a round asks for it (plus a small strided sample when the volume is created).
* A 2D (Y, X) image is one slice (Z = 1); its spacing may be given as (sy, sx).
* Intensity statistics come from a strided sample (at most a few hundred thousand voxels),
  never from a full pass over the volume, so creating a ``Volume`` is fast.
* Non-finite voxels (NaN, +-inf) are replaced in every slice that is read: NaN and -inf by
  the smallest finite value of the sample, +inf by the largest, with one ``RuntimeWarning``.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Volume", "VolumeAlong"]

_SAMPLE_SLICES = 8  # slices read for the statistics of a lazy volume
_SAMPLE_VOXELS = 1 << 18  # about 260 k voxels in the sample
_CACHE_SLICES = 4  # recently read slices kept (lazy volumes only)


def _is_lazy(data: Any) -> bool:
    return not isinstance(data, np.ndarray) and all(
        hasattr(data, a) for a in ("shape", "dtype", "__getitem__", "ndim")
    )


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"the image has a type numpy does not understand ({dtype!r})") from exc
    if dt.names is not None:
        raise ValueError(
            "the image has a structured (multi-field, e.g. RGB) data type; "
            "give a single-channel greyscale volume"
        )
    if dt == np.bool_ or np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating):
        return dt
    raise ValueError(
        f"the image must hold numbers (integers or floats), not {dt} values; "
        "convert it to a numeric array first"
    )


class Volume:
    """A validated (Z, Y, X) greyscale volume, read slice by slice.

    Parameters
    ----------
    data:
        (Z, Y, X) or (Y, X) array of any integer, float or bool dtype: numpy, dask, zarr or
        another array-like with numpy-style indexing (read lazily).
    spacing:
        Voxel size (sz, sy, sx), or (sy, sx) for a 2D image; every value finite and > 0.
        None means 1.0 everywhere.

    Raises
    ------
    ValueError
        4D or RGB/RGBA data, a zero-size or all-NaN volume, a non-numeric dtype, a spacing
        of the wrong length or not positive.
    """

    def __init__(self, data: Any, spacing: Sequence[float] | None = None) -> None:
        if isinstance(data, Volume):
            raise ValueError("data is already a Volume; pass its spacing to it instead")
        if not _is_lazy(data):
            data = np.asarray(data)
        self.lazy: bool = _is_lazy(data)
        self.dtype: np.dtype = _check_dtype(data.dtype)
        shape = tuple(int(s) for s in data.shape)
        ndim = len(shape)
        if ndim == 3 and shape[-1] in (3, 4) and shape[-2] > 4 and shape[0] > 4:
            raise ValueError(
                f"the image of shape {shape} looks like an RGB/RGBA colour image "
                "(3 or 4 values in the last axis); give a greyscale (Z, Y, X) volume"
            )
        if ndim == 4:
            raise ValueError(
                f"the image is 4D {shape} (a time series or several channels?); "
                "give a single 3D (Z, Y, X) volume, e.g. one channel or time point"
            )
        if ndim not in (2, 3):
            raise ValueError(
                f"the image must be a 3D (Z, Y, X) volume or a 2D (Y, X) image, "
                f"not {ndim}D of shape {shape}"
            )
        if 0 in shape:
            raise ValueError(f"the image is empty (shape {shape})")
        self.is_2d: bool = ndim == 2
        self.shape: tuple[int, int, int] = (1, *shape) if self.is_2d else shape  # type: ignore[assignment]
        self.spacing: tuple[float, float, float] = self._check_spacing(spacing)
        self._data = data
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._warned = False
        self._stats_from_sample()

    # -- validation ----------------------------------------------------------------------
    def _check_spacing(self, spacing: Sequence[float] | None) -> tuple[float, float, float]:
        if spacing is None:
            return (1.0, 1.0, 1.0)
        try:
            sp = [float(s) for s in spacing]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"spacing must be a sequence of numbers, not {spacing!r}") from exc
        if self.is_2d and len(sp) == 2:
            sp = [1.0, *sp]
        if len(sp) != 3:
            want = "(sy, sx) or (sz, sy, sx)" if self.is_2d else "(sz, sy, sx)"
            raise ValueError(f"spacing must have {want} values, got {len(sp)}: {tuple(spacing)}")
        if not all(np.isfinite(s) and s > 0 for s in sp):
            raise ValueError(
                f"every voxel spacing must be a positive number, got {tuple(spacing)}"
            )
        return (sp[0], sp[1], sp[2])

    def _stats_from_sample(self) -> None:
        Z, Y, X = self.shape
        nz = min(Z, _SAMPLE_SLICES if self.lazy else 32)
        zs = np.unique(np.linspace(0, Z - 1, nz).round().astype(int))
        per_slice = max(1, _SAMPLE_VOXELS // len(zs))
        step = max(1, int(np.sqrt(Y * X / per_slice)))
        if self.is_2d:
            sample = np.asarray(self._data[::step, ::step])[None]
        elif self.lazy:
            sample = np.stack([np.asarray(self._data[int(z), ::step, ::step]) for z in zs])
        else:
            sample = self._data[zs, ::step, ::step]
        sample = sample.astype(np.float32, copy=False)
        finite = np.isfinite(sample)
        self._has_nonfinite_sample = not finite.all()
        if not finite.any():
            vals = self._find_finite()
        else:
            vals = sample[finite]
        lo, hi = float(vals.min()), float(vals.max())
        p = np.percentile(vals, [0.5, 1, 50, 99, 99.5])
        self.stats: dict[str, float] = {
            "min": lo,
            "max": hi,
            "p0.5": float(p[0]),
            "p1": float(p[1]),
            "median": float(p[2]),
            "p99": float(p[3]),
            "p99.5": float(p[4]),
            "mean": float(vals.mean()),
            "std": float(vals.std()),
        }
        if self._has_nonfinite_sample:
            self._warn_nonfinite()

    def _find_finite(self) -> np.ndarray:
        """The sample was all NaN: look at whole slices until finite values turn up."""
        for z in range(self.shape[0]):
            s = np.asarray(self._raw(z), dtype=np.float32)
            ok = np.isfinite(s)
            if ok.any():
                return s[ok]
        raise ValueError("the image has no finite values (it is all NaN)")

    def _warn_nonfinite(self) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(
                "the image contains NaN or infinite voxels; they are replaced by the "
                f"smallest ({self.stats['min']:g}) or largest ({self.stats['max']:g}) finite value",
                RuntimeWarning,
                stacklevel=3,
            )

    # -- reading -------------------------------------------------------------------------
    def _raw(self, z: int, axis: int = 0) -> Any:
        if self.is_2d:
            return self._data
        index: list[Any] = [slice(None)] * 3
        index[axis] = z
        return self._data[tuple(index)]

    def slice(self, z: int, axis: int = 0) -> np.ndarray:
        """Slice ``z`` across ``axis`` as a new float32 array, non-finite voxels replaced:
        (Y, X) for axis 0, (Z, X) for axis 1, (Z, Y) for axis 2."""
        z, axis = int(z), int(axis)
        if not 0 <= axis < (1 if self.is_2d else 3):
            raise IndexError(f"axis {axis} is not an axis of the volume")
        if not 0 <= z < self.shape[axis]:
            raise IndexError(f"slice {z} is outside the volume (0..{self.shape[axis] - 1})")
        cached = self._cache.get((axis, z))
        if cached is not None:
            self._cache.move_to_end((axis, z))
            return cached.copy()
        out = np.array(self._raw(z, axis), dtype=np.float32, copy=True)
        if not np.isfinite(out).all():
            np.nan_to_num(
                out,
                copy=False,
                nan=self.stats["min"],
                posinf=self.stats["max"],
                neginf=self.stats["min"],
            )
            self._warn_nonfinite()
        if self.lazy:
            self._cache[(axis, z)] = out.copy()
            while len(self._cache) > _CACHE_SLICES:
                self._cache.popitem(last=False)
        return out

    def along(self, axis: int) -> VolumeAlong:
        """The volume with ``axis`` as its slice axis (axis 0: the volume's own slices)."""
        return VolumeAlong(self, axis)

    def __repr__(self) -> str:
        kind = type(self._data).__module__.split(".")[0] + "." + type(self._data).__name__
        return (
            f"Volume(shape={self.shape}, spacing={self.spacing}, dtype={self.dtype}, data={kind})"
        )


class VolumeAlong:
    """A :class:`Volume` seen across another axis: slice ``i`` is the plane at index ``i`` of
    ``axis``, its two axes the other two in volume order; shape and spacing permuted the same
    way. Read lazily through the volume (a ``VolumeSource`` for a round on that axis)."""

    def __init__(self, volume: Volume, axis: int) -> None:
        rest = [a for a in range(3) if a != axis]
        self.volume, self.axis = volume, int(axis)
        self.shape: tuple[int, int, int] = (
            volume.shape[axis],
            volume.shape[rest[0]],
            volume.shape[rest[1]],
        )
        sp = volume.spacing
        self.spacing: tuple[float, float, float] = (sp[axis], sp[rest[0]], sp[rest[1]])

    def slice(self, z: int) -> np.ndarray:
        """The plane at index ``z`` of the axis, float32."""
        return self.volume.slice(z, self.axis)
