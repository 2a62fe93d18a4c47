"""Docking, layers on the image grid, a click -> the same labels as Session.run."""

from __future__ import annotations

import numpy as np
from helpers import reference, wait_round


def test_dock_sets_up_layers(dock, volume):
    viewer, w = dock
    st = w.state
    assert st is not None
    assert {"ct clicks", "ct boxes", "ct labels"} <= {lay.name for lay in viewer.layers}
    for layer in (st.points, st.shapes, st.labels):
        np.testing.assert_allclose(layer.scale, (2.5, 0.8, 0.8))
    assert st.labels.data.shape == volume.shape
    assert st.points.feature_defaults["positive"].iloc[0]


def test_click_matches_session_run(dock, qtbot, volume):
    viewer, w = dock
    st = w.state
    st.points.add([10, 32, 20])
    wait_round(qtbot, w)
    assert st.labels.data.max() == 1
    ref = reference(volume, (2.5, 0.8, 0.8), [[("click", 10, 32, 20, True)]])
    np.testing.assert_array_equal(st.labels.data, ref)
    assert w.objects_panel.table.rowCount() == 1
    assert st.objects[1].volume_ml > 0
