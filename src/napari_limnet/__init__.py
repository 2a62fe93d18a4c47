"""napari-limnet: interactive 3D segmentation of CT and MR volumes (LIM-Net).

The public API (see DESIGN.md) is imported lazily so that napari starts fast:
``load_model``, ``Session`` and ``RoundEvent`` pull in torch only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RoundEvent", "Session", "load_model", "__version__"]

if TYPE_CHECKING:
    from .engine.model import load_model
    from .engine.session import RoundEvent, Session


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from .engine.model import load_model

        return load_model
    if name in ("Session", "RoundEvent"):
        from .engine import session

        return getattr(session, name)
    raise AttributeError(f"module 'napari_limnet' has no attribute {name!r}")
