"""The LIM-Net dock widget: click, watch the volume fill in, correct, next object, never lose work.

Life of an image in the widget
------------------------------
1. Docking the widget (or adding an image while it is docked) sets up the active image: a
   Points layer ``<image> clicks`` (feature ``positive``), a Shapes layer ``<image> boxes`` and
   a Labels layer ``<image> labels``, all on the image's grid, and an engine ``Session``, kept
   by the image's :class:`~.controller.ImageController`.
2. A click (or a rectangle) on a slice is a prompt of the current object (the first prompt
   creates object 1). With auto-run on, every change of the prompt layers starts a round in a
   thread worker (:class:`~.round_runner.RoundRunner`); the Labels layer fills in slice by
   slice. A change during a round cancels it and starts a new one with all prompts.
3. "New object" (key O) starts the next object; selecting an earlier one in the list shows its
   prompts again and resumes refining it. Undo/redo (Ctrl+Z / Ctrl+Shift+Z on the prompt
   layers) step through whole rounds. Brush edits on the Labels layer are taken into the
   session before the next round.
4. After each round the labels, prompts and names are autosaved; reopening the image offers
   to restore them.

The widget builds the panel, keeps one controller per image and the round runner, and turns
their signals into the status line, notifications, the objects list and the progress bar.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog

from . import autosave as autosave_mod
from . import model_cache
from .controller import ImageController, new_layers
from .layers import check_image, layer_label_names, prefer_plugin_writer, spacing_of, view_axis
from .panel import IDLE_FORMAT, LimNetPanel
from .round_runner import RoundRunner
from .settings import Settings, full_limits, is_ct, robust_limits, window_limits

# During a round the Labels layer is refreshed at most this often (the slices arriving in
# between are written into its array together): each refresh costs the main thread a redraw.
REFRESH_SECONDS = 0.25


def _after_round(method: Callable[..., Any]) -> Callable[..., Any]:
    """A widget action that changes objects: while a round runs, the round is cancelled and
    the action runs when it has ended (the call then returns None)."""

    @functools.wraps(method)
    def wrapper(self: LimNetWidget, *args: Any, **kwargs: Any) -> Any:
        if self.runner.busy:
            self.runner.when_idle(lambda: method(self, *args, **kwargs))
            return None
        return method(self, *args, **kwargs)

    return wrapper


def _layer_key(layer: Any) -> int:
    """The identity of a layer behind napari's proxy: a plugin's viewer hands out a new
    ``PublicOnlyProxy`` at each access, so ``id`` of what it returns is not the layer's."""
    return id(getattr(layer, "__wrapped__", layer))


