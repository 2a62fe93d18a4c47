"""Make docs/widget.png: the LIM-Net widget at work on the sample CT.

Run under a virtual display:  xvfb-run -a python scripts/screenshot.py [out.png]

Opens the sample CT, docks the widget, clicks once in the liver (its most interior point on
its largest slice, from the sample's label map), waits for the round and grabs the window.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage


def main(out: str = "docs/widget.png") -> None:
    import napari

    from napari_limnet._qt import widget as widget_mod
    from napari_limnet.engine import model as model_mod

    if not model_mod.default_weights_path().is_file():
        # No trained weights yet: a stand-in round (threshold + slice-by-slice propagation, the
        # tests' FakeEngine) so the widget can still be shown. Rerun once weights exist.
        print("warning: no trained weights bundled; the picture uses the tests' stand-in round")
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from fakes import FakeEngine
        from napari_limnet.engine import session as session_mod

        session_mod.rounds.run_round = FakeEngine(threshold=20, upper=75).run_round
        widget_mod.get_model = lambda weights, device: object()

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    dock, w = viewer.window.add_plugin_dock_widget("napari-limnet")
    from qtpy.QtCore import Qt

    viewer.window._qt_window.resizeDocks([dock], [440], Qt.Orientation.Horizontal)
    viewer.open_sample("napari-limnet", "ct")
    w.window_combo.setCurrentText("soft tissue")
    truth_layer = viewer.layers["ct_abdomen_label"]
    truth_layer.visible = False
    names = truth_layer.features
    liver = int(names["index"][list(names["name"]).index("liver")])
    organ = np.asarray(truth_layer.data) == liver
    z = int(np.argmax(organ.sum(axis=(1, 2))))
    dist = ndimage.distance_transform_edt(organ[z])
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    viewer.dims.set_current_step(0, z)
    st = w.state
    st.points.add([z, y, x])
    w.wait_idle(300)
    st.objects[1].name = "liver"
    w._update_objects_panel()
    viewer.layers.selection.active = st.points
    from qtpy.QtWidgets import QApplication

    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(out, canvas_only=False, flash=False)
    print(f"saved {out}; last round: {w.last_round}")
    w.autosaver.wait()
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
