"""Widget settings remembered between sessions (a JSON file in the user config folder).

``NAPARI_LIMNET_CONFIG_DIR`` overrides the folder (tests point it to a temporary one).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

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
    window: str = "(image range)"

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


def window_limits(preset: str) -> tuple[float, float] | None:
    wl = WINDOW_PRESETS.get(preset)
    if wl is None:
        return None
    width, level = wl
    return (level - width / 2, level + width / 2)
