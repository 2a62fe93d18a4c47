"""Prompts: negative clicks, boxes, moved and deleted points, prompts in any view."""

from __future__ import annotations

import numpy as np
from helpers import reference, two_objects, wait_round

from napari_limnet._qt.layers import from_session_prompt

SP = (2.5, 0.8, 0.8)


def test_negative_click_removes_part(dock, qtbot, volume):
    viewer, w = dock
    st = w.state
    # one positive on each ellipsoid (one object with two parts), then a negative on the second
    st.points.add([10, 32, 20])
    wait_round(qtbot, w)
    st.points.add([10, 32, 46])
    wait_round(qtbot, w)
    both = st.labels.data.copy()
    w.set_negative(True)
    assert not st.points.feature_defaults["positive"].iloc[0]
    st.points.add([10, 32, 46])
    wait_round(qtbot, w)
    assert list(st.points.features["positive"]) == [True, True, False]
    assert (st.labels.data[10] == 1).sum() < (both[10] == 1).sum()
    assert st.labels.data[10, 32, 46] == 0 and st.labels.data[10, 32, 20] == 1
    w.set_negative(False)
    assert st.points.feature_defaults["positive"].iloc[0]


def test_box_prompt(dock, qtbot, volume):
    viewer, w = dock
    st = w.state
    st.shapes.add_rectangles([np.array([[10, 25, 40], [10, 25, 52], [10, 40, 52], [10, 40, 40]])])
    wait_round(qtbot, w)
    assert w.state.shown == [("box", 10, 25, 40, 40, 52)]
    ref = reference(volume, SP, [[("box", 10, 25, 40, 40, 52)]])
    np.testing.assert_array_equal(st.labels.data, ref)
    assert st.labels.data[10, 32, 46] == 1


def test_moved_and_deleted_points(dock, qtbot, volume):
    viewer, w = dock
    st = w.state
    st.points.add([10, 32, 20])
    wait_round(qtbot, w)
    assert st.labels.data[10, 32, 20] == 1
    # move the click onto the other ellipsoid (data assignment, as a drag ends)
    st.points.data = np.array([[10.0, 32.0, 46.0]])
    wait_round(qtbot, w)
    prompts = [p for p in st.session.prompts(1)]
    assert len(prompts) == 1 and tuple(prompts[0].coords) == (32.0, 46.0)
    assert st.labels.data[10, 32, 46] == 1 and st.labels.data[10, 32, 20] == 0
    # delete it: the slice is re-run with no prompts
    st.points.selected_data = {0}
    st.points.remove_selected()
    wait_round(qtbot, w)
    assert st.session.prompts(1) == []


def test_prompts_in_any_view(dock, qtbot, volume):
    """A click in the view slicing along y (coronal) and a box in the view slicing along x
    (sagittal) reach the session on their own axes; the 3D view refuses prompts."""
    viewer, w = dock
    st = w.state
    viewer.dims.order = (1, 0, 2)  # slicing along y
    st.points.add([10, 32, 20])
    wait_round(qtbot, w)
    assert st.shown == [("click", 10, 32, 20, True, 1)]
    assert [(p.axis, p.z, p.coords) for p in st.session.prompts(1)] == [(1, 32, (10.0, 20.0))]
    ref = reference(volume, SP, [[("click", 10, 32, 20, True, 1)]])
    np.testing.assert_array_equal(st.labels.data, ref)
    assert st.labels.data[10, 32, 20] == 1
    assert list(st.points.features["axis"]) == [1]
    w.new_object()
    viewer.dims.order = (2, 0, 1)  # slicing along x
    st.shapes.add_rectangles([np.array([[4, 22, 46], [4, 42, 46], [16, 42, 46], [16, 22, 46]])])
    wait_round(qtbot, w)
    assert st.shown == [("box", 46, 4, 22, 16, 42, 2)]
    assert st.labels.data[10, 32, 46] == 2
    # the volumes count every axial slice the sagittal round changed
    assert w.objects_panel.table.rowCount() == 2
    viewer.dims.order = (0, 1, 2)
    viewer.dims.ndisplay = 3
    st.points.add([10, 32, 30])
    assert len(st.points.data) == 0  # object 2 has its box only
    assert "2D view" in w.status.text()
    viewer.dims.ndisplay = 2


