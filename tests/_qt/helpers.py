"""Small helpers shared by the widget tests."""

from __future__ import annotations

import numpy as np

import napari_limnet
from napari_limnet._qt.layers import add_to_session


def wait_round(qtbot, widget, timeout: int = 20000) -> None:
    qtbot.waitUntil(lambda: not widget.running and not widget._restart, timeout=timeout)


def reference(volume, spacing, groups) -> np.ndarray:
    """Labels a fresh Session gives for the same prompts: one object per group, one round each."""
    s = napari_limnet.Session(volume, spacing=spacing, model=object())
    for group in groups:
        obj = s.new_object()
        for p in group:
            add_to_session(s, obj, p)
        s.run(obj)
    return s.labels()


def two_objects(qtbot, widget, first, second) -> None:
    """Object 1 from a click at ``first``, then a new object 2 from a click at ``second``."""
    widget.state.points.add(first)
    wait_round(qtbot, widget)
    widget.new_object()
    widget.state.points.add(second)
    wait_round(qtbot, widget)
