"""Widget settings remembered between sessions (a JSON file in the user config folder).

``NAPARI_LIMNET_CONFIG_DIR`` overrides the folder (tests point it to a temporary one).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_ENV = "NAPARI_LIMNET_CONFIG_DIR"
DATA_ENV = "NAPARI_LIMNET_DATA_DIR"

# CT display windows: (width, level) in HU -> contrast limits (level - width/2, level + width/2).
WINDOW_PRESETS: dict[str, tuple[float, float] | None] = {
    "(image range)": None,
    "soft tissue": (400.0, 40.0),
    "lung": (1500.0, -600.0),
    "bone": (1800.0, 400.0),
    "brain": (80.0, 40.0),
}

DEVICES = ("auto", "cpu", "cuda", "mps")


def default_threads() -> int:
    """Engine threads that leave the viewer responsive: one core stays free for the event loop."""
    n = os.cpu_count() or 1
    return max(1, min(4, n - 1))


def config_dir() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-limnet", appauthor=False))


def data_dir() -> Path:
    """Where autosaves go when the image's own folder is read-only or unknown."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-limnet", appauthor=False))


@dataclass
class Settings:
    device: str = "auto"
    threads: int = 0  # 0: default_threads()
    weights: str = ""  # empty: the bundled weights
    fusion: bool = True
    propagation: bool = True
    auto_run: bool = True
    window: str = "soft tissue"  # CT images only; others get a robust percentile window
    # autosaves go to the user data folder, keyed to the image; True: beside the image file
    autosave_beside: bool = False

    @property
    def engine_threads(self) -> int:
        return self.threads if self.threads > 0 else default_threads()

    @property
    def torch_device(self) -> str | None:
        return None if self.device == "auto" else self.device

    @classmethod
    def load(cls) -> Settings:
        """Read the saved settings; unknown keys and unreadable files fall back to defaults."""
        path = config_dir() / "settings.json"
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        s = cls()
        for f in fields(cls):
            if f.name in raw and isinstance(raw[f.name], type(getattr(s, f.name))):
                setattr(s, f.name, raw[f.name])
        if s.device not in DEVICES:
            s.device = "auto"
        if s.window not in WINDOW_PRESETS:
            s.window = "(image range)"
        return s

    def save(self) -> None:
        path = config_dir() / "settings.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(asdict(self), indent=2))
        except OSError:
            pass  # settings are a convenience; never fail the user's work for them


def is_ct(image: Any) -> bool:
    """Whether an image layer holds CT (so CT windows in HU apply to it): the DICOM Modality
    the reader recorded, else HU-like values (air at about -1000 in its lowest half-percent)."""
    src = (getattr(image, "metadata", {}) or {}).get("limnet_source") or {}
    modality = str(src.get("modality", "")).upper() if isinstance(src, dict) else ""
    if modality:
        return modality == "CT"
    sample = _sample(image.data)
    if sample.size == 0:
        return False
    lo = float(np.percentile(sample, 0.5))
    return -1100.0 <= lo <= -700.0 and bool(np.allclose(sample, np.round(sample)))


def robust_limits(image: Any) -> tuple[float, float]:
    """A display window for non-CT images: the 0.5 and 99.5 percentiles of the voxels."""
    sample = _sample(image.data)
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def full_limits(image: Any) -> tuple[float, float]:
    """The image's whole value range (the "(image range)" choice)."""
    sample = _sample(image.data, every_voxel=True)
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = float(sample.min()), float(sample.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _sample(data: Any, every_voxel: bool = False) -> np.ndarray:
    """Finite voxels of ``data`` (every voxel of a numpy array when asked; else about 200,000
    spread over the volume, so a lazy volume is read in a few slices)."""
    shape = tuple(data.shape)
    if every_voxel and isinstance(data, np.ndarray):
        flat = data.ravel()
    else:
        step = max(1, int(round((int(np.prod(shape)) / 200_000) ** (1 / len(shape)))))
        flat = np.asarray(data[tuple(slice(None, None, step) for _ in shape)]).ravel()
    flat = flat.astype(np.float64, copy=False)
    return flat[np.isfinite(flat)]


def window_limits(preset: str) -> tuple[float, float] | None:
    wl = WINDOW_PRESETS.get(preset)
    if wl is None:
        return None
    width, level = wl
    return (level - width / 2, level + width / 2)
