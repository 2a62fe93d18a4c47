"""Loading the bundled LIM-Net weights.

PLACEHOLDER: being replaced by the real networks and weights; the signature is final.
"""

from __future__ import annotations

from pathlib import Path


class LimNetModel:
    """The three networks (interaction, memory, fusion scorer) on one device."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device


def load_model(path: str | Path | None = None, device: str | None = None) -> LimNetModel:
    """Load weights (bundled default when ``path`` is None) onto ``device`` (cuda > mps > cpu)."""
    return LimNetModel(device or "cpu")
