"""npe2 reader: NIfTI, DICOM series and 3D TIFF stacks as napari Image (or Labels) layers.

Every layer is placed in one world frame, DICOM patient coordinates (LPS mm) in napari's axis
order (z, y, x): ``scale`` is the voxel spacing, ``translate`` the position, and ``affine`` the
direction cosines (identity for scans aligned with the patient axes). The layer's
``metadata["limnet_source"]`` keeps what the writer needs to save labels on the source grid.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io import LoadedVolume, load_volume, napari_transform, volume_format
from .io.writer import label_description_path, read_label_descriptions

LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[str | Sequence[str]], list[LayerData]]

# File names that ask for a Labels layer when the file holds integers (seg, label(s), mask(s)).
_LABEL_HINT = re.compile(r"seg|label|mask", re.IGNORECASE)


def _layer_name(vol: LoadedVolume) -> str:
    name = vol.path.name
    for suffix in (".nii.gz", ".nii", ".tiff", ".tif", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    if vol.format == "dicom":
        desc = vol.source.get("series_description", "")
        folder = vol.path if vol.path.is_dir() else vol.path.parent
        return f"{folder.name} ({desc})" if desc else folder.name
    return name


def _kwargs(vol: LoadedVolume, name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or _layer_name(vol),
        "metadata": dict(vol.metadata),
        **napari_transform(vol.affine),
    }


def _labels_data(vol: LoadedVolume) -> np.ndarray:
    data = vol.data
    if data.dtype.kind in "iu" or data.dtype == bool:
        return data
    if (
        data.dtype.kind == "f"
        and np.all(np.isfinite(data))
        and np.array_equal(data, np.round(data))
    ):
        return data.astype(np.int32)
    raise ValueError(
        f"{vol.path}: cannot open as labels: values are not integers ({data.dtype}); "
        "a label map must hold integer ids"
    )


def _wants_labels(vol: LoadedVolume) -> bool:
    return bool(vol.source.get("integer_map")) and bool(_LABEL_HINT.search(_layer_name(vol)))


def label_features(names: dict[int, str]) -> dict[str, np.ndarray]:
    """A napari features table naming label values (napari shows the name under the cursor;
    the widget's Take in names its objects from it)."""
    ids = [0, *sorted(names)]
    return {
        "index": np.asarray(ids),
        "name": np.asarray(["background"] + [names[i] for i in ids[1:]]),
    }


def layer_data(vol: LoadedVolume, as_labels: bool | None = None) -> LayerData:
    """A napari layer data tuple for a loaded volume; ``as_labels=None`` follows the name hint.

    A label map with an ITK-SNAP label description beside it (``<stem>_labels.txt``, as the
    plugin's writer writes it) gets its names as a features table."""
    if as_labels is None:
        as_labels = _wants_labels(vol)
    if as_labels:
        kwargs = _kwargs(vol)
        names = read_label_descriptions(label_description_path(vol.path))
        if names:
            kwargs["features"] = label_features(names)
        return (_labels_data(vol), kwargs, "labels")
    kwargs = _kwargs(vol)
    kwargs["colormap"] = "gray"
    return (vol.data, kwargs, "image")


def read_volume(path: str | Path) -> list[LayerData]:
    """Read one volume as an Image layer (a Labels layer for integer files named seg/label/mask)."""
    return [layer_data(load_volume(path))]


def read_labels(path: str | Path) -> list[LayerData]:
    """Read any supported file as a Labels layer on its own grid (integer values required)."""
    return [layer_data(load_volume(path), as_labels=True)]


def _read_paths(paths: str | Sequence[str]) -> list[LayerData]:
    if isinstance(paths, str | Path):
        paths = [paths]
    layers: list[LayerData] = []
    seen_dicom_folders: set[Path] = set()
    for p in paths:
        p = Path(p)
        if volume_format(p) == "dicom" and p.is_file():
            # Several files of one series selected together: read the series once.
            if p.parent in seen_dicom_folders:
                continue
            seen_dicom_folders.add(p.parent)
        layers.extend(read_volume(p))
    return layers


def napari_get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """npe2 reader hook: a reader function for NIfTI/DICOM/TIFF volumes, else None."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths:
        return None
    try:
        if any(volume_format(p) is None for p in paths):
            return None
    except OSError:
        return None
    return _read_paths
