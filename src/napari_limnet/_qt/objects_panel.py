"""The objects list: label value, name, colour, volume (mL), shown, locked; new / delete /
rename / select."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .controller import ObjectInfo


class ObjectsPanel(QWidget):
    """Table of objects. Emits ``selected(id)``, ``renamed(id, name)``, ``new_requested()``,
    ``delete_requested(id)``, ``reset_requested(id)``, ``visibility_changed(id, shown)`` and
    ``lock_changed(id, locked)``; the widget owns the state."""

    selected = Signal(int)
    renamed = Signal(int, str)
    new_requested = Signal()
    delete_requested = Signal(int)
    reset_requested = Signal(int)
    visibility_changed = Signal(int, bool)
    lock_changed = Signal(int, bool)

    COLUMNS = ("Label", "Name", "Colour", "mL", "Show", "Lock")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._updating = False
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        # every column as narrow as its content, the name taking the rest: all six fit a dock
        # of about 330 pixels
        for c in range(len(self.COLUMNS)):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setToolTip("Volumes in mL; Show: drawn in the labels layer; Lock: protected")
        # about six rows stay visible; on a short screen the panel scrolls instead
        self.table.setMinimumHeight(190)
        self.new_btn = QPushButton("New object")
        self.new_btn.setToolTip("Start the next object (key: O on the click/box layers)")
        self.reset_btn = QPushButton("Reset")
        self.reset_btn.setToolTip("Clear the selected object's mask, prompts and history")
        self.delete_btn = QPushButton("Delete")
        self.delete_btn.setToolTip("Delete the selected object")
        row = QHBoxLayout()
        for b in (self.new_btn, self.reset_btn, self.delete_btn):
            row.addWidget(b)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.table)
        lay.addLayout(row)

        self.new_btn.clicked.connect(self.new_requested.emit)
        self.delete_btn.clicked.connect(self._emit_delete)
        self.reset_btn.clicked.connect(self._emit_reset)
        self.table.itemSelectionChanged.connect(self._emit_selected)
        self.table.itemChanged.connect(self._item_changed)

    def current_id(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return int(self.table.item(rows[0].row(), 0).text())

    def set_objects(self, objects: list[ObjectInfo], current: int | None) -> None:
        """Show ``objects`` and select ``current`` without emitting ``selected``."""
        self._updating = True
        try:
            self.table.setRowCount(len(objects))
            for r, o in enumerate(objects):
                lab = QTableWidgetItem(str(o.id))
                lab.setFlags(lab.flags() & ~Qt.ItemFlag.ItemIsEditable)
                name = QTableWidgetItem(o.name)
                col = QTableWidgetItem("")
                col.setFlags(col.flags() & ~Qt.ItemFlag.ItemIsEditable)
                qc = QColor.fromRgbF(*[float(c) for c in o.color[:3]])
                col.setData(Qt.ItemDataRole.DecorationRole, qc)
                col.setToolTip(qc.name())
                vol = QTableWidgetItem(f"{o.volume_ml:.2f}")
                vol.setFlags(vol.flags() & ~Qt.ItemFlag.ItemIsEditable)
                vol.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                show = _check_item(o.visible, "Show this object in the labels layer")
                lock = _check_item(
                    o.locked, "Locked: no round, brush, undo or reset changes this object"
                )
                for c, item in enumerate((lab, name, col, vol, show, lock)):
                    self.table.setItem(r, c, item)
                if o.id == current:
                    self.table.selectRow(r)
            if current is None:
                self.table.clearSelection()
        finally:
            self._updating = False

    def _emit_selected(self) -> None:
        if not self._updating:
            oid = self.current_id()
            if oid is not None:
                self.selected.emit(oid)

    def _emit_delete(self) -> None:
        oid = self.current_id()
        if oid is not None:
            self.delete_requested.emit(oid)

    def _emit_reset(self) -> None:
        oid = self.current_id()
        if oid is not None:
            self.reset_requested.emit(oid)

    def _item_changed(self, item: QTableWidgetItem) -> None:
        if self._updating:
            return
        oid = int(self.table.item(item.row(), 0).text())
        checked = item.checkState() == Qt.CheckState.Checked
        if item.column() == 1:
            self.renamed.emit(oid, item.text().strip() or f"Object {oid}")
        elif item.column() == 4:
            self.visibility_changed.emit(oid, checked)
        elif item.column() == 5:
            self.lock_changed.emit(oid, checked)


def _check_item(on: bool, tip: str) -> QTableWidgetItem:
    item = QTableWidgetItem("")
    item.setFlags((item.flags() | Qt.ItemFlag.ItemIsUserCheckable) & ~Qt.ItemFlag.ItemIsEditable)
    item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
    item.setToolTip(tip)
    return item
