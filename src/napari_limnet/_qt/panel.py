"""The controls of the LIM-Net dock, laid out: no behaviour (``LimNetWidget`` connects them)."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
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

from .objects_panel import ObjectsPanel
from .settings import DEVICES, WINDOW_PRESETS, Settings

IDLE_FORMAT = "no round running"


class LimNetPanel(QWidget):
    """The dock's controls, set to ``settings``; signals are connected by the subclass."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        s = settings
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
        row.addWidget(self.image_combo, 1)
        lay.addLayout(row)

        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)

        row = QHBoxLayout()
        self.negative_btn = QPushButton("Negative click (N)")
        self.negative_btn.setCheckable(True)
        self.negative_btn.setToolTip("Next clicks mark background (key N on the click layer)")
        self.run_btn = QPushButton("Run")
        self.run_btn.setToolTip("Run a round with the new prompts (Shift+Enter)")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
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
        self.redo_btn = QPushButton("Redo round")
        self.redo_btn.setToolTip("Redo (Ctrl+Shift+Z)")
        row.addWidget(self.undo_btn)
        row.addWidget(self.redo_btn)
        lay.addLayout(row)

        box = QGroupBox("Objects")
        bl = QVBoxLayout(box)
        self.objects_panel = ObjectsPanel()
        bl.addWidget(self.objects_panel)
        row = QHBoxLayout()
        self.import_combo = QComboBox()
        self.import_combo.setToolTip("A Labels layer you already have (e.g. an earlier result)")
        self.import_btn = QPushButton("Take in")
        self.import_btn.setToolTip("Each label value of that layer becomes an object to refine")
        row.addWidget(QLabel("Labels:"))
        row.addWidget(self.import_combo, 1)
        row.addWidget(self.import_btn)
        bl.addLayout(row)
        row = QHBoxLayout()
        self.export_btn = QPushButton("Export...")
        self.export_btn.setToolTip(
            "Save the objects on the scan's own grid (NIfTI or TIFF), with their names"
        )
        self.per_object_check = QCheckBox("one file per object")
        self.results_btn = QPushButton("Results...")
        self.results_btn.setToolTip(
            "Per object: volume (mL), mean and standard deviation of intensity, largest "
            "diameter (mm); copied to the clipboard and saved as CSV"
        )
        row.addWidget(self.export_btn)
        row.addWidget(self.per_object_check, 1)
        row.addWidget(self.results_btn)
        bl.addLayout(row)
        self.restore_btn = QPushButton("Restore autosaved work")
        self.restore_btn.setVisible(False)
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
        lay.addWidget(box)

        box = QGroupBox("Settings")
        fl = QFormLayout(box)
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
        self.browse_btn = QPushButton("...")
        row.addWidget(self.weights_edit, 1)
        row.addWidget(self.browse_btn)
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