class LimNetWidget(LimNetPanel):
    """LIM-Net interactive segmentation (see the module docstring for the workflow).

    Keys on the clicks/boxes layers: N toggles negative clicks, O starts a new object,
    Shift+Enter runs a round (when auto-run is off), Ctrl+Z / Ctrl+Shift+Z undo / redo a round.
    """

    def __init__(self, napari_viewer: Any) -> None:
        settings = Settings.load()
        super().__init__(settings)
        self.settings = settings
        self.viewer = napari_viewer
        self.states: dict[int, ImageController] = {}
        self.state: ImageController | None = None
        self.negative = False
        self._creating = False
        self._own_labels: set[str] = set()  # names of the result layers this widget made
        self.runner = RoundRunner()
        self._pending: list = []  # RoundEvents received, not yet written into the layer
        self._last_flush = 0.0
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.timeout.connect(self._flush)
        self.last_round: dict[str, float] = {}
        self.autosaver = autosave_mod.AutoSaver()
        prefer_plugin_writer()  # napari's own Save writes .nii.gz through this plugin
        self._connect_ui()
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self.viewer.layers.selection.events.active.connect(self._on_active_layer)
        self._refresh_image_combo()
        self._setup_initial()

    # ---------------------------------------------------------------- UI
    def _connect_ui(self) -> None:
        self.image_combo.activated.connect(self._on_image_chosen)
        self.negative_btn.toggled.connect(self.set_negative)
        self.run_btn.clicked.connect(self.request_round)
        self.cancel_btn.clicked.connect(self.cancel_round)
        self.undo_btn.clicked.connect(self.undo)
        self.redo_btn.clicked.connect(self.redo)
        self.objects_panel.selected.connect(self.select_object)
        self.objects_panel.renamed.connect(self.rename_object)
        self.objects_panel.new_requested.connect(self.new_object)
        self.objects_panel.delete_requested.connect(self.delete_object)
        self.objects_panel.reset_requested.connect(self.reset_object)
        self.objects_panel.visibility_changed.connect(self.set_object_visible)
        self.objects_panel.lock_changed.connect(self.set_object_locked)
        self.import_btn.clicked.connect(
            lambda: self.import_labels(self.import_combo.currentText())
        )
        self.export_btn.clicked.connect(self._export_dialog)
        self.results_btn.clicked.connect(self._results_dialog)
        self.restore_btn.clicked.connect(self.restore_autosave)
        self.limit_check.toggled.connect(self._apply_limits)
        for spin in (self.z_min, self.z_max):
            spin.valueChanged.connect(self._apply_limits)
        self.direction_combo.currentTextChanged.connect(self._apply_limits)
        self.browse_btn.clicked.connect(self._browse_weights)
        self.device_combo.currentTextChanged.connect(self._settings_changed)
        self.threads_spin.valueChanged.connect(self._settings_changed)
        self.weights_edit.editingFinished.connect(self._settings_changed)
        for c in (
            self.fusion_check,
            self.propagation_check,
            self.autorun_check,
            self.beside_check,
        ):
            c.toggled.connect(self._settings_changed)
        self.window_combo.currentTextChanged.connect(self._settings_changed)

    def _browse_weights(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "LIM-Net weights", "", "Weights (*.pt)")
        if path:
            self.weights_edit.setText(path)
            self._settings_changed()

    def _message(self, text: str, level: str = "info") -> None:
        self.status.setText(text)
        {"info": show_info, "warning": show_warning, "error": show_error}[level](text)

    # ---------------------------------------------------------------- settings
    def _settings_changed(self, *_: Any) -> None:
        s = self.settings
        old_model = (s.weights, s.torch_device)
        s.device = self.device_combo.currentText()
        s.threads = self.threads_spin.value()
        s.weights = self.weights_edit.text().strip()
        s.fusion = self.fusion_check.isChecked()
        s.propagation = self.propagation_check.isChecked()
        s.auto_run = self.autorun_check.isChecked()
        s.autosave_beside = self.beside_check.isChecked()
        s.window = self.window_combo.currentText()
        s.save()
        st = self.state
        if st is None:
            return
        st.session.fusion = s.fusion
        st.session.propagation = s.propagation
        self._apply_window(st.image)
        if (s.weights, s.torch_device) != old_model:
            # the next round loads them (in its worker thread); the thread count, too,
            # is applied by the next round
            model_cache.preload_model(s.weights, s.torch_device, s.engine_threads)

    def _model_for_round(self) -> Any:
        """Every session's model source: each round calls it in its worker thread (never the
        main thread: importing torch and reading weights take seconds), so new weights or a
        new device in the settings apply from the next round."""
        s = self.settings
        try:
            return model_cache.get_model(s.weights, s.torch_device)
        except Exception as e:  # noqa: BLE001 - a bad weights file is a user mistake
            raise RuntimeError(f"could not load the weights: {e}") from e

    def _prepare_engine(self) -> Callable[[], None]:
        """What a round's worker does before computing: set the thread count."""
        threads = self.settings.engine_threads

        def prepare() -> None:
            import torch  # process-wide setting, applied from the engine's own thread

            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)

        return prepare

    def _apply_window(self, image: Any) -> None:
        """CT: the chosen window in HU; any other image (MR): a robust percentile window, so
        a CT preset never saturates it; "(image range)": the whole value range, for both."""
        preset = self.settings.window
        if preset == "(image range)":
            lo, hi = full_limits(image)
        elif is_ct(image):
            lo, hi = window_limits(preset) or full_limits(image)
        else:
            lo, hi = robust_limits(image)
        rng = image.contrast_limits_range
        image.contrast_limits_range = (min(rng[0], lo), max(rng[1], hi))
        image.contrast_limits = (lo, hi)

    def _apply_limits(self, *_: Any) -> None:
        st = self.state
        if st is None:
            return
        z_range = None
        if self.limit_check.isChecked():
            a, b = sorted((self.z_min.value(), self.z_max.value()))
            z_range = (a, b)

        def apply() -> None:
            try:
                st.session.z_range = z_range
                st.session.direction = self.direction_combo.currentText()
            except ValueError as e:
                self._message(str(e), "warning")

        self.runner.when_idle(apply)

    # ---------------------------------------------------------------- images
    def _image_layers(self) -> list:
        from napari.layers import Image

        return [lay for lay in self.viewer.layers if isinstance(lay, Image)]

    def _refresh_image_combo(self) -> None:
        from napari.layers import Labels

        names = [lay.name for lay in self._image_layers()]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if self.state is not None and self.state.image.name in names:
            self.image_combo.setCurrentText(self.state.image.name)
        self.image_combo.blockSignals(False)
        # by name: the plugin's viewer hands out proxies, so layer identities differ
        ours = {st.labels.name for st in self.states.values()} | self._own_labels
        self.import_combo.clear()
        self.import_combo.addItems(
            [
                lay.name
                for lay in self.viewer.layers
                if isinstance(lay, Labels) and lay.name not in ours
            ]
        )

    def _setup_initial(self) -> None:
        from napari.layers import Image

        active = self.viewer.layers.selection.active
        images = self._image_layers()
        target = active if isinstance(active, Image) else (images[-1] if images else None)
        if target is None:
            if self.viewer.layers:
                self._message(check_image(next(iter(self.viewer.layers))) or "", "warning")
            else:
                self.status.setText(
                    "Open a CT or MR volume (File > Open, or File > Open Sample > napari-limnet)."
                )
            return
        self.set_image(target)

    def _on_layer_inserted(self, event: Any) -> None:
        from napari.layers import Image

        self._refresh_image_combo()
        if self._creating:
            return
        if isinstance(event.value, Image):
            self.set_image(event.value)

    def _select_clicks(self, st: ImageController) -> None:
        if self.state is st and st.points in self.viewer.layers:
            self.viewer.layers.selection.active = st.points
            st.points.mode = "add"

    def _on_layers_changed(self, event: Any = None) -> None:
        for key, st in list(self.states.items()):
            if st.image not in self.viewer.layers:
                if st is self.state:
                    self.cancel_round()
                    self.state = None
                del self.states[key]
        self._refresh_image_combo()

    def _on_active_layer(self, event: Any) -> None:
        self._refresh_image_combo()

    def _on_image_chosen(self, index: int) -> None:
        name = self.image_combo.itemText(index)
        if name in self.viewer.layers:
            self.set_image(self.viewer.layers[name])

    def set_image(self, image: Any) -> ImageController | None:
        """Make ``image`` the one being segmented, creating its layers and session if needed."""
        err = check_image(image)
        if err:
            self._message(err, "warning")
            return None
        if self.state is not None and _layer_key(self.state.image) == _layer_key(image):
            return self.state
        return self._switch_image(image)

    @_after_round
    def _switch_image(self, image: Any) -> ImageController | None:
        st = self.states.get(_layer_key(image))
        if st is not None and not st.layers_alive(self.viewer.layers):
            del self.states[_layer_key(image)]
            st = None
        if st is None:
            st = self._create_state(image)
            if st is None:
                return None
            self.states[_layer_key(image)] = st
        if self.state is not st:  # another image: its own layers, last round, an idle bar
            # two scans of different extent overlaid leave a blank canvas: show this one only
            for other in self.states.values():
                if other is not st and other.layers_alive(self.viewer.layers):
                    other.show(False)
            st.show(True)
            self.viewer.reset_view()
            self.speed_label.setText(st.last_round_text)
            self.progress.setFormat(IDLE_FORMAT)
            self._set_progress(0, 1)
        self.state = st
        self._refresh_image_combo()
        self.z_min.setRange(0, st.shape3[0] - 1)
        self.z_max.setRange(0, st.shape3[0] - 1)
        if self.z_max.value() == 0:
            self.z_max.setValue(st.shape3[0] - 1)
        self._apply_limits()
        self._update_objects_panel()
        self.viewer.layers.selection.active = st.points
        st.points.mode = "add"
        # File > Open Sample and readers add the image's own label map right after it, and
        # napari selects each new layer: select the clicks again once they are all in
        QTimer.singleShot(0, lambda: self._select_clicks(st))
        if st.autosave_found is not None:
            self.restore_btn.setVisible(True)
            self._message(
                f"Autosaved work for '{image.name}' was found ({st.autosave_found.name}). "
                "Press 'Restore autosaved work' in the LIM-Net panel to load it.",
                "info",
            )
        elif st.autosave_problems:
            self.restore_btn.setVisible(False)
            self._message("Autosave skipped: " + "; ".join(st.autosave_problems), "warning")
        else:
            self.restore_btn.setVisible(False)
            self.status.setText(
                f"Segmenting '{image.name}': click on the object (N: negative clicks)."
            )
        return st

    def _create_state(self, image: Any) -> ImageController | None:
        from napari_limnet import Session

        data = image.data[0] if image.multiscale else image.data
        spacing = spacing_of(image)
        s = self.settings
        try:
            # The model is loaded by the first round's worker (preloaded in the background
            # now), never on the main thread; the thread count is set there too.
            session = Session(
                data,
                spacing=spacing[1:] if image.ndim == 2 else spacing,
                model=self._model_for_round,
                fusion=s.fusion,
                propagation=s.propagation,
            )
        except ValueError as e:
            self._message(f"Cannot segment '{image.name}': {e}", "error")
            return None
        except Exception as e:  # noqa: BLE001 - an image the engine cannot read
            self._message(f"Could not start LIM-Net on '{image.name}': {e}", "error")
            return None
        model_cache.preload_model(s.weights, s.torch_device, s.engine_threads)

        def add(kind: str, data: Any, kwargs: dict) -> Any:
            layer = getattr(self.viewer, f"add_{kind}")(data, **kwargs)
            if kind == "labels":
                self._own_labels.add(layer.name)  # never offered for take-in
            return layer

        self._creating = True
        try:
            labels, shapes, points = new_layers(image, session.shape, self.negative, add)
        finally:
            self._creating = False
        st = ImageController(image, session, points, shapes, labels, negative=self.negative)
        points.events.data.connect(self._on_prompts_changed)
        shapes.events.data.connect(self._on_prompts_changed)
        st.message.connect(self._message)
        st.status.connect(self._set_status)
        st.objects_changed.connect(self._update_objects_panel)
        st.changed.connect(lambda st=st: self.autosave(st))
        # restored once napari has written the stroke (a data_setitem reports it before)
        st.locked_painted.connect(
            lambda ids, st=st: QTimer.singleShot(0, lambda: st.restore_locked(ids))
        )
        for layer in (points, shapes):
            self._bind_keys(layer)
        self._apply_window(image)
        st.find_autosave()
        return st

    def _bind_keys(self, layer: Any) -> None:
        layer.bind_key("n", lambda _l: self.negative_btn.toggle(), overwrite=True)
        layer.bind_key("o", lambda _l: self.new_object(), overwrite=True)
        layer.bind_key("Shift-Enter", lambda _l: self.request_round(), overwrite=True)
        layer.bind_key("Control-z", lambda _l: self.undo(), overwrite=True)
        layer.bind_key("Control-Shift-z", lambda _l: self.redo(), overwrite=True)
        layer.bind_key("]", lambda _l: self.step_object(1), overwrite=True)
        layer.bind_key("[", lambda _l: self.step_object(-1), overwrite=True)
        layer.bind_key("j", lambda _l: self.jump_to_object(), overwrite=True)

    # ---------------------------------------------------------------- prompts
    def set_negative(self, on: bool) -> None:
        """Next clicks are negative (background) when ``on``."""
        self.negative = bool(on)
        if self.negative_btn.isChecked() != self.negative:
            self.negative_btn.setChecked(self.negative)
        for st in self.states.values():
            st.set_negative(self.negative)

    def layer_prompts(self, st: ImageController) -> tuple[list[tuple], list[str]]:
        return st.layer_prompts()

    def _on_prompts_changed(self, event: Any) -> None:
        action = str(getattr(event, "action", "changed"))
        if action.split(".")[-1].lower() in ("adding", "removing", "changing"):
            return
        st = self.state
        if st is None or st.syncing or event.source not in (st.points, st.shapes):
            return
        axis = 0 if st.two_d else view_axis(self.viewer)
        if not st.take_prompts(event.source, axis):
            return
        if self.settings.auto_run:
            self.request_round()
        else:
            self.status.setText("Prompts changed: press Run (Shift+Enter).")

    def sync_brush_edits(self, st: ImageController) -> None:
        """Take the user's edits of the Labels layer into the session (set_mask per object)."""
        st.sync_brush_edits()

    # ---------------------------------------------------------------- rounds
    @property
    def running(self) -> bool:
        return self.runner.busy

    @property
    def _restart(self) -> bool:
        """A round is due to start again when the running one has ended."""
        return self.runner.restart

    def request_round(self) -> None:
        """Start a round with all prompts (cancelling one in progress, which then restarts)."""
        self.runner.request(self._start_round)

    def cancel_round(self) -> None:
        """Stop the round in progress; the object is left as before it, prompts kept."""
        if self.runner.cancel():
            self.status.setText("Cancelling...")

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Process events until no round runs (for scripts and tests)."""
        return self.runner.wait(timeout)

    def _start_round(self) -> None:
        st = self.state
        if st is None:
            return
        events = st.begin_round()
        if events is None:
            return
        self.progress.setFormat("%v / %m slices")
        self._pending = []
        self._flush_timer.stop()
        self._set_progress(0, 1)
        self.cancel_btn.setEnabled(True)
        self.status.setText(f"Segmenting object {st.current}...")
        self.runner.start(
            events,
            on_batch=self._on_batch,
            on_done=self._on_finished,
            on_error=self._on_error,
            prepare=self._prepare_engine(),
        )

    def _set_progress(self, value: int, maximum: int) -> None:
        """Update the progress bar without the synchronous repaint QProgressBar.setValue does
        (which repaints the whole window, canvas included): it is redrawn with the next frame."""
        bar = self.progress
        bar.setUpdatesEnabled(False)
        try:
            if bar.maximum() != maximum:
                bar.setRange(0, maximum)
            bar.setValue(value)
        finally:
            bar.setUpdatesEnabled(True)  # schedules an ordinary, coalesced repaint

    def _on_batch(self, batch: list) -> None:
        """Slices from the worker: written into the layer by :meth:`_flush`, at once for the
        round's first slice, then at most every ``REFRESH_SECONDS`` (so the main thread never
        falls behind the engine, however slow a redraw is)."""
        st = self.state
        if st is None or st.round is None:
            return
        self._pending.extend(batch)
        if self._flush_timer.isActive():
            return
        if st.round.t_first is None:
            self._flush()
            return
        wait = self._last_flush + REFRESH_SECONDS - time.perf_counter()
        self._flush_timer.start(max(0, int(wait * 1000)))

    def _shown_slice(self, st: ImageController) -> tuple[int, int] | None:
        """(axis, index) of the slice of ``st`` the canvas shows, or None in the 3D view."""
        if st.two_d:
            return (0, 0)
        axis = view_axis(self.viewer)
        if axis is None:
            return None
        i = st.labels.world_to_data(self.viewer.dims.point)[axis]
        return axis, int(np.round(i))

    def _flush(self) -> None:
        """Write the pending slices into the Labels layer (only the changed voxels; refreshed
        when the canvas shows one of them, other slices appear when the user goes there)."""
        batch, self._pending = self._pending, []
        st = self.state
        if not batch or st is None or st.round is None:
            return
        st.write_events(batch, self._shown_slice(st))
        last = batch[-1]
        self._set_progress(last.done, max(1, last.total))
        self._last_flush = time.perf_counter()

    def _on_error(self, exc: Exception) -> None:
        self._message(f"The round failed: {exc}", "error")

    def _on_finished(self, completed: bool) -> None:
        """The round has ended (the runner has closed its events): show how it went."""
        self._flush_timer.stop()
        if completed:
            self._flush()
        self._pending = []
        self.cancel_btn.setEnabled(False)
        st = self.state
        if st is None or st.round is None or st.round.obj not in st.objects:
            return
        st.end_round(completed)
        if completed:
            self.last_round = st.last_round
            self.speed_label.setText(st.last_round_text)
            # the bar ends on the slices the round decided, as the speed line says
            n = int(st.last_round["slices"])
            self.progress.setFormat("%v slices")
            self._set_progress(n, max(n, 1))
        else:
            self.progress.setFormat("cancelled")
            self._set_progress(0, 1)

    # ---------------------------------------------------------------- objects
    def _set_status(self, text: str) -> None:
        self.status.setText(text)

    def _update_objects_panel(self) -> None:
        st = self.state
        if st is None:
            self.objects_panel.set_objects([], None)
            return
        self.objects_panel.set_objects(list(st.objects.values()), st.current)

    @_after_round
    def new_object(self) -> int | None:
        """Start the next object (key O); its first click segments it."""
        st = self.state
        if st is None:
            self._message(check_image(None) or "", "warning")
            return None
        obj = st.new_object()
        self.status.setText(f"Object {obj}: click on it.")
        return obj

    @_after_round
    def select_object(self, obj: int) -> None:
        """Resume refining an earlier object: its prompts are shown again."""
        if self.state is not None:
            self.state.select(obj)

    def step_object(self, step: int) -> None:
        """Select the next (``step`` 1) or previous (-1) object of the list, and show it."""
        st = self.state
        if st is None or not st.objects:
            return
        ids = list(st.objects)
        i = ids.index(st.current) if st.current in ids else -1 if step > 0 else 0
        self.select_object(ids[(i + step) % len(ids)])
        self.jump_to_object()

    def jump_to_object(self, obj: int | None = None) -> None:
        """Show the slice through the middle of the object (its median slice with voxels)."""
        st = self.state
        obj = st.current if st is not None and obj is None else obj
        if st is None or obj is None or st.two_d:
            return
        slices = st.object_slices(obj)
        if slices.size == 0:
            self.status.setText(f"{st.objects[obj].name} has no voxels yet.")
            return
        z = int(slices[len(slices) // 2])
        # the image's slice z in world coordinates along the viewer's first axis
        world = st.image.data_to_world([z, 0, 0])
        step = list(self.viewer.dims.point)
        step[-3] = float(world[0])
        self.viewer.dims.point = step

    def rename_object(self, obj: int, name: str) -> None:
        if self.state is not None:
            self.state.rename(obj, name)

    @_after_round
    def delete_object(self, obj: int) -> None:
        if self.state is not None:
            self.state.delete(obj)

    def reset_object(self, obj: int | None = None) -> None:
        """Empty an object (mask, prompts, history)."""
        st = self.state
        obj = obj if obj is not None else (st.current if st else None)
        if st is None or obj not in st.objects:
            return
        if self.runner.busy:
            self.runner.when_idle(lambda: self.reset_object(obj))
            return
        st.reset(obj)

    def undo(self) -> None:
        """Undo the current object's last round (or brush edit step)."""
        self._undo_redo("undo")

    def redo(self) -> None:
        self._undo_redo("redo")

    def _undo_redo(self, which: str) -> None:
        st = self.state
        if st is None or st.current is None:
            return
        if self.runner.busy:
            self.runner.restart = False  # the undone round's prompts are not run again
            self.runner.when_idle(lambda: self._undo_redo(which))
            return
        st.undo_redo(which)

    def set_object_visible(self, obj: int, visible: bool) -> None:
        """Show or hide one object in the Labels layer (its voxels stay; rounds still see
        them)."""
        if self.state is not None:
            self.state.set_visible(obj, visible)

    def set_object_locked(self, obj: int, locked: bool) -> None:
        """Lock an object: no round, brush, undo, reset or delete changes it until unlocked."""
        if self.state is not None:
            self.state.set_locked(obj, locked)

    @_after_round
    def import_labels(self, name: str) -> list[int]:
        """Take in a Labels layer: each label value starts an object with that mask."""
        st = self.state
        if st is None:
            self._message(check_image(None) or "", "warning")
            return []
        if name not in self.viewer.layers:
            self._message("Choose a Labels layer to take in.", "warning")
            return []
        layer = self.viewer.layers[name]
        return st.import_labels(name, np.asarray(layer.data), layer_label_names(layer))

    # ---------------------------------------------------------------- export
    def _export_dialog(self) -> None:
        if self.state is None:
            self._message(check_image(None) or "", "warning")
            return
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Export objects",
            f"{self.state.image.name}_seg.nii.gz",
            "NIfTI (*.nii.gz *.nii);;TIFF (*.tif *.tiff)",
        )
        if path:
            self.export_labels(path, per_object=self.per_object_check.isChecked())

    def export_labels(self, path: str | Path, per_object: bool = False) -> list[Path]:
        """Write the current image's objects on the source grid (the plugin's writer): all in
        one label map with their names beside it, or one 0/1 file per object named
        ``<stem>_<id>_<name><ending>``. Returns the written paths (also shown)."""
        if self.state is None:
            self._message(check_image(None) or "", "warning")
            return []
        return self.state.export_labels(Path(path), per_object=per_object)

    def _results_dialog(self) -> None:
        if self.state is None:
            self._message(check_image(None) or "", "warning")
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Save results", f"{self.state.image.name}_results.csv", "CSV (*.csv)"
        )
        self.results(path or None)

    def results(self, path: str | Path | None = None) -> str:
        """The current image's per-object measures (``engine.measure``) as CSV text: copied to
        the clipboard, written to ``path`` when given, and summed up in the status line."""
        from qtpy.QtWidgets import QApplication

        st = self.state
        if st is None:
            return ""
        text, n = st.results_csv()
        QApplication.clipboard().setText(text)
        where = "copied to the clipboard"
        if path:
            try:
                Path(path).write_text(text, encoding="utf-8")
            except OSError as e:
                self._message(f"Results not saved to {path}: {e}", "error")
                return text
            where += f" and saved to {path}"
        self._message(f"Results of {n} object(s) {where}.")
        return text

    # ---------------------------------------------------------------- autosave
    def _autosave_meta(self, st: ImageController) -> dict:
        return st.autosave_meta()

    def autosave(self, st: ImageController | None = None) -> None:
        """Write labels, prompts and names (in a background thread)."""
        st = st or self.state
        if st is None:
            return
        labels, meta = st.autosave_payload()
        self.autosaver.save(st.autosave_paths(self.settings.autosave_beside), labels, meta)

    @_after_round
    def restore_autosave(self, path: str | Path | None = None) -> bool:
        """Load autosaved labels, names and prompts for the current image; True on success."""
        st = self.state
        if st is None:
            return False
        if not st.restore_autosave(Path(path) if path else None):
            return False
        self.restore_btn.setVisible(False)
        return True

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.cancel_round()
        self.wait_idle(10)
        self.autosaver.wait(10)
        super().closeEvent(event)
