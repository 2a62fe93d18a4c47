"""The interactive segmentation session: objects, prompts, rounds, undo/redo, labels.

This is the public engine API of DESIGN.md (``napari_limnet.Session`` / ``RoundEvent``).
It owns all state; the algorithm of one round lives in :func:`rounds.run_round`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from . import rounds
from .fusion import FusionRule
from .prompts import Prompt, SlicePrompts, slice_prompts
from .rounds import RoundOptions
from .volume import Volume

__all__ = ["Prompt", "RoundEvent", "Session"]

_MAX_UNDO = 64  # history steps kept per object (oldest dropped first)


@dataclass(frozen=True)
class RoundEvent:
    """One slice decided by a round (yielded by :meth:`Session.run_iter`).

    z: the slice index (0 for a 2D image).
    mask: the FINAL bool (Y, X) mask of slice z for this round.
    done: slices decided so far in this round (this one included).
    total: current estimate of how many slices the round decides (>= done; may grow).
    axis: the volume axis slice z lies across: 0 unless the round's prompts lie on another
    axis (see ``Session.add_click``); ``mask`` then has that plane's shape, the volume's
    shape without that axis. A round with prompts on several axes runs one pass per axis,
    axis 0 first, and a later pass may change voxels an earlier pass's events showed:
    ``Session.mask`` is the round's result.
    """

    z: int
    mask: np.ndarray
    done: int
    total: int
    axis: int = 0


class _Packed:
    """A non-empty 2D bool mask stored as its bounding box, bit-packed."""

    __slots__ = ("y0", "x0", "h", "w", "bits")

    def __init__(self, y0: int, x0: int, h: int, w: int, bits: np.ndarray) -> None:
        self.y0, self.x0, self.h, self.w, self.bits = y0, x0, h, w, bits

    @classmethod
    def pack(cls, m: np.ndarray) -> _Packed | None:
        rows = np.flatnonzero(m.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(m.any(axis=0))
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        crop = np.ascontiguousarray(m[y0:y1, x0:x1])
        return cls(int(y0), int(x0), int(y1 - y0), int(x1 - x0), np.packbits(crop))

    def crop(self) -> np.ndarray:
        n = self.h * self.w
        return np.unpackbits(self.bits, count=n).reshape(self.h, self.w).astype(bool)

    def unpack(self, shape: tuple[int, int]) -> np.ndarray:
        out = np.zeros(shape, bool)
        out[self.y0 : self.y0 + self.h, self.x0 : self.x0 + self.w] = self.crop()
        return out

    def same(self, other: _Packed | None) -> bool:
        return (
            other is not None
            and (self.y0, self.x0, self.h, self.w) == (other.y0, other.x0, other.h, other.w)
            and np.array_equal(self.bits, other.bits)
        )


@dataclass
class _Step:
    """One undoable step: a round or a set_mask."""

    committed_before: tuple[Prompt, ...]
    committed_after: tuple[Prompt, ...]
    before: dict[int, _Packed | None]
    after: dict[int, _Packed | None]


@dataclass
class _Object:
    masks: dict[int, _Packed] = field(default_factory=dict)
    committed: tuple[Prompt, ...] = ()  # prompts used by rounds (consistent with masks)
    pending: list[Prompt] = field(default_factory=list)  # new, not yet run
    removed: set[int] = field(default_factory=set)  # uids of committed prompts removed since
    undo: list[_Step] = field(default_factory=list)
    redo: list[_Step] = field(default_factory=list)


@dataclass
class _Plan:
    """What one round consumes, fixed when the round starts.

    prompts[axis][i]: all prompts of slice i across axis (only slices with something new);
    pinned[axis]: that axis's slices prompted in earlier rounds.
    """

    obj: int
    token: object
    prompts: dict[int, dict[int, SlicePrompts]]
    pinned: dict[int, frozenset[int]]
    pending: tuple[Prompt, ...]
    removed_uids: frozenset[int]
    options: RoundOptions


def _no_events() -> Iterator[RoundEvent]:
    """The empty round (nothing new): a generator that yields nothing."""
    yield from ()


class Session:
    """Interactive segmentation of one volume, object by object.

    ``Session(volume, spacing=(sz, sy, sx), model=model)`` wraps a (Z, Y, X) volume (numpy,
    or dask/zarr read lazily; a 2D (Y, X) image is one slice whose masks come back as (Y, X)).

    Object life cycle
    -----------------
    1. ``obj = s.new_object()`` gives a new id (1, 2, ...; ids are never reused).
    2. ``add_click`` / ``add_box`` add *pending* prompts; ``set_mask`` may start the object
       from an existing mask (an undoable step of its own). ``prompts(obj)`` lists the
       prompts (past ones first, then pending ones); ``remove_prompt(obj, i)`` deletes one:
       a past prompt's slice is then re-run in the next round.
    3. ``run(obj)`` (or ``run_iter(obj)``, the same round as a generator of
       :class:`RoundEvent`) runs one round: the slices that got new prompts -> 2D masks ->
       propagation -> fusion. With nothing pending it returns the current mask and adds no
       round. Prompts added while a round runs wait for the next round. Closing a
       ``run_iter`` generator early cancels the round: the session is exactly as before it,
       its prompts still pending. Starting another round (of any object) first cancels an
       unfinished one; so do ``set_mask``, ``undo``, ``redo``, ``reset`` and
       ``remove_object``, which change masks the round depends on.
    4. ``undo(obj)`` / ``redo(obj)`` step through whole rounds (their prompts and masks) and
       set_mask steps; with nothing to undo/redo they do nothing. Pending prompts are kept.
    5. ``reset(obj)`` empties the object (prompts, mask and history); ``remove_object(obj)``
       deletes it.

    ``mask(obj)`` is the object's bool mask, ``labels()`` the integer map of all objects
    (0 background). A voxel belongs to at most one object: a round or ``set_mask`` never
    takes voxels that another object already holds.

    Bad input raises ``ValueError`` and changes nothing. Masks are stored per slice as
    bit-packed bounding-box crops, so a dozen objects in a 512 x 512 x 400 CT stay small.

    Thread-safety: prompts may be added, listed and removed from another thread while a
    round runs; everything else must come from one thread at a time.

    Parameters
    ----------
    volume: the image (see :class:`~napari_limnet.engine.volume.Volume`).
    spacing: (sz, sy, sx) (or (sy, sx) for 2D); None: 1.0 (or the spacing of a ``Volume``).
    model: a loaded model (``napari_limnet.load_model()``); None loads the bundled default;
    or a function of no arguments that returns one, called at the start of every round in
    the thread that runs it (a viewer loads weights in its worker thread, and a cache behind
    the function may hand over other weights between rounds). The attribute ``model`` holds
    what was given.
    fusion, propagation: switch multi-round fusion / propagation (off: 2D only) on or off.
    threads: torch CPU threads (``torch.set_num_threads``, process-wide); None leaves it.
    z_range: inclusive (z_min, z_max) limits of propagation; None: the whole volume.
    direction: propagate "both" ways, "up" (increasing z) or "down".
    The last four may be changed later as attributes; they apply from the next round.
    ``fusion_rule`` (an attribute, default None: the model's) is the
    :class:`~napari_limnet.engine.fusion.FusionRule` the rounds use.
    """

    def __init__(
        self,
        volume: Any,
        spacing: Sequence[float] | None = None,
        model: Any = None,
        *,
        fusion: bool = True,
        propagation: bool = True,
        threads: int | None = None,
        z_range: tuple[int, int] | None = None,
        direction: str = "both",
    ) -> None:
        if isinstance(volume, Volume):
            self.volume = volume if spacing is None else Volume(volume._data, spacing)
        else:
            self.volume = Volume(volume, spacing)
        if threads is not None:
            if int(threads) < 1:
                raise ValueError(f"threads must be at least 1, got {threads}")
            import torch

            torch.set_num_threads(int(threads))
        self.fusion = bool(fusion)
        self.propagation = bool(propagation)
        self.z_range = z_range
        self.direction = direction
        self.fusion_rule: FusionRule | None = None
        if model is None:
            from .model import load_model

            model = load_model()
        self.model: Any = model
        self._objects: dict[int, _Object] = {}
        self._next_id = 1
        self._next_uid = 1
        self._active: tuple[object, Iterator[RoundEvent]] | None = None
        self._lock = threading.RLock()

    # -- settings --------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of masks and labels: (Z, Y, X), or (Y, X) for a 2D image."""
        return self.volume.shape[1:] if self.volume.is_2d else self.volume.shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (sz, sy, sx)."""
        return self.volume.spacing

    @property
    def z_range(self) -> tuple[int, int] | None:
        """Inclusive (z_min, z_max) limits of propagation, or None for the whole volume."""
        return self._z_range

    @z_range.setter
    def z_range(self, value: tuple[int, int] | None) -> None:
        if value is not None:
            try:
                lo, hi = (int(v) for v in value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"z_range must be (z_min, z_max) or None, not {value!r}") from exc
            nz = self.volume.shape[0]
            if not 0 <= lo <= hi < nz:
                raise ValueError(f"z_range {value} must satisfy 0 <= z_min <= z_max <= {nz - 1}")
            value = (lo, hi)
        self._z_range = value

    @property
    def direction(self) -> str:
        """Propagation direction: "both", "up" (increasing z) or "down"."""
        return self._direction

    @direction.setter
    def direction(self, value: str) -> None:
        if value not in ("both", "up", "down"):
            raise ValueError(f'direction must be "both", "up" or "down", not {value!r}')
        self._direction = value

    def _options(self) -> RoundOptions:
        return RoundOptions(
            fusion=bool(self.fusion),
            propagation=bool(self.propagation),
            z_range=self._z_range,
            direction=self._direction,
            fusion_rule=self.fusion_rule,
        )

    # -- objects ---------------------------------------------------------------------------
    @property
    def objects(self) -> list[int]:
        """Ids of the current objects, in creation order."""
        return list(self._objects)

    def new_object(self) -> int:
        """Create an empty object and return its id (1, 2, ...; never reused)."""
        with self._lock:
            obj = self._next_id
            self._next_id += 1
            self._objects[obj] = _Object()
            return obj

    def _get(self, obj: int) -> _Object:
        try:
            return self._objects[obj]
        except (KeyError, TypeError):
            known = ", ".join(map(str, self._objects)) or "none"
            raise ValueError(
                f"unknown object {obj!r} (objects: {known}); create one with new_object()"
            ) from None

    def remove_object(self, obj: int) -> None:
        """Delete an object, its prompts, mask and history (its id is not reused)."""
        self._get(obj)
        self._cancel_active()
        with self._lock:
            del self._objects[obj]

    def reset(self, obj: int) -> None:
        """Empty an object: no prompts, an empty mask, no undo/redo history."""
        self._get(obj)
        self._cancel_active()
        with self._lock:
            self._objects[obj] = _Object()

    # -- prompts ---------------------------------------------------------------------------
    def _add(self, obj: int, prompt: Prompt) -> None:
        with self._lock:
            o = self._get(obj)
            o.pending.append(replace(prompt, uid=self._next_uid))
            self._next_uid += 1

    def add_click(
        self, obj: int, point: Sequence[float], positive: bool = True, axis: int = 0
    ) -> None:
        """Add a pending click at voxel ``(z, y, x)`` (``(y, x)`` also works for 2D images).

        positive=False marks background (a correction that removes voxels). axis: the volume
        axis normal to the slice the click was placed on (2 for a sagittal view of an axial
        scan); the 2D step then runs on that plane and propagation along that axis.
        """
        self._get(obj)
        self._add(obj, Prompt.click(self.volume, point, positive, axis))

    def add_box(self, obj: int, z: int, box: Sequence[int], axis: int = 0) -> None:
        """Add a pending box on slice ``z``: ``(y0, x0, y1, x1)``, inclusive corners.

        axis: as for :meth:`add_click`; ``z`` is then the index along that axis and the
        corners are given in the slice's own two axes, in volume order.
        """
        self._get(obj)
        self._add(obj, Prompt.box(self.volume, z, box, axis))

    def add_scribble(self, obj: int, points: Any, positive: bool = True, axis: int = 0) -> None:
        """Add a pending scribble: ``points`` (N, 3) voxel indices on one slice, joined as a
        polyline (one point is a click). positive=False: a stroke across a wrong region.
        axis: as for :meth:`add_click`."""
        self._get(obj)
        self._add(obj, Prompt.scribble(self.volume, points, positive, axis))

    def add_lasso(self, obj: int, points: Any, axis: int = 0) -> None:
        """Add a pending lasso: the vertices ``points`` (N >= 3, 3) of a closed polygon drawn
        roughly around the object on one slice (voxel indices). axis: as for
        :meth:`add_click`."""
        self._get(obj)
        self._add(obj, Prompt.lasso(self.volume, points, axis))

    def prompts(self, obj: int) -> list[Prompt]:
        """The object's prompts: past ones (``round`` set) first, then pending ones."""
        with self._lock:
            o = self._get(obj)
            return [p for p in o.committed if p.uid not in o.removed] + list(o.pending)

    def remove_prompt(self, obj: int, index: int) -> None:
        """Delete the prompt ``prompts(obj)[index]``.

        A pending prompt simply goes away. Removing a past prompt changes its slice's
        prompts, so that slice is re-run (with its remaining prompts) in the next round.
        """
        with self._lock:
            o = self._get(obj)
            listed = self.prompts(obj)
            if isinstance(index, bool) or not isinstance(index, int | np.integer):
                raise ValueError(f"a prompt index must be an integer, not {index!r}")
            if not -len(listed) <= index < len(listed):
                raise ValueError(
                    f"object {obj} has {len(listed)} prompt(s); there is no prompt {index}"
                )
            p = listed[index]
            if p.pending:
                o.pending = [q for q in o.pending if q.uid != p.uid]
            else:
                o.removed.add(p.uid)

    # -- masks -----------------------------------------------------------------------------
    def _slice_of(self, o: _Object, z: int) -> np.ndarray | None:
        p = o.masks.get(z)
        return None if p is None else p.unpack(self.volume.shape[1:])

    def _blocked(self, obj: int, z: int) -> np.ndarray | None:
        out = None
        for k, o in self._objects.items():
            p = o.masks.get(z) if k != obj else None
            if p is None:
                continue
            if out is None:
                out = np.zeros(self.volume.shape[1:], bool)
            out[p.y0 : p.y0 + p.h, p.x0 : p.x0 + p.w] |= p.crop()
        return out

    def mask(self, obj: int) -> np.ndarray:
        """The object's current bool mask, (Z, Y, X) (or (Y, X) for a 2D image)."""
        with self._lock:
            o = self._get(obj)
            out = np.zeros(self.volume.shape, bool)
            for z, p in o.masks.items():
                out[z, p.y0 : p.y0 + p.h, p.x0 : p.x0 + p.w] = p.crop()
        return out[0] if self.volume.is_2d else out

    def labels(self) -> np.ndarray:
        """Integer map (Z, Y, X) (or (Y, X)): 0 background, else the id of the voxel's object.

        Its type is the smallest unsigned one that holds the largest id (uint8 up to 255,
        then uint16, then uint32): on a 512 x 512 x 1000 CT a quarter of an int32 map.
        """
        with self._lock:
            top = max(self._objects, default=0)
            dtype = np.uint8 if top < 1 << 8 else np.uint16 if top < 1 << 16 else np.uint32
            out = np.zeros(self.volume.shape, dtype)
            for k, o in self._objects.items():
                for z, p in o.masks.items():
                    view = out[z, p.y0 : p.y0 + p.h, p.x0 : p.x0 + p.w]
                    view[p.crop()] = k
        return out[0] if self.volume.is_2d else out

    def set_mask(self, obj: int, mask: Any) -> None:
        """Replace the object's mask (an earlier segmentation, brush edits): one undo step.

        ``mask`` has the session's shape (any dtype; nonzero is inside). Voxels another
        object holds are left to that object. Pending prompts stay pending.
        """
        o = self._get(obj)
        shp = tuple(getattr(mask, "shape", np.shape(mask)))
        full = self.volume.shape
        if shp not in (self.shape, full):
            raise ValueError(f"the mask has shape {shp} but the image has shape {self.shape}")
        self._cancel_active()
        with self._lock:
            new: dict[int, _Packed] = {}
            for z in range(full[0]):
                m = np.asarray(mask if shp == full[1:] else mask[z]) != 0
                b = self._blocked(obj, z)
                if b is not None:
                    m &= ~b
                p = _Packed.pack(m)
                if p is not None:
                    new[z] = p
            before, after = {}, {}
            for z in set(o.masks) | set(new):
                old, nw = o.masks.get(z), new.get(z)
                if (old is None and nw is None) or (old is not None and old.same(nw)):
                    continue
                before[z], after[z] = old, nw
            o.masks = new
            self._push(o, _Step(o.committed, o.committed, before, after))

    @staticmethod
    def _push(o: _Object, step: _Step) -> None:
        o.undo.append(step)
        del o.undo[:-_MAX_UNDO]
        o.redo.clear()

    # -- undo / redo -----------------------------------------------------------------------
    @staticmethod
    def _apply(o: _Object, masks: dict[int, _Packed | None]) -> None:
        for z, p in masks.items():
            if p is None:
                o.masks.pop(z, None)
            else:
                o.masks[z] = p

    def undo(self, obj: int) -> None:
        """Undo the object's last round (its prompts and masks) or set_mask; else nothing."""
        o = self._get(obj)
        if not o.undo:
            return
        self._cancel_active()
        with self._lock:
            step = o.undo.pop()
            self._apply(o, step.before)
            o.committed = step.committed_before
            o.removed &= {p.uid for p in o.committed}
            o.redo.append(step)

    def redo(self, obj: int) -> None:
        """Redo the last undone step of the object; with nothing to redo, nothing happens."""
        o = self._get(obj)
        if not o.redo:
            return
        self._cancel_active()
        with self._lock:
            step = o.redo.pop()
            self._apply(o, step.after)
            o.committed = step.committed_after
            o.removed &= {p.uid for p in o.committed}
            o.undo.append(step)

    # -- rounds ----------------------------------------------------------------------------
    def _cancel_active(self) -> None:
        active, self._active = self._active, None
        if active is not None:
            active[1].close()

    def _plan(self, obj: int) -> _Plan | None:
        o = self._get(obj)
        if not o.pending and not o.removed:
            return None
        kept = [p for p in o.committed if p.uid not in o.removed]
        changed = {(p.axis, p.z) for p in o.pending}
        changed |= {(p.axis, p.z) for p in o.committed if p.uid in o.removed}
        by_axis: dict[int, dict[int, SlicePrompts]] = {}
        for a, z in sorted(changed):
            on_z = [p for p in kept + o.pending if p.axis == a and p.z == z]
            by_axis.setdefault(a, {})[z] = slice_prompts(on_z)
        pinned = {
            a: frozenset(p.z for p in kept if p.axis == a) - set(by_axis[a]) for a in by_axis
        }
        return _Plan(
            obj=obj,
            token=object(),
            prompts=by_axis,
            pinned=pinned,
            pending=tuple(o.pending),
            removed_uids=frozenset(o.removed),
            options=self._options(),
        )

    def run_iter(self, obj: int) -> Iterator[RoundEvent]:
        """Run one round as a generator of :class:`RoundEvent` (see the class docstring).

        The round's prompts are fixed when this is called; results are committed when the
        generator is exhausted. Closing it early cancels the round without side effects.
        """
        self._get(obj)
        self._cancel_active()
        with self._lock:
            plan = self._plan(obj)
        if plan is None:
            return _no_events()
        gen = self._round(plan)
        self._active = (plan.token, gen)
        return gen

    def run(self, obj: int) -> np.ndarray:
        """Run one round to the end and return the object's mask (see :meth:`run_iter`)."""
        for _ in self.run_iter(obj):
            pass
        return self.mask(obj)

    def _loaded_model(self) -> Any:
        """The model for this round: ``model`` itself, or what its function returns."""
        from .model import LimNetModel

        m = self.model
        if callable(m) and not isinstance(m, LimNetModel):
            return m()
        return m

    def _round(self, plan: _Plan) -> Iterator[RoundEvent]:
        """One pass of ``rounds.run_round`` per axis with new prompts (axis 0 first); each
        pass starts from the masks the passes before it decided."""
        # axis-0 slices decided so far, bit-packed (None: empty), so that a round's working
        # set does not grow by a full slice per slice it decides
        decided: dict[int, _Packed | None] = {}
        done = 0
        try:
            model = self._loaded_model()
            for axis in sorted(plan.prompts):
                for ev in self._pass(model, plan, axis, decided, done):
                    done = ev.done
                    yield ev
            self._commit(plan, decided)
        finally:
            if self._active is not None and self._active[0] is plan.token:
                self._active = None

    def _before(self, obj: int, decided: dict[int, _Packed | None], z: int) -> np.ndarray | None:
        """Slice z of the object as the round's next pass starts (None: empty)."""
        if z in decided:
            p = decided[z]
            return None if p is None else p.unpack(self.volume.shape[1:])
        with self._lock:
            return self._slice_of(self._objects[obj], z)

    def _dense(
        self, obj: int, decided: dict[int, _Packed | None], *, others: bool = False
    ) -> np.ndarray | None:
        """The object's whole (Z, Y, X) mask as the next pass starts; others=True: the union
        of the other objects' masks instead (None when they have none)."""
        out = None if others else np.zeros(self.volume.shape, bool)
        with self._lock:
            for k, o in self._objects.items():
                if (k != obj) != others:
                    continue
                for z, p in o.masks.items():
                    if out is None:
                        out = np.zeros(self.volume.shape, bool)
                    out[z, p.y0 : p.y0 + p.h, p.x0 : p.x0 + p.w] |= p.crop()
        if not others:
            for z, p in decided.items():
                out[z] = False if p is None else p.unpack(self.volume.shape[1:])
        return out

    def _pass(
        self, model: Any, plan: _Plan, axis: int, decided: dict[int, _Packed | None], done: int
    ) -> Iterator[RoundEvent]:
        """The round's prompts across ``axis``: yields their events, then puts the axis-0
        slices the pass changed into ``decided``. Across axis 1 or 2 the round sees the
        volume through ``Volume.along`` and the masks as whole arrays (``_dense``)."""
        import torch

        obj = plan.obj
        if axis == 0:
            volume: Any = self.volume
            options = plan.options

            def current(z: int) -> np.ndarray | None:
                return self._before(obj, decided, int(z))

            def blocked(z: int) -> np.ndarray | None:
                with self._lock:
                    return self._blocked(obj, int(z))

        else:
            volume = self.volume.along(axis)
            # z_range and direction limit propagation along the slice axis only
            options = replace(plan.options, z_range=None, direction="both")
            own = self._dense(obj, decided)
            others = self._dense(obj, decided, others=True)
            own_a = np.moveaxis(own, axis, 0)
            others_a = None if others is None else np.moveaxis(others, axis, 0)

            def current(z: int) -> np.ndarray | None:
                m = own_a[int(z)]
                return m.copy() if m.any() else None

            def blocked(z: int) -> np.ndarray | None:
                b = None if others_a is None else others_a[int(z)]
                return b.copy() if b is not None and b.any() else None

        shape = volume.shape[1:]
        results: dict[int, Any] = {}  # axis 0: packed slices; else whole planes
        with torch.inference_mode():
            it = rounds.run_round(
                model,
                volume,
                plan.prompts[axis],
                current,
                plan.pinned[axis],
                blocked,
                options,
            )
        try:
            while True:
                with torch.inference_mode():
                    try:
                        z, m, total = next(it)
                    except StopIteration:
                        break
                z = int(z)
                m = np.asarray(m, dtype=bool).reshape(shape).copy()
                b = blocked(z)
                if b is not None:
                    m &= ~b
                results[z] = _Packed.pack(m) if axis == 0 else m
                n = done + len(results)
                yield RoundEvent(z, m.copy(), n, max(done + int(total), n), axis)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        if axis == 0:
            decided.update(results)
            return
        for i, m in results.items():
            own_a[i] = m
        for z in range(own.shape[0]):
            old = self._before(obj, decided, z)
            if (old is None and own[z].any()) or (
                old is not None and not np.array_equal(old, own[z])
            ):
                decided[z] = _Packed.pack(own[z])

    def _commit(self, plan: _Plan, results: dict[int, _Packed | None]) -> None:
        """Store the round's slices (already without other objects' voxels) as one undo step."""
        with self._lock:
            o = self._objects[plan.obj]
            before: dict[int, _Packed | None] = {}
            after: dict[int, _Packed | None] = {}
            for z, new in results.items():
                old = o.masks.get(z)
                if (old is None and new is None) or (old is not None and old.same(new)):
                    continue
                before[z], after[z] = old, new
            kept = tuple(p for p in o.committed if p.uid not in plan.removed_uids)
            rnd = 1 + max((p.round or 0 for p in kept), default=0)
            captured = {p.uid for p in plan.pending}
            # prompts deleted while the round ran were used by it: past now, and removed
            deleted = captured - {p.uid for p in o.pending}
            committed_before = o.committed
            o.committed = kept + tuple(replace(p, round=rnd) for p in plan.pending)
            o.pending = [p for p in o.pending if p.uid not in captured]
            o.removed = ((o.removed - plan.removed_uids) | deleted) & {p.uid for p in o.committed}
            self._apply(o, after)
            self._push(o, _Step(committed_before, o.committed, before, after))