def test_box_with_no_area_refused(dock, qtbot):
    viewer, w = dock
    st = w.state
    # a rectangle squashed to a line (a line itself is a scribble)
    flat = np.array([[10, 25, 40], [10, 25, 52], [10, 25, 52], [10, 25, 40]], float)
    st.shapes.add_rectangles([flat])
    assert len(st.shapes.data) == 0
    assert "no area" in w.status.text()


def test_scribble_and_lasso_from_shapes(dock, qtbot, volume):
    viewer, w = dock
    st = w.state
    # a path is a positive scribble across the first ellipsoid
    st.shapes.add_paths([np.array([[10, 30, 16], [10, 33, 22], [10, 34, 24]], float)])
    wait_round(qtbot, w)
    (p,) = st.session.prompts(1)
    assert p.kind == "scribble" and p.positive and p.z == 10
    assert st.shown == [("scribble", 10, True, ((30.0, 16.0), (33.0, 22.0), (34.0, 24.0)))]
    assert st.labels.data[10, 32, 20] == 1 and st.labels.data[10, 32, 46] == 0
    # a polygon around the second ellipsoid is a lasso of a new object
    w.new_object()
    lasso = np.array([[10, 22, 38], [10, 22, 54], [10, 42, 54], [10, 42, 38]], float)
    st.shapes.add_polygons([lasso])
    wait_round(qtbot, w)
    (q,) = st.session.prompts(2)
    assert q.kind == "lasso"
    assert st.labels.data[10, 32, 46] == 2
    ref = reference(
        volume,
        SP,
        [
            [("scribble", 10, True, ((30.0, 16.0), (33.0, 22.0), (34.0, 24.0)))],
            [("lasso", 10, ((22.0, 38.0), (22.0, 54.0), (42.0, 54.0), (42.0, 38.0)))],
        ],
    )
    np.testing.assert_array_equal(st.labels.data, ref)


def test_negative_scribble(dock, qtbot, volume):
    viewer, w = dock
    st = w.state
    w.set_negative(True)
    st.shapes.add_paths([np.array([[10, 32, 44], [10, 32, 48]], float)])
    (p,) = [from_session_prompt(q) for q in st.session.prompts(st.current)]
    assert p[0] == "scribble" and p[2] is False
    w.set_negative(False)


def test_clicks_layer_selected_after_an_image_and_its_labels_open(
    make_napari_viewer, qtbot, volume
):
    """As File > Open Sample does: the image, then its reference labels; the first click must
    go to the clicks layer, not to the labels napari selected last."""
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-limnet")
    viewer.add_image(volume, name="scan")
    viewer.add_labels((volume > 100).astype(np.uint8), name="scan_label")
    # (the widget holds napari's proxies of its layers: compare names, not identities)
    qtbot.waitUntil(
        lambda: getattr(viewer.layers.selection.active, "name", "") == "scan clicks", timeout=5000
    )
    assert w.state.points.mode == "add"


def test_empty_object_explained(dock, qtbot, volume):
    viewer, w = dock
    st = w.state
    two_objects(qtbot, w, [10, 32, 20], [10, 32, 20])  # inside object 1: 2 stays empty
    assert not (st.labels.data == 2).any()
    text = w.status.text()
    assert "is empty" in text and "inside" in text and "label 1" in text


def test_one_slice_outside_limits_explained(dock, qtbot, volume):
    viewer, w = dock
    st = w.state
    w.limit_check.setChecked(True)
    w.z_min.setValue(12)
    w.z_max.setValue(15)
    st.points.add([10, 32, 20])
    wait_round(qtbot, w)
    assert np.flatnonzero((st.labels.data == 1).any(axis=(1, 2))).tolist() == [10]
    assert "outside the propagation limits (slices 12 to 15)" in w.status.text()
