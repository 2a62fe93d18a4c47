"""Small helpers shared by the widget tests."""

from __future__ import annotations

import numpy as np

import napari_limnet


def wait_round(qtbot, widget, timeout: int = 20000) -> None:
    qtbot.waitUntil(lambda: not widget.running and not widget._restart, timeout=timeout)


def reference(volume, spacing, groups) -> np.ndarray:
    """Labels a fresh Session gives for the same prompts: one object per group, one round each."""
    s = napari_limnet.Session(volume, spacing=spacing, model=object())
    for group in groups:
        obj = s.new_object()
        for p in group:
            if p[0] == "click":
                s.add_click(obj, p[1:4], positive=p[4])
            else:
                s.add_box(obj, p[1], p[2:6])
        s.run(obj)
    return s.labels()
