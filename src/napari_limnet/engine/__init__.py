"""The Qt-free engine: networks, pre-processing, rounds (2D -> propagation -> fusion), session.

Nothing in this sub-package may import Qt or napari.
"""
