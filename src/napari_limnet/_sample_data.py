"""Sample data for File > Open Sample: a CT and an MR volume, each with its label map.

Both are read with the plugin's own reader, so they land in the same world frame as user files.
"""

from __future__ import annotations

import json
from pathlib import Path

from ._reader import LayerData, label_features, read_labels, read_volume

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"


def _with_names(layer: LayerData, names: dict[int, str]) -> LayerData:
    """Attach label names as a features table, so napari shows them under the cursor."""
    data, kwargs, kind = layer
    return (data, {**kwargs, "features": label_features(names)}, kind)


def sample_ct() -> list[LayerData]:
    """Abdomen CT (TotalSegmentator, Apache-2.0) and its TotalSegmentator label map."""
    names_file = SAMPLE_DIR / "ct_abdomen_label_names.json"
    names = {int(k): v for k, v in json.loads(names_file.read_text(encoding="utf-8")).items()}
    image = read_volume(SAMPLE_DIR / "ct_abdomen.nii.gz")
    labels = [
        _with_names(layer, names) for layer in read_labels(SAMPLE_DIR / "ct_abdomen_label.nii.gz")
    ]
    return image + labels


def sample_mr() -> list[LayerData]:
    """T1 cervical spinal cord MR (sct_testing_data, MIT) and its manual cord label."""
    image = read_volume(SAMPLE_DIR / "mr_spinalcord_t1.nii.gz")
    labels = read_labels(SAMPLE_DIR / "mr_spinalcord_t1_cord_label.nii.gz")
    return image + [_with_names(layer, {1: "spinal cord"}) for layer in labels]
