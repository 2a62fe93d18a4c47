"""Objects: two objects, resuming, delete/rename, brush edits, taking in a labels layer."""

from __future__ import annotations

import numpy as np
from helpers import two_objects, wait_round


def test_two_objects_do_not_overwrite(dock, qtbot):
    viewer, w = dock
    st = w.state
    st.points.add([10, 32, 20])
    wait_round(qtbot, w)
    one = st.labels.data == 1
    assert w.new_object() == 2
    assert len(st.points.data) == 0 and st.labels.selected_label == 2
    # a box around both ellipsoids: object 2 must not take object 1's voxels
    st.shapes.add_rectangles([np.array([[10, 15, 5], [10, 15, 60], [10, 50, 60], [10, 50, 5]])])
    wait_round(qtbot, w)
    np.testing.assert_array_equal(st.labels.data == 1, one)
    assert (st.labels.data == 2).any()
    assert [o["id"] for o in st.labels.metadata["limnet_objects"]] == [1, 2]
    assert w.objects_panel.table.rowCount() == 2


def test_resume_earlier_object(dock, qtbot):
    viewer, w = dock
    st = w.state
    two_objects(qtbot, w, [10, 32, 20], [10, 32, 46])
    w.objects_panel.table.selectRow(0)  # the user picks object 1 in the list
    assert st.current == 1
    assert [tuple(p) for p in st.points.data] == [(10, 32, 20)]
    w.set_negative(True)
    st.points.add([10, 32, 20])
    wait_round(qtbot, w)
    assert not (st.labels.data[10] == 1).any()
    assert (st.labels.data == 2).any()


def test_rename_delete_reset(dock, qtbot):
    viewer, w = dock
    st = w.state
    st.points.add([10, 32, 20])
    wait_round(qtbot, w)
    w.objects_panel.table.item(0, 1).setText("liver")
    assert st.objects[1].name == "liver"
    assert st.labels.metadata["limnet_objects"][0]["name"] == "liver"
    w.new_object()
    st.points.add([10, 32, 46])
    wait_round(qtbot, w)
    w.delete_object(2)
    assert not (st.labels.data == 2).any() and 2 not in st.session.objects
    assert st.current == 1
    w.reset_object(1)
    assert not st.labels.data.any() and st.session.prompts(1) == []


def test_brush_edit_kept(dock, qtbot):
    viewer, w = dock
    st = w.state
    st.points.add([10, 32, 20])
    wait_round(qtbot, w)
    # the user paints a blob of object 1 on slice 3 with the brush (undoable write)
    idx = (np.full(9, 3), *np.meshgrid(np.arange(5, 8), np.arange(5, 8), indexing="ij"))
    idx = (idx[0], idx[1].ravel(), idx[2].ravel())
    st.labels.data_setitem(idx, 1)
    st.points.add([12, 32, 20])  # the next round of the object
    wait_round(qtbot, w)
    assert st.session.mask(1)[3, 5:8, 5:8].all()
    assert (st.labels.data[3, 5:8, 5:8] == 1).all()


def test_take_in_existing_labels(dock, qtbot, volume):
    viewer, w = dock
    st = w.state
    earlier = np.zeros(volume.shape, np.uint8)
    earlier[8:12, 25:40, 12:28] = 3
    earlier[9:11, 28:36, 42:50] = 7
    viewer.add_labels(earlier, name="earlier", scale=(2.5, 0.8, 0.8))
    assert w.state is st
    ids = w.import_labels("earlier")
    assert ids == [1, 2]
    np.testing.assert_array_equal(st.labels.data == 1, earlier == 3)
    np.testing.assert_array_equal(st.labels.data == 2, earlier == 7)
    assert st.objects[2].name == "earlier 7"
    # refine the taken-in object 2: it starts from its mask
    st.points.add([10, 32, 46])
    wait_round(qtbot, w)
    assert (st.labels.data == 2).sum() > (earlier == 7).sum()
    np.testing.assert_array_equal(st.labels.data == 1, earlier == 3)


