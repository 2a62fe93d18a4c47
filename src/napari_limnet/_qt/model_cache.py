"""The loaded models, one per (weights file, device), shared by every image of the widget.

Qt-free. Models are loaded in worker threads, never on the main thread (importing torch and
reading the weights take seconds).
"""

from __future__ import annotations

import threading
from typing import Any

_MODEL_CACHE: dict[tuple[str, str | None], Any] = {}
_MODEL_LOCK = threading.Lock()


def get_model(weights: str, device: str | None) -> Any:
    """Load (once) the model for a weights file ('' = bundled) on a device (None = best).

    Called from worker threads (never the main thread: importing torch and reading the weights
    take seconds); the lock makes a preload and a round share one load.
    """
    key = (weights, device)
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            from napari_limnet import load_model

            _MODEL_CACHE[key] = load_model(weights or None, device=device)
        return _MODEL_CACHE[key]


def preload_model(weights: str, device: str | None, threads: int) -> None:
    """Load the model in a background thread so the first click does not wait for it.

    A failure is ignored here: the round that needs the model reports it.
    """

    def load() -> None:
        from .worker import lower_priority

        lower_priority()
        try:
            import torch

            torch.set_num_threads(threads)
            get_model(weights, device)
        except Exception:  # noqa: BLE001,S110 - reported by the first round instead
            pass

    threading.Thread(target=load, name="limnet-model-preload", daemon=True).start()
