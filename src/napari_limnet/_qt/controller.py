"""One image being segmented: its session, layers and objects, without Qt.

An :class:`ImageController` keeps what the widget used to keep per image: the engine
``Session``, the napari layers made for the image (clicks, boxes, labels), the objects (names,
colours, shown, locked, volumes), the prompts the layers show, brush edits not yet taken into
the session, the round in progress (its slices are written into the Labels layer here) and the
autosave payload. It tells its listeners what happened through ``psygnal`` signals:

``message(text, level)``
    a message for the user (level ``info``, ``warning`` or ``error``; the widget shows it in
    its status line and as a napari notification);
``status(text)``
    a status line only;
``objects_changed()``
    the objects (names, colours, volumes, shown, locked) changed: redraw the list;
``changed()``
    the work changed: autosave it;
``locked_painted(ids)``
    a brush stroke touched locked objects: call :meth:`ImageController.restore_locked` once
    napari has written the stroke (the widget does it on the next event-loop turn).

It holds napari layer objects but imports neither Qt nor a viewer: tests drive it with layers
made by :func:`new_layers` and a :class:`~napari_limnet._qt.round_runner.RoundRunner` in inline
mode (``tests/_qt/test_controller.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal

from . import autosave as autosave_mod
from .layers import (
    CLICK_COLORS,
    add_to_session,
    color_points,
    diff_prompts,
    from_session_prompt,
    grid_kwargs,
    points_to_prompts,
    prompt_from_json,
    resolve_axes,
    set_points,
    set_shapes,
    shapes_to_prompts,
    spacing_of,
)

if TYPE_CHECKING:
    from napari.layers import Image, Labels, Points, Shapes

    from ..engine.session import Session


@dataclass
class ObjectInfo:
    """One segmented object: its label value (= the session's object id), name, colour, volume."""

    id: int
    name: str
    color: tuple[float, float, float] = (1.0, 0.0, 0.0)
    volume_ml: float = 0.0
    visible: bool = True  # drawn in the Labels layer
    locked: bool = False  # never changed by a round, a brush, undo or reset

    def as_metadata(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "color": [float(c) for c in self.color],
            "visible": self.visible,
            "locked": self.locked,
        }


# Below this many voxels the Labels layer is compared with the session before every round
# (catches any edit); above it, only paint events mark objects as edited.
FULL_COMPARE_VOXELS = 16_000_000

LayerMaker = Callable[[str, Any, dict], Any]


def _make_layer(kind: str, data: Any, kwargs: dict) -> Any:
    """A napari layer of ``kind`` ('labels', 'shapes', 'points') with no viewer."""
    from napari import layers

    return getattr(layers, kind.capitalize())(data, **kwargs)


def new_layers(
    image: Image, shape: tuple[int, ...], negative: bool, add: LayerMaker | None = None
) -> tuple[Labels, Shapes, Points]:
    """The Labels, Shapes (boxes, scribbles, lassos) and Points (clicks) layers of ``image``,
    on its grid. ``add(kind, data, kwargs)`` makes each (the widget: ``viewer.add_<kind>``;
    by default a bare napari layer)."""
    add = add or _make_layer
    grid = grid_kwargs(image)
    data = image.data[0] if image.multiscale else image.data
    size = max(3.0, min(12.0, max(data.shape[-2:]) / 60))
    labels = add("labels", np.zeros(shape, np.uint16), {"name": f"{image.name} labels", **grid})
    shapes = add(
        "shapes",
        None,
        {
            "ndim": image.ndim,
            "name": f"{image.name} boxes",
            "features": {"positive": np.zeros(0, bool), "axis": np.zeros(0, int)},
            "feature_defaults": {"positive": not negative, "axis": -1},
            "edge_color": "yellow",
            "face_color": "transparent",
            "edge_width": max(1.0, size / 4),
            **grid,
        },
    )
    points = add(
        "points",
        None,
        {
            "ndim": image.ndim,
            "name": f"{image.name} clicks",
            "features": {"positive": np.zeros(0, bool), "axis": np.zeros(0, int)},
            "feature_defaults": {"positive": True, "axis": -1},
            "face_color": "positive",
            "face_color_cycle": CLICK_COLORS,
            "size": size,
            "border_width": 0,
            "out_of_slice_display": False,
            **grid,
        },
    )
    return labels, shapes, points


@dataclass
class RoundRecord:
    """The round in progress (or the last one) of an image."""

    obj: int
    t_start: float = field(default_factory=time.perf_counter)
    t_first: float | None = None  # seconds to the first slice written
    touched: set[int] = field(default_factory=set)  # axis-0 slices the round may have changed
    decided: set[tuple[int, int]] = field(default_factory=set)  # (axis, slice) it decided


class ImageController:
    """The session, layers and objects of one image (see the module docstring)."""

    message = Signal(str, str)
    status = Signal(str)
    objects_changed = Signal()
    changed = Signal()
    locked_painted = Signal(object)

    def __init__(
        self,
        image: Image,
        session: Session,
        points: Points,
        shapes: Shapes,
        labels: Labels,
        negative: bool = False,
    ) -> None:
        self.image = image
        self.session = session
        self.points = points
        self.shapes = shapes
        self.labels = labels
        self.two_d: bool = image.ndim == 2
        self.negative = negative  # the sign of the next prompt
        self.objects: dict[int, ObjectInfo] = {}
        self.current: int | None = None
        self.shown: list[tuple] = []  # prompts of the current object as the layers show them
        self.syncing = False  # the layers are being set from the session (not a user edit)
        self.edited: set[int] = set()  # objects painted on the Labels layer since last sync
        # voxel counts per slice (np.bincount of each slice), None: recount all slices
        self.slice_counts: list[np.ndarray] | None = None
        self.autosave_found: Path | None = None
        self.autosave_problems: list[str] = []  # damaged autosaves of this image, skipped
        self.round: RoundRecord | None = None
        self.last_round: dict[str, float] = {}  # the last completed round's speed
        self.last_round_text = ""  # the speed line of this image's last round
        self.base_colormap = labels.colormap  # the objects' colours; hiding one replaces it
        self.colormap_key: tuple = ()  # the objects' (id, shown) while one is hidden
        labels.events.paint.connect(self.on_paint)

    def find_autosave(self) -> Path | None:
        """Look for autosaved work of this image (damaged files go to ``autosave_problems``)."""
        self.autosave_problems = []
        self.autosave_found = autosave_mod.find_autosave(
            self.image, self.session.shape, self.autosave_problems
        )
        return self.autosave_found

    # ------------------------------------------------------------ grid
    @property
    def shape3(self) -> tuple[int, int, int]:
        s = self.labels.data.shape
        return (1, *s) if self.two_d else tuple(s)

    @property
    def data3(self) -> np.ndarray:
        """The Labels layer's array as (Z, Y, X) (a view: writes go to the layer)."""
        d = self.labels.data
        return d[None] if self.two_d else d

    def mask3(self, obj: int) -> np.ndarray:
        m = self.session.mask(obj)
        return m[None] if self.two_d else m

    def layers_alive(self, layers: Any) -> bool:
        """All of the image, clicks and labels layers are still in ``layers``."""
        return all(lay in layers for lay in (self.image, self.points, self.labels))

    def show(self, visible: bool) -> None:
        """Show or hide the image and the layers made for it."""
        for lay in (self.image, self.labels, self.shapes, self.points):
            lay.visible = visible

    # ------------------------------------------------------------ prompts
    def set_negative(self, negative: bool) -> None:
        """The next prompts are negative (background) when ``negative``."""
        self.negative = bool(negative)
        self.points.feature_defaults = {"positive": not self.negative, "axis": -1}
        self.shapes.feature_defaults = {"positive": not self.negative, "axis": -1}

    def show_prompts(self, prompts: list[tuple]) -> None:
        """Make the prompt layers show ``prompts`` (prompt tuples of the current object)."""
        self.syncing = True
        try:
            set_points(self.points, prompts, self.two_d)
            set_shapes(self.shapes, prompts, self.two_d)
            # replacing the features resets the defaults: keep the click sign the user chose
            self.points.feature_defaults = {"positive": not self.negative, "axis": -1}
        finally:
            self.syncing = False
        self.shown = list(prompts)

    def show_session_prompts(self, obj: int) -> None:
        self.show_prompts([from_session_prompt(p) for p in self.session.prompts(obj)])

    def layer_prompts(self) -> tuple[list[tuple], list[str]]:
        """The prompt tuples the layers hold, and the problems of those that cannot be."""
        clicks, dropped = points_to_prompts(self.points, self.shape3)
        boxes, problems = shapes_to_prompts(self.shapes, self.shape3)
        if dropped:
            problems.append("a click lies outside the image")
        return clicks + boxes, problems

    def take_prompts(self, source: Any, axis: int | None) -> bool:
        """The user edited a prompt layer (``source``), viewing slices across ``axis`` (None:
        the 3D view). True when the current object's prompts changed and were accepted (a
        round is then due); refused edits are undone in the layers, with a message."""
        if source is self.points:
            self.syncing = True
            try:
                color_points(self.points)
            finally:
                self.syncing = False
        # a prompt just placed lies on a slice of the view's axis (any of the volume's three)
        if axis is not None and not self.two_d:
            self.syncing = True
            try:
                resolve_axes(self.points, axis)
                resolve_axes(self.shapes, axis)
            finally:
                self.syncing = False
        new, problems = self.layer_prompts()
        if new == self.shown and not problems:
            return False
        if axis is None:
            self.show_prompts(self.shown)
            self.message.emit(
                "Prompts go on slices: switch to the 2D view (any axis order) and click again.",
                "warning",
            )
            return False
        if problems:
            self.show_prompts(self.shown)
            self.message.emit(
                "Prompt refused: " + "; ".join(sorted(set(problems))) + ".", "warning"
            )
            return False
        if self.refuse_locked(self.current):
            self.show_prompts(self.shown)
            return False
        if self.current is None:
            self.new_object(keep_prompts=True)
        self.shown = new
        return True

    def sync_prompts(self, obj: int) -> None:
        """Make the session's prompt list of ``obj`` equal to what the layers show."""
        s = self.session
        old = [from_session_prompt(p) for p in s.prompts(obj)]
        removed, added = diff_prompts(old, self.shown)
        for i in removed:
            s.remove_prompt(obj, i)
        for p in added:
            try:
                add_to_session(s, obj, p)
            except ValueError as e:
                self.message.emit(f"Prompt refused: {e}", "warning")
        self.shown = [from_session_prompt(p) for p in s.prompts(obj)]

    # ------------------------------------------------------------ brush edits
    def on_paint(self, event: Any) -> None:
        """A brush stroke on the Labels layer: remember the objects it touched."""
        ids: set[int] = set()
        for atom in getattr(event, "value", None) or []:
            try:
                if hasattr(atom, "new_value"):
                    ids.add(int(atom.new_value))
                    ids.update(int(v) for v in np.unique(atom.old_values))
                else:
                    ids.update(int(v) for v in np.unique(atom[1]))
                    ids.update(int(v) for v in np.unique(atom[2]))
            except (TypeError, ValueError, IndexError):
                ids.update(self.objects)
        self.edited |= ids - {0}
        self.slice_counts = None  # volumes are recounted in full after a brush edit
        locked = {k for k in ids if k in self.objects and self.objects[k].locked}
        if locked:  # restored after napari has written the edit (a data_setitem reports it before)
            self.locked_painted.emit(locked)

    def sync_brush_edits(self) -> None:
        """Take the user's edits of the Labels layer into the session (set_mask per object)."""
        data = self.data3
        edited = {k for k in self.edited if k in self.objects}
        if data.size <= FULL_COMPARE_VOXELS and self.objects:
            ref = self.session.labels()
            ref = ref[None] if self.two_d else ref
            diff = ref != data
            if diff.any():
                edited |= {int(v) for v in np.unique(ref[diff])} | {
                    int(v) for v in np.unique(data[diff])
                }
                edited &= set(self.objects)
        self.edited.clear()
        if not edited:
            return
        # Objects that lost voxels first, so that the others can take them.
        order = sorted(edited)
        for _ in range(2):
            for k in order:
                target = data == k
                if not np.array_equal(self.mask3(k), target):
                    self.session.set_mask(k, target[0] if self.two_d else target)

    def restore_locked(self, locked: set[int]) -> None:
        """Undo a brush stroke's changes to locked objects' voxels."""
        ref = self.session.labels()
        ref = ref[None] if self.two_d else ref
        data = self.data3
        for k in locked:
            wrong = (data == k) != (ref == k)
            data[wrong] = ref[wrong]
        self.labels.refresh()
        names = ", ".join(self.objects[k].name for k in sorted(locked))
        self.message.emit(f"{names} is locked: the brush left it unchanged.", "warning")

    # ------------------------------------------------------------ rounds
    def begin_round(self) -> Iterator[Any] | None:
        """The events of a round of the current object (``Session.run_iter``), after taking in
        brush edits and the layers' prompts; None (with a message) when none can run."""
        obj = self.current
        if obj is None or self.refuse_locked(obj):
            return None
        try:
            self.sync_brush_edits()
            self.sync_prompts(obj)
            events = self.session.run_iter(obj)
        except ValueError as e:
            self.message.emit(str(e), "error")
            return None
        self.round = RoundRecord(obj)
        return events

    def write_events(self, batch: Iterable[Any], shown: tuple[int, int] | None = None) -> None:
        """Write a round's slices (``RoundEvent``s) into the Labels layer, only the changed
        voxels. ``shown``: the (axis, index) of the slice the canvas shows, if any; the layer
        is refreshed when that slice (or a slice across another axis) changed; None (the 3D
        view, or no canvas): whenever any slice changed."""
        rnd = self.round
        batch = list(batch)
        if rnd is None or not batch:
            return
        if rnd.t_first is None:
            rnd.t_first = time.perf_counter() - rnd.t_start
        obj, data = rnd.obj, self.data3
        changed: set[tuple[int, int]] = set()
        for ev in batch:
            z, axis = int(ev.z), int(getattr(ev, "axis", 0))
            index: list[Any] = [slice(None)] * 3
            index[axis] = z
            v = data[tuple(index)]  # a view: the slice across the event's axis
            m = np.asarray(ev.mask, bool).reshape(v.shape)
            ours = v == obj
            drop = ours & ~m
            add = m & ~ours & (v == 0)
            if drop.any() or add.any():
                v[drop] = 0
                v[add] = obj
                changed.add((axis, z))
            rnd.decided.add((axis, z))
            if axis == 0:
                rnd.touched.add(z)
            else:  # the axis-0 slices this plane crosses where the object is or was
                rnd.touched.update(np.flatnonzero((m | ours).any(axis=1)).tolist())
        # refresh when the shown slice changed, or slices across another axis (they cross it)
        if changed and (
            shown is None or shown in changed or any(a != shown[0] for a, _ in changed)
        ):
            self.labels.refresh(extent=False)

    def end_round(self, completed: bool) -> None:
        """The round has ended (its events closed): ``completed`` rounds are kept (volumes,
        speed, a word when it left the object empty or on one slice); a cancelled one leaves
        the object as before it."""
        rnd = self.round
        if rnd is None or rnd.obj not in self.objects:
            return
        obj = rnd.obj
        if completed:
            elapsed = time.perf_counter() - rnd.t_start
            n = len(rnd.decided)
            self.last_round = {
                "slices": n,
                "seconds": elapsed,
                "first_response": rnd.t_first or elapsed,
                "slices_per_s": n / elapsed if elapsed > 0 else 0.0,
            }
            self.last_round_text = (
                f"Last round: {n} slices in {elapsed:.2f} s "
                f"({self.last_round['slices_per_s']:.0f} slices/s), "
                f"first slice after {self.last_round['first_response'] * 1000:.0f} ms"
            )
            # the round changed only its own object, on the slices it decided
            self.after_change(slices=rnd.touched)
            outcome = self.round_outcome(obj)  # (reads the counts just updated)
            if outcome:
                self.message.emit(outcome, "warning")
            else:
                self.status.emit(f"Object {obj} updated. Click to correct, O for a new object.")
        else:
            self.write_object(obj)
            self.status.emit("Round cancelled; its prompts are kept.")
            self.after_change()

    def round_outcome(self, obj: int) -> str | None:
        """A plain explanation when a round left its object empty or on one slice only."""
        prompts = self.session.prompts(obj)
        if not prompts:
            return None
        last = prompts[-1]
        at = [int(round(float(v))) for v in last.coords[:2]]
        at.insert(last.axis, int(last.z))
        z, y, x = at
        slices = self.object_slices(obj)
        name = self.objects[obj].name
        if slices.size == 0:
            other = int(self.data3[z, y, x]) if last.kind in ("click", "scribble") else 0
            if other and other != obj and other in self.objects:
                return (
                    f"{name} is empty: the prompt lies inside {self.objects[other].name} (label "
                    f"{other}), and objects never take each other's voxels. Select "
                    f"{self.objects[other].name} in the list to change it, or prompt elsewhere."
                )
            return (
                f"{name} is empty: the network found no object at the prompt. Click nearer "
                "the object's middle, or draw a box or lasso around it."
            )
        session = self.session
        if (
            slices.size == 1
            and last.axis == 0
            and session.propagation
            and session.z_range is not None
        ):
            a, b = session.z_range
            where = "outside" if not a <= z <= b else "at the edge of"
            return (
                f"{name} covers slice {z} only: the prompt is {where} the propagation limits "
                f"(slices {a} to {b}). Widen or switch off *Propagation limits* to fill more."
            )
        return None

    def write_object(self, obj: int) -> None:
        """Show the session's mask of ``obj`` in the Labels layer (others' voxels untouched)."""
        data = self.data3
        m = self.mask3(obj) if obj in self.session.objects else np.zeros(self.shape3, bool)
        data[(data == obj) & ~m] = 0
        data[m & (data == 0)] = obj
        self.labels.refresh()

    def after_change(self, slices: set[int] | None = None) -> None:
        """Objects changed: recount volumes (only ``slices`` when given), redraw, autosave."""
        self.update_volumes(slices)
        self.refresh_objects()
        self.changed.emit()

    # ------------------------------------------------------------ objects
    def color_of(self, obj: int) -> tuple[float, float, float]:
        c = np.asarray(self.base_colormap.map(np.array([obj])), float).ravel()
        return (float(c[0]), float(c[1]), float(c[2])) if c.size >= 3 else (1.0, 0.0, 0.0)

    def refresh_objects(self) -> None:
        """Colours, the hidden objects' colormap and the layer's object metadata; then
        ``objects_changed``."""
        for k, o in self.objects.items():
            o.color = self.color_of(k)
        self.apply_visibility()
        self.labels.metadata["limnet_objects"] = [o.as_metadata() for o in self.objects.values()]
        self.objects_changed.emit()

    def apply_visibility(self) -> None:
        """The base colours, or (an object hidden) a direct colormap with it transparent; set
        only when that changes (a new colormap redraws the whole layer)."""
        from napari.utils.colormaps import DirectLabelColormap

        key = tuple((k, o.visible) for k, o in self.objects.items())
        if not any(not v for _, v in key):
            key = ()
        if key == self.colormap_key:
            return
        self.colormap_key = key
        if not key:
            self.labels.colormap = self.base_colormap
            return
        colors: dict[int | None, tuple[float, ...]] = {0: (0.0, 0.0, 0.0, 0.0)}
        for k, o in self.objects.items():
            colors[k] = (*o.color, 1.0 if o.visible else 0.0)
        colors[None] = (0.5, 0.5, 0.5, 1.0)  # a value no object has (painted by hand)
        self.labels.colormap = DirectLabelColormap(color_dict=colors)

    def refuse_locked(self, obj: int | None) -> bool:
        """True (with a message) when ``obj`` is locked."""
        if obj is None or obj not in self.objects or not self.objects[obj].locked:
            return False
        name = self.objects[obj].name
        self.message.emit(
            f"{name} is locked: unlock it (the Lock box in the objects list) to change it.",
            "warning",
        )
        return True

    def new_object(self, keep_prompts: bool = False) -> int:
        """Start the next object and make it the current one."""
        obj = self.session.new_object()
        self.objects[obj] = ObjectInfo(obj, f"Object {obj}", self.color_of(obj))
        self.current = obj
        self.labels.selected_label = obj
        if not keep_prompts:
            self.show_prompts([])
        self.refresh_objects()
        return obj

    def select(self, obj: int) -> None:
        """Resume refining an earlier object: its prompts are shown again."""
        if obj not in self.objects:
            return
        self.current = obj
        self.labels.selected_label = obj
        self.show_session_prompts(obj)
        self.refresh_objects()
        self.status.emit(f"Refining {self.objects[obj].name}.")

    def rename(self, obj: int, name: str) -> None:
        if obj not in self.objects:
            return
        self.objects[obj].name = name
        self.refresh_objects()
        self.changed.emit()

    def delete(self, obj: int) -> None:
        if obj not in self.objects or self.refuse_locked(obj):
            return
        self.session.remove_object(obj)
        del self.objects[obj]
        data = self.data3
        data[data == obj] = 0
        self.labels.refresh()
        if self.current == obj:
            self.current = next(reversed(self.objects), None) if self.objects else None
            if self.current is not None:
                self.select(self.current)
            else:
                self.show_prompts([])
        self.after_change()

    def reset(self, obj: int) -> None:
        """Empty an object (mask, prompts, history)."""
        if obj not in self.objects or self.refuse_locked(obj):
            return
        self.session.reset(obj)
        self.write_object(obj)
        if self.current == obj:
            self.show_prompts([])
        self.after_change()

    def undo_redo(self, which: str) -> None:
        """``which`` ('undo' or 'redo') the current object's last round (or brush step)."""
        obj = self.current
        if obj is None or self.refuse_locked(obj):
            return
        self.sync_brush_edits()
        getattr(self.session, which)(obj)
        self.write_object(obj)
        self.show_session_prompts(obj)
        self.after_change()

    def set_visible(self, obj: int, visible: bool) -> None:
        """Show or hide one object in the Labels layer (its voxels stay; rounds still see
        them)."""
        if obj not in self.objects:
            return
        self.objects[obj].visible = bool(visible)
        self.refresh_objects()
        self.changed.emit()

    def set_locked(self, obj: int, locked: bool) -> None:
        """Lock an object: no round, brush, undo, reset or delete changes it until unlocked."""
        if obj not in self.objects:
            return
        if locked:
            self.sync_brush_edits()  # edits made before the lock are kept
        self.objects[obj].locked = bool(locked)
        self.refresh_objects()
        self.status.emit(f"{self.objects[obj].name} {'locked' if locked else 'unlocked'}.")
        self.changed.emit()

    def import_labels(self, name: str, src: np.ndarray, names: dict[int, str]) -> list[int]:
        """Take in a label map ``src`` (a layer called ``name``; ``names``: its label names):
        each label value starts an object with that mask. Returns the new objects' ids."""
        if src.shape != self.labels.data.shape:
            self.message.emit(
                f"'{name}' has shape {src.shape} but the image has shape "
                f"{self.labels.data.shape}; it cannot be taken in.",
                "error",
            )
            return []
        self.sync_brush_edits()
        new_ids = []
        for v in np.unique(src):
            if v == 0:
                continue
            obj = self.session.new_object()
            self.session.set_mask(obj, src == v)
            self.objects[obj] = ObjectInfo(
                obj, names.get(int(v)) or f"{name} {int(v)}", self.color_of(obj)
            )
            self.write_object(obj)
            new_ids.append(obj)
        if not new_ids:
            self.message.emit(f"'{name}' has no labels.", "warning")
            return []
        self.current = new_ids[-1]
        self.labels.selected_label = self.current
        self.show_prompts([])
        self.after_change()
        self.status.emit(f"Took in {len(new_ids)} object(s) from '{name}'.")
        return new_ids

    # ------------------------------------------------------------ volumes
    def update_volumes(self, slices: set[int] | None = None) -> None:
        """Objects' volumes; ``slices``: only these slices changed since the last count (a
        round's), so only they are recounted (a whole volume takes long on a big CT)."""
        vox_ml = float(np.prod(spacing_of(self.image))) / 1000.0
        if self.two_d:
            vox_ml = 0.0
        data = self.data3
        if slices is None or self.slice_counts is None:
            self.slice_counts = [np.bincount(data[z].ravel()) for z in range(data.shape[0])]
        else:
            for z in slices:
                self.slice_counts[z] = np.bincount(data[z].ravel())
        counts = np.zeros(max(len(c) for c in self.slice_counts), np.int64)
        for c in self.slice_counts:
            counts[: len(c)] += c
        for k, o in self.objects.items():
            o.volume_ml = float(counts[k]) * vox_ml if k < len(counts) else 0.0

    def object_slices(self, obj: int) -> np.ndarray:
        """The slices holding voxels of ``obj``, from the per-slice counts ``update_volumes``
        keeps (no pass over the whole label map)."""
        if self.slice_counts is None:
            self.update_volumes()
        assert self.slice_counts is not None
        return np.array(
            [z for z, c in enumerate(self.slice_counts) if obj < len(c) and c[obj] > 0],
            dtype=int,
        )

    # ------------------------------------------------------------ export and results
    def export_labels(self, path: Path, per_object: bool = False) -> list[Path]:
        """Write the objects on the source grid (the plugin's writer): all in one label map
        with their names beside it, or one 0/1 file per object named
        ``<stem>_<id>_<name><ending>``. Returns the written paths (also in a message)."""
        from .._writer import write_labels
        from ..io.writer import NIFTI_SUFFIXES, TIFF_SUFFIXES

        ending = next((e for e in NIFTI_SUFFIXES + TIFF_SUFFIXES if path.name.endswith(e)), "")
        if not ending:
            self.message.emit(f"{path}: export as .nii.gz, .nii, .tif or .tiff", "error")
            return []
        self.sync_brush_edits()
        layer = self.labels
        meta = {
            "metadata": dict(layer.metadata),
            "scale": layer.scale,
            "translate": layer.translate,
            "affine": layer.affine.affine_matrix,
            "rotate": layer.rotate,
        }
        data = np.asarray(layer.data)
        written: list[Path] = []
        try:
            if not per_object:
                written = [Path(p) for p in write_labels(str(path), data, meta)]
            else:
                stem = path.name[: -len(ending)]
                for obj, info in self.objects.items():
                    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in info.name)
                    target = path.with_name(f"{stem}_{obj}_{safe}{ending}")
                    name = {**info.as_metadata(), "id": 1}  # the file holds 0 / 1
                    one = {**meta, "metadata": {**meta["metadata"], "limnet_objects": [name]}}
                    written += [Path(p) for p in write_labels(str(target), data == obj, one)]
        except (ValueError, OSError) as e:
            self.message.emit(f"Export failed, nothing replaced: {e}", "error")
            return written
        self.message.emit(
            "Exported " + ", ".join(p.name for p in written) + f" to {path.parent}", "info"
        )
        return written

    def results_csv(self) -> tuple[str, int]:
        """The objects' measures (``engine.measure``) as CSV text, and how many objects."""
        from ..engine.measure import measure_object, measures_csv

        self.sync_brush_edits()
        spacing = self.session.spacing
        rows = [
            measure_object(k, info.name, self.data3 == k, self.session.volume.slice, spacing)
            for k, info in self.objects.items()
        ]
        return measures_csv(rows), len(rows)

    # ------------------------------------------------------------ autosave
    def autosave_meta(self) -> dict:
        """What an autosave keeps besides the labels: the image, the objects and prompts."""
        src = autosave_mod.image_path(self.image)
        return {
            "version": 1,
            "image": self.image.name,
            "source": str(src) if src else None,
            "shape": list(self.session.shape),
            "objects": [
                {
                    **o.as_metadata(),
                    "prompts": [
                        list(p) for p in map(from_session_prompt, self.session.prompts(k))
                    ],
                }
                for k, o in self.objects.items()
                if k in self.session.objects
            ],
        }

    def autosave_paths(self, beside: bool) -> list[Path]:
        """Where to autosave: beside the image file (when ``beside``) or the data folder,
        with the data folder as the fallback."""
        shape = self.session.shape
        return [
            autosave_mod.save_path(self.image, shape, beside=beside),
            autosave_mod.fallback_path(self.image, shape),
        ]

    def autosave_payload(self) -> tuple[np.ndarray, dict]:
        """(a copy of the labels, the metadata) to autosave."""
        return np.array(self.labels.data, copy=True), self.autosave_meta()

    def restore_autosave(self, path: Path | None = None) -> bool:
        """Replace the objects by autosaved ones (``path``, or the autosave found); True on
        success. A damaged file changes nothing (a message says why)."""
        path = path or self.autosave_found
        if path is None:
            path = autosave_mod.find_autosave(self.image, self.session.shape)
        if path is None:
            self.message.emit("No autosaved work for this image.", "warning")
            return False
        try:  # checked whole before the current objects are touched
            labels, meta = autosave_mod.load(path, self.session.shape)
        except ValueError as e:
            self.message.emit(f"Autosave not restored: {e}", "error")
            return False
        labels = labels.reshape(self.labels.data.shape)
        s = self.session
        for k in list(self.objects):
            s.remove_object(k)
        self.objects.clear()
        self.labels.data[...] = 0
        data = self.data3
        for entry in meta.get("objects", []):
            saved = int(entry["id"])
            mask = labels == saved
            obj = s.new_object()
            s.set_mask(obj, mask)
            self.objects[obj] = ObjectInfo(
                obj,
                str(entry.get("name") or f"Object {obj}"),
                visible=entry.get("visible", True) is not False,
                locked=entry.get("locked", False) is True,
            )
            for p in entry.get("prompts", []):
                try:
                    add_to_session(s, obj, prompt_from_json(p))
                except (ValueError, IndexError, TypeError):
                    continue
            data[(mask[None] if self.two_d else mask) & (data == 0)] = obj
        self.labels.refresh()
        self.current = next(reversed(self.objects), None) if self.objects else None
        if self.current is not None:
            self.labels.selected_label = self.current
            self.show_session_prompts(self.current)
        self.autosave_found = None
        self.update_volumes()
        self.refresh_objects()
        self.status.emit(f"Restored {len(self.objects)} object(s) from {path.name}.")
        return True