def test_take_in_uses_the_label_names_the_file_carries(dock, qtbot, volume, tmp_path):
    """A label map saved with its ITK-SNAP description opens with its names, and Take in names
    the objects after them (not "<layer> <value>")."""
    from napari_limnet._reader import read_labels
    from napari_limnet.io import write_label_file

    viewer, w = dock
    lab = np.zeros(volume.shape, np.uint8)
    lab[8:12, 28:36, 16:24] = 1
    lab[8:12, 28:36, 42:50] = 3
    path = tmp_path / "organs_seg.nii.gz"
    objects = [
        {"id": 1, "name": "liver", "color": [1, 0, 0]},
        {"id": 3, "name": "left kidney", "color": [0, 1, 0]},
    ]
    write_label_file(path, lab, objects=objects)
    ((data, kwargs, kind),) = read_labels(path)
    assert list(kwargs["features"]["name"]) == ["background", "liver", "left kidney"]
    viewer.add_labels(data, name="organs", features=kwargs["features"])
    ids = w.import_labels("organs")
    assert [w.state.objects[i].name for i in ids] == ["liver", "left kidney"]


def test_panel_scrolls_on_a_laptop_screen(dock, qtbot):
    """In a dock 700 pixels high (a 1366 x 768 screen) the objects list keeps about six rows
    and the panel scrolls."""
    viewer, w = dock
    w.resize(380, 700)
    w.show()
    qtbot.waitExposed(w)
    assert w.objects_panel.table.height() >= 190
    assert w.scroll.verticalScrollBar().maximum() > 0


def _scan_from_file(make_napari_viewer, volume, tmp_path):
    """(viewer, widget, path): ``volume`` written as a NIfTI file, read with the plugin's reader
    and docked, as a user opens a scan; the file keeps the source grid for the writer."""
    import nibabel as nib

    from napari_limnet._reader import read_volume

    src = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(volume.transpose(2, 1, 0), np.diag([0.8, 0.8, 2.5, 1.0])), src)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-limnet")
    ((data, kwargs, _),) = read_volume(src)
    viewer.add_image(data, **kwargs)
    return viewer, w, src


def test_export_one_map_and_one_file_per_object(make_napari_viewer, qtbot, volume, tmp_path):
    """Export writes on the scan's grid with the names; per object: one 0/1 file each."""

    from napari_limnet.io import load_volume

    viewer, w, src = _scan_from_file(make_napari_viewer, volume, tmp_path)
    st = w.state
    two_objects(qtbot, w, [10, 32, 20], [10, 32, 46])
    w.rename_object(1, "left kidney")
    written = w.export_labels(tmp_path / "out" / "seg.nii.gz")
    assert [p.name for p in written] == ["seg.nii.gz", "seg_labels.txt"]
    saved = load_volume(written[0])
    np.testing.assert_array_equal(saved.data, st.labels.data)
    assert np.allclose(saved.affine, load_volume(src).affine)
    assert '"left kidney"' in written[1].read_text()
    assert "Exported seg.nii.gz" in w.status.text()
    per = w.export_labels(tmp_path / "out" / "obj.nii.gz", per_object=True)
    names = sorted(p.name for p in per if p.name.endswith(".nii.gz"))
    assert names == ["obj_1_left_kidney.nii.gz", "obj_2_Object_2.nii.gz"]
    one = load_volume(tmp_path / "out" / "obj_1_left_kidney.nii.gz").data
    np.testing.assert_array_equal(one == 1, st.labels.data == 1)


def test_results_csv(dock, qtbot, volume, tmp_path):
    viewer, w = dock
    st = w.state
    st.points.add([10, 32, 20])
    wait_round(qtbot, w)
    out = tmp_path / "results.csv"
    text = w.results(out)
    lines = text.splitlines()
    assert lines[0] == "id,name,voxels,volume_ml,mean,std,largest_diameter_mm"
    n = int((st.labels.data == 1).sum())
    assert lines[1].startswith(f"1,Object 1,{n},{n * 2.5 * 0.8 * 0.8 / 1000:.4g},")
    assert out.read_text() == text
    from qtpy.QtWidgets import QApplication

    assert QApplication.clipboard().text() == text


