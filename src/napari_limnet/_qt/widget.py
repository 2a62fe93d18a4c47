"""The LIM-Net dock widget: click, watch the volume fill in, correct, next object, never lose work.

Life of an image in the widget
------------------------------
1. Docking the widget (or adding an image while it is docked) sets up the active image: a
   Points layer ``<image> clicks`` (feature ``positive``), a Shapes layer ``<image> boxes`` and
   a Labels layer ``<image> labels``, all on the image's grid, and an engine ``Session``.
2. A click (or a rectangle) on a slice is a prompt of the current object (the first prompt
   creates object 1). With auto-run on, every change of the prompt layers starts a round in a
   thread worker; the Labels layer fills in slice by slice. A change during a round cancels it
   and starts a new one with all prompts.
3. "New object" (key O) starts the next object; selecting an earlier one in the list shows its
   prompts again and resumes refining it. Undo/redo (Ctrl+Z / Ctrl+Shift+Z on the prompt
   layers) step through whole rounds. Brush edits on the Labels layer are taken into the
   session before the next round.
4. After each round the labels, prompts and names are autosaved; reopening the image offers
   to restore them.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from . import autosave as autosave_mod
from .layers import (
    CLICK_COLORS,
    add_to_session,
    check_image,
    color_points,
    diff_prompts,
    from_session_prompt,
    grid_kwargs,
    layer_label_names,
    points_to_prompts,
    prefer_plugin_writer,
    prompt_from_json,
    resolve_axes,
    set_points,
    set_shapes,
    shapes_to_prompts,
    spacing_of,
    view_axis,
)
from .objects_panel import ObjectInfo, ObjectsPanel
from .round_runner import RoundRunner
from .settings import (
    DEVICES,
    WINDOW_PRESETS,
    Settings,
    full_limits,
    is_ct,
    robust_limits,
    window_limits,
)

# Below this many voxels the Labels layer is compared with the session before every round
# (catches any edit); above it, only paint events mark objects as edited.
FULL_COMPARE_VOXELS = 16_000_000

# During a round the Labels layer is refreshed at most this often (the slices arriving in
# between are written into its array together): each refresh costs the main thread a redraw.
REFRESH_SECONDS = 0.25

_MODEL_CACHE: dict[tuple[str, str | None], Any] = {}
_MODEL_LOCK = threading.Lock()
_NO_MODEL = object()  # a session's model until its first round loads the real one


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


def get_model(weights: str, device: str | None) -> Any:
    """Load (once) the model for a weights file ('' = bundled) on a device (None = best).

    Called from worker threads (never the main thread: importing torch and reading the weights
    take seconds); the lock makes a preload and a round share one load.
    """
    key = (weights, device)
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            from napari_limnet import load_model

            _MODEL_CACHE[key] = load_model(weights or None, device=device)
        return _MODEL_CACHE[key]


def _preload_model(weights: str, device: str | None, threads: int) -> None:
    """Load the model in a background thread so the first click does not wait for it.

    A failure is ignored here: the round that needs the model reports it.
    """

    def load() -> None:
        from .worker import lower_priority

        lower_priority()
        try:
            import torch

            torch.set_num_threads(threads)
            get_model(weights, device)
        except Exception:  # noqa: BLE001,S110 - reported by the first round instead
            pass

    threading.Thread(target=load, name="limnet-model-preload", daemon=True).start()


IDLE_FORMAT = "no round running"


def _layer_key(layer: Any) -> int:
    """The identity of a layer behind napari's proxy: a plugin's viewer hands out a new
    ``PublicOnlyProxy`` at each access, so ``id`` of what it returns is not the layer's."""
    return id(getattr(layer, "__wrapped__", layer))


class ImageState:
    """Everything the widget keeps for one image: its session, layers and objects."""

    def __init__(self, image: Any, session: Any, points: Any, shapes: Any, labels: Any) -> None:
        self.image = image
        self.session = session
        self.points = points
        self.shapes = shapes
        self.labels = labels
        self.two_d = image.ndim == 2
        self.objects: dict[int, ObjectInfo] = {}
        self.current: int | None = None
        self.shown: list[tuple] = []  # prompts of the current object as the layers show them
        self.edited: set[int] = set()  # objects painted on the Labels layer since last sync
        # voxel counts per slice (np.bincount of each slice), None: recount all slices
        self.slice_counts: list[np.ndarray] | None = None
        self.autosave_found: Path | None = None
        self.autosave_problems: list[str] = []  # damaged autosaves of this image, skipped
        self.last_round_text = ""  # the speed line of this image's last round
        self.base_colormap = labels.colormap  # the objects' colours; hiding one replaces it
        self.colormap_key: tuple = ()  # the objects' (id, shown) while one is hidden

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

    def layers_alive(self, viewer: Any) -> bool:
        return all(lay in viewer.layers for lay in (self.image, self.points, self.labels))

    def show(self, visible: bool) -> None:
        """Show or hide the image and the layers the widget made for it."""
        for lay in (self.image, self.labels, self.shapes, self.points):
            lay.visible = visible


