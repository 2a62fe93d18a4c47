"""npe2 writer: a Labels layer to NIfTI (.nii.gz, .nii) or TIFF on its source image's grid."""

from __future__ import annotations

from typing import Any

import numpy as np

from .io import world_affine_from_napari, world_affine_from_nifti, write_label_file
from .io.volume import layer_world_affine


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save labels where they belong: the source file's voxel layout and affine.

    ``meta["metadata"]["limnet_source"]`` (copied from the image layer the reader made) gives
    the source grid; without it the layer's own scale/translate/affine place the file.
    ``meta["metadata"]["limnet_objects"]`` ([{"id", "name", "color"}]) is written beside as an
    ITK-SNAP label description file. Raises ValueError if the labels do not fit the grid.
    """
    metadata = meta.get("metadata") or {}
    source = metadata.get("limnet_source")
    world = world_affine_from_napari(
        meta.get("scale"), meta.get("translate"), meta.get("affine"), meta.get("rotate")
    )
    if source is not None and meta.get("scale") is not None:
        _check_placement(path, source, world)
    written = write_label_file(
        path, data, source=source, world_affine=world, objects=metadata.get("limnet_objects")
    )
    return [str(p) for p in written]


def _check_placement(path: str, source: dict[str, Any], world) -> None:
    """Refuse labels that napari shows somewhere other than their source image."""
    if source["format"] == "tiff":
        return  # TIFF has no world placement to compare beyond the shape
    expected = layer_world_affine(
        world_affine_from_nifti(np.asarray(source["nifti_affine"]), tuple(source["axes"]))
    )
    if not np.allclose(world, expected, atol=1e-3, rtol=1e-4):
        raise ValueError(
            f"{path}: the labels layer is not placed on its source image's grid "
            f"({source.get('path', '')}): its scale/translate/affine differ; refusing to write"
        )