def test_next_previous_and_jump(dock, qtbot, volume):
    viewer, w = dock
    st = w.state
    two_objects(qtbot, w, [10, 32, 20], [12, 32, 46])
    assert st.current == 2
    viewer.dims.set_current_step(0, 0)
    w.step_object(1)  # wraps round to the first object
    assert st.current == 1
    slices = np.flatnonzero((st.labels.data == 1).any(axis=(1, 2)))
    assert viewer.dims.current_step[0] == slices[len(slices) // 2]
    w.step_object(-1)
    assert st.current == 2


def test_hide_and_lock_an_object(dock, qtbot):
    """The Show and Lock boxes of the objects list: a hidden object is drawn transparent and
    kept; a locked one refuses prompts, reset, undo and delete, and a brush leaves it as it
    was; both are autosaved with the object."""
    from qtpy.QtCore import Qt

    viewer, w = dock
    st = w.state
    two_objects(qtbot, w, [10, 32, 20], [10, 32, 46])
    table = w.objects_panel.table
    table.item(0, 4).setCheckState(Qt.CheckState.Unchecked)  # hide object 1
    assert not st.objects[1].visible
    assert st.labels.colormap.map(np.array([1]))[0][3] == 0  # transparent
    assert st.labels.colormap.map(np.array([2]))[0][3] == 1
    assert (st.labels.data == 1).any()  # hidden, not removed
    table.item(0, 4).setCheckState(Qt.CheckState.Checked)
    assert st.labels.colormap.map(np.array([1]))[0][3] == 1

    table.item(1, 5).setCheckState(Qt.CheckState.Checked)  # lock object 2 (the current one)
    assert st.objects[2].locked
    before = st.labels.data.copy()
    st.points.add([12, 32, 46])
    assert len(st.points.data) == 1  # refused: the layer shows object 2's one click again
    assert "locked" in w.status.text()
    w.reset_object(2)
    w.undo()
    w.delete_object(2)
    assert 2 in st.session.objects
    np.testing.assert_array_equal(st.labels.data, before)
    # a brush stroke erasing part of object 2 is put back
    ys, xs = np.nonzero(before[10] == 2)
    st.labels.data_setitem((np.full(3, 10), ys[:3], xs[:3]), 0)
    qtbot.waitUntil(lambda: np.array_equal(st.labels.data, before), timeout=2000)
    # object 1 is not locked: a round of it works, and never takes object 2's voxels
    w.select_object(1)
    st.points.add([10, 32, 30])
    wait_round(qtbot, w)
    np.testing.assert_array_equal(st.labels.data == 2, before == 2)
    saved = {o["id"]: o for o in w._autosave_meta(st)["objects"]}
    assert saved[2]["locked"] and saved[1]["visible"]
    table.item(1, 5).setCheckState(Qt.CheckState.Unchecked)
    w.delete_object(2)
    assert 2 not in st.session.objects


def test_napari_save_dialog_writes_nifti(make_napari_viewer, qtbot, volume, tmp_path, monkeypatch):
    """File > Save Selected Layers with the dialog's default file type and a .nii.gz name: the
    plugin's writer saves the labels on the scan's grid (napari's builtin one could not)."""
    from napari._qt import qt_viewer

    from napari_limnet.io import load_volume

    viewer, w, src = _scan_from_file(make_napari_viewer, volume, tmp_path)
    st = w.state
    st.points.add([10, 32, 20])
    wait_round(qtbot, w)
    target = tmp_path / "saved" / "seg.nii.gz"
    target.parent.mkdir()
    offered = []

    def dialog(*args, **kwargs):  # the user types a name and keeps the default file type
        offered.append(kwargs["filter"])
        return str(target), kwargs["filter"].split(";;")[0]

    monkeypatch.setattr(qt_viewer.QFileDialog, "getSaveFileName", dialog)
    viewer.layers.selection = {st.labels}
    viewer.window._qt_viewer._save_layers_dialog(selected=True)
    assert offered[0].startswith("LIM-Net")  # the default file type is the plugin's
    saved = load_volume(target)
    np.testing.assert_array_equal(saved.data, st.labels.data)
    assert np.allclose(saved.affine, load_volume(src).affine)