class LimNetWidget(QWidget):
    """LIM-Net interactive segmentation (see the module docstring for the workflow).

    Keys on the clicks/boxes layers: N toggles negative clicks, O starts a new object,
    Shift+Enter runs a round (when auto-run is off), Ctrl+Z / Ctrl+Shift+Z undo / redo a round.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.settings = Settings.load()
        self.states: dict[int, ImageState] = {}
        self.state: ImageState | None = None
        self.negative = False
        self._syncing = False
        self._creating = False
        self._own_labels: set[str] = set()  # names of the result layers this widget made
        self.runner = RoundRunner()
        self._round_obj: int | None = None
        self._round_touched: set[int] = set()  # axis-0 slices the round may have changed
        self._round_decided: set[tuple[int, int]] = set()  # (axis, slice) the round decided
        self._t_round = 0.0
        self._t_first: float | None = None
        self._pending: list = []  # RoundEvents received, not yet written into the layer
        self._last_flush = 0.0
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.timeout.connect(self._flush)
        self.last_round: dict[str, float] = {}
        self.autosaver = autosave_mod.AutoSaver()
        prefer_plugin_writer()  # napari's own Save writes .nii.gz through this plugin
        self._build_ui()
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self.viewer.layers.selection.events.active.connect(self._on_active_layer)
        self._refresh_image_combo()
        self._setup_initial()

    # ---------------------------------------------------------------- UI
    def _build_ui(self) -> None:
        # Everything sits in a scroll area: on a 1366 x 768 screen the dock is shorter than
        # the panel, and the objects list must keep room for its rows instead of shrinking.
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        content = QWidget()
        self.scroll.setWidget(content)
        outer.addWidget(self.scroll)
        lay = QVBoxLayout(content)
        row = QHBoxLayout()
        row.addWidget(QLabel("Image:"))
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image to segment")
        self.image_combo.activated.connect(self._on_image_chosen)
        row.addWidget(self.image_combo, 1)
        lay.addLayout(row)

        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)

        row = QHBoxLayout()
        self.negative_btn = QPushButton("Negative click (N)")
        self.negative_btn.setCheckable(True)
        self.negative_btn.setToolTip("Next clicks mark background (key N on the click layer)")
        self.negative_btn.toggled.connect(self.set_negative)
        self.run_btn = QPushButton("Run")
        self.run_btn.setToolTip("Run a round with the new prompts (Shift+Enter)")
        self.run_btn.clicked.connect(self.request_round)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel_round)
        for b in (self.negative_btn, self.run_btn, self.cancel_btn):
            row.addWidget(b)
        lay.addLayout(row)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat(IDLE_FORMAT)
        lay.addWidget(self.progress)
        self.speed_label = QLabel("")
        self.speed_label.setWordWrap(True)  # long lines must not widen the dock
        lay.addWidget(self.speed_label)

        row = QHBoxLayout()
        self.undo_btn = QPushButton("Undo round")
        self.undo_btn.setToolTip("Undo the current object's last round (Ctrl+Z)")
        self.undo_btn.clicked.connect(self.undo)
        self.redo_btn = QPushButton("Redo round")
        self.redo_btn.setToolTip("Redo (Ctrl+Shift+Z)")
        self.redo_btn.clicked.connect(self.redo)
        row.addWidget(self.undo_btn)
        row.addWidget(self.redo_btn)
        lay.addLayout(row)

        box = QGroupBox("Objects")
        bl = QVBoxLayout(box)
        self.objects_panel = ObjectsPanel()
        self.objects_panel.selected.connect(self.select_object)
        self.objects_panel.renamed.connect(self.rename_object)
        self.objects_panel.new_requested.connect(self.new_object)
        self.objects_panel.delete_requested.connect(self.delete_object)
        self.objects_panel.reset_requested.connect(self.reset_object)
        self.objects_panel.visibility_changed.connect(self.set_object_visible)
        self.objects_panel.lock_changed.connect(self.set_object_locked)
        bl.addWidget(self.objects_panel)
        row = QHBoxLayout()
        self.import_combo = QComboBox()
        self.import_combo.setToolTip("A Labels layer you already have (e.g. an earlier result)")
        self.import_btn = QPushButton("Take in")
        self.import_btn.setToolTip("Each label value of that layer becomes an object to refine")
        self.import_btn.clicked.connect(
            lambda: self.import_labels(self.import_combo.currentText())
        )
        row.addWidget(QLabel("Labels:"))
        row.addWidget(self.import_combo, 1)
        row.addWidget(self.import_btn)
        bl.addLayout(row)
        row = QHBoxLayout()
        self.export_btn = QPushButton("Export...")
        self.export_btn.setToolTip(
            "Save the objects on the scan's own grid (NIfTI or TIFF), with their names"
        )
        self.export_btn.clicked.connect(self._export_dialog)
        self.per_object_check = QCheckBox("one file per object")
        self.results_btn = QPushButton("Results...")
        self.results_btn.setToolTip(
            "Per object: volume (mL), mean and standard deviation of intensity, largest "
            "diameter (mm); copied to the clipboard and saved as CSV"
        )
        self.results_btn.clicked.connect(self._results_dialog)
        row.addWidget(self.export_btn)
        row.addWidget(self.per_object_check, 1)
        row.addWidget(self.results_btn)
        bl.addLayout(row)
        self.restore_btn = QPushButton("Restore autosaved work")
        self.restore_btn.setVisible(False)
        self.restore_btn.clicked.connect(self.restore_autosave)
        bl.addWidget(self.restore_btn)
        lay.addWidget(box)

        box = QGroupBox("Propagation limits")
        fl = QFormLayout(box)
        self.limit_check = QCheckBox("only between slices")
        self.z_min = QSpinBox()
        self.z_max = QSpinBox()
        fl.addRow(self.limit_check)
        row = QHBoxLayout()
        row.addWidget(self.z_min, 1)
        row.addWidget(QLabel("and"))
        row.addWidget(self.z_max, 1)
        fl.addRow(row)
        self.direction_combo = QComboBox()
        self.direction_combo.addItems(["both", "up", "down"])
        self.direction_combo.setToolTip("up: increasing slice index; down: decreasing")
        fl.addRow("Direction:", self.direction_combo)
        for w in (self.limit_check, self.z_min, self.z_max):
            sig = w.toggled if w is self.limit_check else w.valueChanged
            sig.connect(self._apply_limits)
        self.direction_combo.currentTextChanged.connect(self._apply_limits)
        lay.addWidget(box)

        box = QGroupBox("Settings")
        fl = QFormLayout(box)
        s = self.settings
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.setCurrentText(s.device)
        fl.addRow("Device:", self.device_combo)
        self.threads_spin = QSpinBox()
        self.threads_spin.setRange(0, 64)
        self.threads_spin.setSpecialValueText("auto")
        self.threads_spin.setValue(s.threads)
        self.threads_spin.setToolTip("Engine CPU threads; auto leaves one core to the viewer")
        fl.addRow("Threads:", self.threads_spin)
        row = QHBoxLayout()
        self.weights_edit = QLineEdit(s.weights)
        self.weights_edit.setPlaceholderText("bundled weights")
        browse = QPushButton("...")
        browse.clicked.connect(self._browse_weights)
        row.addWidget(self.weights_edit, 1)
        row.addWidget(browse)
        fl.addRow("Weights:", row)
        self.fusion_check = QCheckBox("multi-round fusion")
        self.fusion_check.setChecked(s.fusion)
        self.propagation_check = QCheckBox("propagate to other slices")
        self.propagation_check.setChecked(s.propagation)
        self.autorun_check = QCheckBox("run on every prompt")
        self.autorun_check.setChecked(s.auto_run)
        fl.addRow(self.fusion_check)
        fl.addRow(self.propagation_check)
        fl.addRow(self.autorun_check)
        self.beside_check = QCheckBox("autosave beside the image file")
        self.beside_check.setToolTip(
            "Off: autosaves go to your user data folder (data folders stay untouched)"
        )
        self.beside_check.setChecked(s.autosave_beside)
        fl.addRow(self.beside_check)
        self.window_combo = QComboBox()
        self.window_combo.addItems(list(WINDOW_PRESETS))
        self.window_combo.setCurrentText(s.window)
        fl.addRow("CT window:", self.window_combo)
        lay.addWidget(box)
        lay.addStretch(1)
        # a combo box grows to its longest entry (a long layer name) and would widen the dock
        for combo in (self.image_combo, self.import_combo, self.device_combo):
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.setMinimumContentsLength(8)

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
            _preload_model(s.weights, s.torch_device, s.engine_threads)

    def _prepare_engine(self, session: Any) -> Callable[[], None]:
        """What a round's worker does before computing: load the model, set the threads."""
        s = self.settings
        weights, device, threads = s.weights, s.torch_device, s.engine_threads

        def prepare() -> None:
            try:
                model = get_model(weights, device)
            except Exception as e:  # noqa: BLE001 - a bad weights file is a user mistake
                raise RuntimeError(f"could not load the weights: {e}") from e
            session.model = model
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

    def _select_clicks(self, st: ImageState) -> None:
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

    def set_image(self, image: Any) -> ImageState | None:
        """Make ``image`` the one being segmented, creating its layers and session if needed."""
        err = check_image(image)
        if err:
            self._message(err, "warning")
            return None
        if self.state is not None and _layer_key(self.state.image) == _layer_key(image):
            return self.state
        if self.runner.busy:  # cancel a running round first
            self.runner.when_idle(lambda: self.set_image(image))
            return None
        st = self.states.get(_layer_key(image))
        if st is not None and not st.layers_alive(self.viewer):
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
                if other is not st and other.layers_alive(self.viewer):
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

    def _create_state(self, image: Any) -> ImageState | None:
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
                model=_NO_MODEL,
                fusion=s.fusion,
                propagation=s.propagation,
            )
        except ValueError as e:
            self._message(f"Cannot segment '{image.name}': {e}", "error")
            return None
        except Exception as e:  # noqa: BLE001 - an image the engine cannot read
            self._message(f"Could not start LIM-Net on '{image.name}': {e}", "error")
            return None
        _preload_model(s.weights, s.torch_device, s.engine_threads)
        grid = grid_kwargs(image)
        size = max(3.0, min(12.0, max(data.shape[-2:]) / 60))
        self._creating = True
        try:
            labels = self.viewer.add_labels(
                np.zeros(session.shape, np.uint16), name=f"{image.name} labels", **grid
            )
            self._own_labels.add(labels.name)  # never offered for take-in
            shapes = self.viewer.add_shapes(
                None,
                ndim=image.ndim,
                name=f"{image.name} boxes",
                features={"positive": np.zeros(0, bool), "axis": np.zeros(0, int)},
                feature_defaults={"positive": not self.negative, "axis": -1},
                edge_color="yellow",
                face_color="transparent",
                edge_width=max(1.0, size / 4),
                **grid,
            )
            points = self.viewer.add_points(
                None,
                ndim=image.ndim,
                name=f"{image.name} clicks",
                features={"positive": np.zeros(0, bool), "axis": np.zeros(0, int)},
                feature_defaults={"positive": True, "axis": -1},
                face_color="positive",
                face_color_cycle=CLICK_COLORS,
                size=size,
                border_width=0,
                out_of_slice_display=False,
                **grid,
            )
        finally:
            self._creating = False
        st = ImageState(image, session, points, shapes, labels)
        points.events.data.connect(self._on_prompts_changed)
        shapes.events.data.connect(self._on_prompts_changed)
        labels.events.paint.connect(lambda ev, st=st: self._on_paint(st, ev))
        for layer in (points, shapes):
            self._bind_keys(layer)
        self._apply_window(image)
        st.autosave_problems = []
        st.autosave_found = autosave_mod.find_autosave(image, session.shape, st.autosave_problems)
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
            st.points.feature_defaults = {"positive": not self.negative, "axis": -1}
            st.shapes.feature_defaults = {"positive": not self.negative, "axis": -1}

    def _show_prompts(self, st: ImageState, prompts: list[tuple]) -> None:
        self._syncing = True
        try:
            set_points(st.points, prompts, st.two_d)
            set_shapes(st.shapes, prompts, st.two_d)
            # replacing the features resets the defaults: keep the click sign the user chose
            st.points.feature_defaults = {"positive": not self.negative, "axis": -1}
        finally:
            self._syncing = False
        st.shown = list(prompts)

    def layer_prompts(self, st: ImageState) -> tuple[list[tuple], list[str]]:
        clicks, dropped = points_to_prompts(st.points, st.shape3)
        boxes, problems = shapes_to_prompts(st.shapes, st.shape3)
        if dropped:
            problems.append("a click lies outside the image")
        return clicks + boxes, problems

    def _on_prompts_changed(self, event: Any) -> None:
        action = str(getattr(event, "action", "changed"))
        if self._syncing or action.split(".")[-1].lower() in ("adding", "removing", "changing"):
            return
        st = self.state
        if st is None or event.source not in (st.points, st.shapes):
            return
        if event.source is st.points:
            self._syncing = True
            try:
                color_points(st.points)
            finally:
                self._syncing = False
        # a prompt just placed lies on a slice of the view's axis (any of the volume's three)
        axis = 0 if st.two_d else view_axis(self.viewer)
        if axis is not None and not st.two_d:
            self._syncing = True
            try:
                resolve_axes(st.points, axis)
                resolve_axes(st.shapes, axis)
            finally:
                self._syncing = False
        new, problems = self.layer_prompts(st)
        if new == st.shown and not problems:
            return
        if axis is None:
            self._show_prompts(st, st.shown)
            self._message(
                "Prompts go on slices: switch to the 2D view (any axis order) and click again.",
                "warning",
            )
            return
        if problems:
            self._show_prompts(st, st.shown)
            self._message("Prompt refused: " + "; ".join(sorted(set(problems))) + ".", "warning")
            return
        if self._refuse_locked(st, st.current):
            self._show_prompts(st, st.shown)
            return
        if st.current is None:
            self._new_object_now(st, keep_prompts=True)
        st.shown = new
        if self.settings.auto_run:
            self.request_round()
        else:
            self.status.setText("Prompts changed: press Run (Shift+Enter).")

    def _sync_prompts(self, st: ImageState, obj: int) -> None:
        """Make the session's prompt list of ``obj`` equal to what the layers show."""
        s = st.session
        old = [from_session_prompt(p) for p in s.prompts(obj)]
        removed, added = diff_prompts(old, st.shown)
        for i in removed:
            s.remove_prompt(obj, i)
        for p in added:
            try:
                add_to_session(s, obj, p)
            except ValueError as e:
                self._message(f"Prompt refused: {e}", "warning")
        st.shown = [from_session_prompt(p) for p in s.prompts(obj)]

    # ---------------------------------------------------------------- brush edits
    def _on_paint(self, st: ImageState, event: Any) -> None:
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
                ids.update(st.objects)
        st.edited |= ids - {0}
        st.slice_counts = None  # volumes are recounted in full after a brush edit
        locked = {k for k in ids if k in st.objects and st.objects[k].locked}
        if locked:  # after napari has written the edit (a data_setitem reports it before)
            QTimer.singleShot(0, lambda: self._restore_locked(st, locked))

    def sync_brush_edits(self, st: ImageState) -> None:
        """Take the user's edits of the Labels layer into the session (set_mask per object)."""
        data = st.data3
        edited = {k for k in st.edited if k in st.objects}
        if data.size <= FULL_COMPARE_VOXELS and st.objects:
            ref = st.session.labels()
            ref = ref[None] if st.two_d else ref
            diff = ref != data
            if diff.any():
                edited |= {int(v) for v in np.unique(ref[diff])} | {
                    int(v) for v in np.unique(data[diff])
                }
                edited &= set(st.objects)
        st.edited.clear()
        if not edited:
            return
        # Objects that lost voxels first, so that the others can take them.
        order = sorted(edited)
        for _ in range(2):
            for k in order:
                target = data == k
                if not np.array_equal(st.mask3(k), target):
                    st.session.set_mask(k, target[0] if st.two_d else target)

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

    def _start_round(self) -> None:
        st = self.state
        if st is None or st.current is None:
            return
        obj = st.current
        if self._refuse_locked(st, obj):
            return
        try:
            self.sync_brush_edits(st)
            self._sync_prompts(st, obj)
            events = st.session.run_iter(obj)
        except ValueError as e:
            self._message(str(e), "error")
            return
        self._round_obj = obj
        self._round_touched = set()
        self._round_decided = set()
        self.progress.setFormat("%v / %m slices")
        self._t_round = time.perf_counter()
        self._t_first = None
        self._pending = []
        self._flush_timer.stop()
        self._set_progress(0, 1)
        self.cancel_btn.setEnabled(True)
        self.status.setText(f"Segmenting object {obj}...")
        self.runner.start(
            events,
            on_batch=self._on_batch,
            on_done=self._on_finished,
            on_error=self._on_error,
            prepare=self._prepare_engine(st.session),
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
        if self.state is None or self._round_obj is None:
            return
        self._pending.extend(batch)
        if self._flush_timer.isActive():
            return
        if self._t_first is None:
            self._flush()
            return
        wait = self._last_flush + REFRESH_SECONDS - time.perf_counter()
        self._flush_timer.start(max(0, int(wait * 1000)))

    def _shown_slice(self, st: ImageState) -> tuple[int, int] | None:
        """(axis, index) of the slice of ``st`` the canvas shows, or None in the 3D view."""
        if st.two_d:
            return (0, 0)
        axis = view_axis(self.viewer)
        if axis is None:
            return None
        i = st.labels.world_to_data(self.viewer.dims.point)[axis]
        return axis, int(np.round(i))

    def _flush(self) -> None:
        """Write the pending slices into the Labels layer (only the changed voxels) and refresh
        it when the canvas shows one of them; other slices appear when the user goes there."""
        batch, self._pending = self._pending, []
        st, obj = self.state, self._round_obj
        if not batch or st is None or obj is None:
            return
        if self._t_first is None:
            self._t_first = time.perf_counter() - self._t_round
        data = st.data3
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
            self._round_decided.add((axis, z))
            if axis == 0:
                self._round_touched.add(z)
            else:  # the axis-0 slices this plane crosses where the object is or was
                self._round_touched.update(np.flatnonzero((m | ours).any(axis=1)).tolist())
        last = batch[-1]
        self._set_progress(last.done, max(1, last.total))
        shown = self._shown_slice(st)
        # refresh when the shown slice changed, or slices across another axis (they cross it)
        if changed and (
            shown is None or shown in changed or any(a != shown[0] for a, _ in changed)
        ):
            st.labels.refresh(extent=False)
        self._last_flush = time.perf_counter()

    def _on_error(self, exc: Exception) -> None:
        self._message(f"The round failed: {exc}", "error")

    def _on_finished(self, completed: bool) -> None:
        """The round has ended (the runner has closed its events): show how it went."""
        self._flush_timer.stop()
        if completed:
            self._flush()
        self._pending = []
        st, obj = self.state, self._round_obj
        self.cancel_btn.setEnabled(False)
        elapsed = time.perf_counter() - self._t_round
        if st is not None and obj is not None and obj in st.objects:
            if completed:
                n = len(self._round_decided)
                self.last_round = {
                    "slices": n,
                    "seconds": elapsed,
                    "first_response": self._t_first or elapsed,
                    "slices_per_s": n / elapsed if elapsed > 0 else 0.0,
                }
                st.last_round_text = (
                    f"Last round: {n} slices in {elapsed:.2f} s "
                    f"({self.last_round['slices_per_s']:.0f} slices/s), "
                    f"first slice after {self.last_round['first_response'] * 1000:.0f} ms"
                )
                self.speed_label.setText(st.last_round_text)
                # the bar ends on the slices the round decided, as the line above says
                self.progress.setFormat("%v slices")
                self._set_progress(n, max(n, 1))
                # the round changed only its own object, on the slices it decided
                self._after_change(st, slices=self._round_touched)
                outcome = self._round_outcome(st, obj)  # (reads the counts just updated)
                if outcome:
                    self._message(outcome, "warning")
                else:
                    self.status.setText(
                        f"Object {obj} updated. Click to correct, O for a new object."
                    )
            else:
                self._write_object(st, obj)
                self.status.setText("Round cancelled; its prompts are kept.")
                self.progress.setFormat("cancelled")
                self._set_progress(0, 1)
                self._after_change(st)

    def _round_outcome(self, st: ImageState, obj: int) -> str | None:
        """A plain explanation when a round left its object empty or on one slice only."""
        prompts = st.session.prompts(obj)
        if not prompts:
            return None
        last = prompts[-1]
        at = [int(round(float(v))) for v in last.coords[:2]]
        at.insert(last.axis, int(last.z))
        z, y, x = at
        slices = self._object_slices(st, obj)
        name = st.objects[obj].name
        if slices.size == 0:
            other = int(st.data3[z, y, x]) if last.kind in ("click", "scribble") else 0
            if other and other != obj and other in st.objects:
                return (
                    f"{name} is empty: the prompt lies inside {st.objects[other].name} (label "
                    f"{other}), and objects never take each other's voxels. Select "
                    f"{st.objects[other].name} in the list to change it, or prompt elsewhere."
                )
            return (
                f"{name} is empty: the network found no object at the prompt. Click nearer "
                "the object's middle, or draw a box or lasso around it."
            )
        session = st.session
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

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Process events until no round runs (for scripts and tests)."""
        return self.runner.wait(timeout)

    def _write_object(self, st: ImageState, obj: int) -> None:
        """Show the session's mask of ``obj`` in the Labels layer (others' voxels untouched)."""
        data = st.data3
        m = st.mask3(obj) if obj in st.session.objects else np.zeros(st.shape3, bool)
        data[(data == obj) & ~m] = 0
        data[m & (data == 0)] = obj
        st.labels.refresh()

    def _after_change(self, st: ImageState, slices: set[int] | None = None) -> None:
        self._update_volumes(st, slices)
        self._update_objects_panel()
        self.autosave(st)

    # ---------------------------------------------------------------- objects
    def _color_of(self, st: ImageState, obj: int) -> tuple[float, float, float]:
        c = np.asarray(st.base_colormap.map(np.array([obj])), float).ravel()
        return (float(c[0]), float(c[1]), float(c[2])) if c.size >= 3 else (1.0, 0.0, 0.0)

    def set_object_visible(self, obj: int, visible: bool) -> None:
        """Show or hide one object in the Labels layer (its voxels stay; rounds still see
        them)."""
        st = self.state
        if st is None or obj not in st.objects:
            return
        st.objects[obj].visible = bool(visible)
        self._update_objects_panel()
        self.autosave(st)

    def _apply_visibility(self, st: ImageState) -> None:
        """The base colours, or (an object hidden) a direct colormap with it transparent; set
        only when that changes (a new colormap redraws the whole layer)."""
        from napari.utils.colormaps import DirectLabelColormap

        key = tuple((k, o.visible) for k, o in st.objects.items())
        if not any(not v for _, v in key):
            key = ()
        if key == st.colormap_key:
            return
        st.colormap_key = key
        if not key:
            st.labels.colormap = st.base_colormap
            return
        colors: dict[int | None, tuple[float, ...]] = {0: (0.0, 0.0, 0.0, 0.0)}
        for k, o in st.objects.items():
            colors[k] = (*o.color, 1.0 if o.visible else 0.0)
        colors[None] = (0.5, 0.5, 0.5, 1.0)  # a value no object has (painted by hand)
        st.labels.colormap = DirectLabelColormap(color_dict=colors)

    def set_object_locked(self, obj: int, locked: bool) -> None:
        """Lock an object: no round, brush, undo, reset or delete changes it until unlocked."""
        st = self.state
        if st is None or obj not in st.objects:
            return
        if locked:
            self.sync_brush_edits(st)  # edits made before the lock are kept
        st.objects[obj].locked = bool(locked)
        self._update_objects_panel()
        self.status.setText(f"{st.objects[obj].name} {'locked' if locked else 'unlocked'}.")
        self.autosave(st)

    def _refuse_locked(self, st: ImageState, obj: int | None) -> bool:
        """True (with a message) when ``obj`` is locked."""
        if obj is None or obj not in st.objects or not st.objects[obj].locked:
            return False
        name = st.objects[obj].name
        self._message(
            f"{name} is locked: unlock it (the Lock box in the objects list) to change it.",
            "warning",
        )
        return True

    def _restore_locked(self, st: ImageState, locked: set[int]) -> None:
        """Undo a brush stroke's changes to locked objects' voxels."""
        ref = st.session.labels()
        ref = ref[None] if st.two_d else ref
        data = st.data3
        for k in locked:
            wrong = (data == k) != (ref == k)
            data[wrong] = ref[wrong]
        st.labels.refresh()
        names = ", ".join(st.objects[k].name for k in sorted(locked))
        self._message(f"{names} is locked: the brush left it unchanged.", "warning")

    def _update_volumes(self, st: ImageState, slices: set[int] | None = None) -> None:
        """Objects' volumes; ``slices``: only these slices changed since the last count (a
        round's), so only they are recounted (a whole volume takes long on a big CT)."""
        vox_ml = float(np.prod(spacing_of(st.image))) / 1000.0
        if st.two_d:
            vox_ml = 0.0
        data = st.data3
        if slices is None or st.slice_counts is None:
            st.slice_counts = [np.bincount(data[z].ravel()) for z in range(data.shape[0])]
        else:
            for z in slices:
                st.slice_counts[z] = np.bincount(data[z].ravel())
        counts = np.zeros(max(len(c) for c in st.slice_counts), np.int64)
        for c in st.slice_counts:
            counts[: len(c)] += c
        for k, o in st.objects.items():
            o.volume_ml = float(counts[k]) * vox_ml if k < len(counts) else 0.0

    def _object_slices(self, st: ImageState, obj: int) -> np.ndarray:
        """The slices holding voxels of ``obj``, from the per-slice counts ``_update_volumes``
        keeps (no pass over the whole label map)."""
        if st.slice_counts is None:
            self._update_volumes(st)
        return np.array(
            [z for z, c in enumerate(st.slice_counts) if obj < len(c) and c[obj] > 0], dtype=int
        )

    def _update_objects_panel(self) -> None:
        st = self.state
        if st is None:
            self.objects_panel.set_objects([], None)
            return
        for k, o in st.objects.items():
            o.color = self._color_of(st, k)
        self._apply_visibility(st)
        self.objects_panel.set_objects(list(st.objects.values()), st.current)
        st.labels.metadata["limnet_objects"] = [o.as_metadata() for o in st.objects.values()]

    def _new_object_now(self, st: ImageState, keep_prompts: bool = False) -> int:
        obj = st.session.new_object()
        st.objects[obj] = ObjectInfo(obj, f"Object {obj}", self._color_of(st, obj))
        st.current = obj
        st.labels.selected_label = obj
        if not keep_prompts:
            self._show_prompts(st, [])
        self._update_objects_panel()
        return obj

    @_after_round
    def new_object(self) -> int | None:
        """Start the next object (key O); its first click segments it."""
        st = self.state
        if st is None:
            self._message(check_image(None) or "", "warning")
            return None
        obj = self._new_object_now(st)
        self.status.setText(f"Object {obj}: click on it.")
        return obj

    @_after_round
    def select_object(self, obj: int) -> None:
        """Resume refining an earlier object: its prompts are shown again."""
        st = self.state
        if st is None or obj not in st.objects:
            return
        st.current = obj
        st.labels.selected_label = obj
        self._show_prompts(st, [from_session_prompt(p) for p in st.session.prompts(obj)])
        self._update_objects_panel()
        self.status.setText(f"Refining {st.objects[obj].name}.")

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
        slices = self._object_slices(st, obj)
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
        st = self.state
        if st is None or obj not in st.objects:
            return
        st.objects[obj].name = name
        self._update_objects_panel()
        self.autosave(st)

    @_after_round
    def delete_object(self, obj: int) -> None:
        st = self.state
        if st is None or obj not in st.objects:
            return
        if self._refuse_locked(st, obj):
            return
        st.session.remove_object(obj)
        del st.objects[obj]
        data = st.data3
        data[data == obj] = 0
        st.labels.refresh()
        if st.current == obj:
            st.current = next(reversed(st.objects), None) if st.objects else None
            if st.current is not None:
                self.select_object(st.current)
            else:
                self._show_prompts(st, [])
        self._after_change(st)

    def reset_object(self, obj: int | None = None) -> None:
        """Empty an object (mask, prompts, history)."""
        st = self.state
        obj = obj if obj is not None else (st.current if st else None)
        if st is None or obj not in st.objects:
            return
        if self.runner.busy:
            self.runner.when_idle(lambda: self.reset_object(obj))
            return
        if self._refuse_locked(st, obj):
            return
        st.session.reset(obj)
        self._write_object(st, obj)
        if st.current == obj:
            self._show_prompts(st, [])
        self._after_change(st)

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
            self.runner.restart = False
            self.runner.when_idle(lambda: self._undo_redo(which))
            return
        obj = st.current
        if self._refuse_locked(st, obj):
            return
        self.sync_brush_edits(st)
        getattr(st.session, which)(obj)
        self._write_object(st, obj)
        self._show_prompts(st, [from_session_prompt(p) for p in st.session.prompts(obj)])
        self._after_change(st)

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
        src = np.asarray(layer.data)
        if src.shape != st.labels.data.shape:
            self._message(
                f"'{name}' has shape {src.shape} but the image has shape "
                f"{st.labels.data.shape}; it cannot be taken in.",
                "error",
            )
            return []
        names = layer_label_names(layer)
        self.sync_brush_edits(st)
        new_ids = []
        for v in np.unique(src):
            if v == 0:
                continue
            obj = st.session.new_object()
            st.session.set_mask(obj, src == v)
            st.objects[obj] = ObjectInfo(
                obj, names.get(int(v)) or f"{name} {int(v)}", self._color_of(st, obj)
            )
            self._write_object(st, obj)
            new_ids.append(obj)
        if not new_ids:
            self._message(f"'{name}' has no labels.", "warning")
            return []
        st.current = new_ids[-1]
        st.labels.selected_label = st.current
        self._show_prompts(st, [])
        self._after_change(st)
        self.status.setText(f"Took in {len(new_ids)} object(s) from '{name}'.")
        return new_ids

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
        from .._writer import write_labels
        from ..io.writer import NIFTI_SUFFIXES, TIFF_SUFFIXES

        st = self.state
        if st is None:
            self._message(check_image(None) or "", "warning")
            return []
        path = Path(path)
        ending = next((e for e in NIFTI_SUFFIXES + TIFF_SUFFIXES if path.name.endswith(e)), "")
        if not ending:
            self._message(f"{path}: export as .nii.gz, .nii, .tif or .tiff", "error")
            return []
        self.sync_brush_edits(st)
        layer = st.labels
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
                for obj, info in st.objects.items():
                    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in info.name)
                    target = path.with_name(f"{stem}_{obj}_{safe}{ending}")
                    name = {**info.as_metadata(), "id": 1}  # the file holds 0 / 1
                    one = {**meta, "metadata": {**meta["metadata"], "limnet_objects": [name]}}
                    written += [Path(p) for p in write_labels(str(target), data == obj, one)]
        except (ValueError, OSError) as e:
            self._message(f"Export failed, nothing replaced: {e}", "error")
            return written
        self._message("Exported " + ", ".join(p.name for p in written) + f" to {path.parent}")
        return written

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

        from ..engine.measure import measure_object, measures_csv

        st = self.state
        if st is None:
            return ""
        self.sync_brush_edits(st)
        spacing = st.session.spacing
        rows = [
            measure_object(k, info.name, st.data3 == k, st.session.volume.slice, spacing)
            for k, info in st.objects.items()
        ]
        text = measures_csv(rows)
        QApplication.clipboard().setText(text)
        where = "copied to the clipboard"
        if path:
            try:
                Path(path).write_text(text, encoding="utf-8")
            except OSError as e:
                self._message(f"Results not saved to {path}: {e}", "error")
                return text
            where += f" and saved to {path}"
        self._message(f"Results of {len(rows)} object(s) {where}.")
        return text

    # ---------------------------------------------------------------- autosave
    def _autosave_meta(self, st: ImageState) -> dict:
        src = autosave_mod.image_path(st.image)
        return {
            "version": 1,
            "image": st.image.name,
            "source": str(src) if src else None,
            "shape": list(st.session.shape),
            "objects": [
                {
                    **o.as_metadata(),
                    "prompts": [list(p) for p in map(from_session_prompt, st.session.prompts(k))],
                }
                for k, o in st.objects.items()
                if k in st.session.objects
            ],
        }

    def autosave(self, st: ImageState | None = None) -> None:
        """Write labels, prompts and names (in a background thread)."""
        st = st or self.state
        if st is None:
            return
        shape = st.session.shape
        paths = [
            autosave_mod.save_path(st.image, shape, beside=self.settings.autosave_beside),
            autosave_mod.fallback_path(st.image, shape),
        ]
        self.autosaver.save(paths, np.array(st.labels.data, copy=True), self._autosave_meta(st))

    @_after_round
    def restore_autosave(self, path: str | Path | None = None) -> bool:
        """Load autosaved labels, names and prompts for the current image; True on success."""
        st = self.state
        if st is None:
            return False
        path = Path(path) if path else st.autosave_found
        if path is None:
            path = autosave_mod.find_autosave(st.image, st.session.shape)
        if path is None:
            self._message("No autosaved work for this image.", "warning")
            return False
        try:  # checked whole before the current objects are touched
            labels, meta = autosave_mod.load(path, st.session.shape)
        except ValueError as e:
            self._message(f"Autosave not restored: {e}", "error")
            return False
        labels = labels.reshape(st.labels.data.shape)
        s = st.session
        for k in list(st.objects):
            s.remove_object(k)
        st.objects.clear()
        st.labels.data[...] = 0
        for entry in meta.get("objects", []):
            saved = int(entry["id"])
            mask = labels == saved
            obj = s.new_object()
            s.set_mask(obj, mask)
            st.objects[obj] = ObjectInfo(
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
            st.data3[(mask[None] if st.two_d else mask) & (st.data3 == 0)] = obj
        st.labels.refresh()
        st.current = next(reversed(st.objects), None) if st.objects else None
        if st.current is not None:
            st.labels.selected_label = st.current
            self._show_prompts(st, [from_session_prompt(p) for p in s.prompts(st.current)])
        st.autosave_found = None
        self.restore_btn.setVisible(False)
        self._update_volumes(st)
        self._update_objects_panel()
        self.status.setText(f"Restored {len(st.objects)} object(s) from {path.name}.")
        return True

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.cancel_round()
        self.wait_idle(10)
        self.autosaver.wait(10)
        super().closeEvent(event)
