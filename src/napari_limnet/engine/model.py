"""The bundled LIM-Net weights: loading (with a checksum) and saving.

A weights file is a ``torch.save`` of ``{"format", "state_dict", "meta"}`` loaded with
``weights_only=True``; beside it, ``<name>.sha256`` holds its SHA-256 so a truncated or
altered file is caught before torch reads it.
"""

from __future__ import annotations

import hashlib
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .fusion import SCORER_OFF
from .networks import InteractionEnsemble, LimNet, widths_of

FORMAT = "napari-limnet-weights/1"
DEFAULT_WEIGHTS = "limnet_default.pt"


class LimNetModel:
    """The three networks (interaction, memory, fusion scorer), in eval mode on one device."""

    def __init__(self, net: LimNet, device: torch.device, meta: dict[str, Any] | None = None):
        self.net = net.to(device).eval()
        if device.type == "cpu":  # oneDNN's convolutions are faster in NHWC (about 10 %)
            self.net.interaction.to(memory_format=torch.channels_last)
            # propagation too: 28.5 -> 23.5 ms a slice on 2 threads (``docs/decisions.md``,
            # "Speed")
            self.net.memory.to(memory_format=torch.channels_last)
        self.device = device
        self.meta = meta or {}
        # the fusion scorer's threshold (``engine.fusion.FusionRule.of``)
        self.fusion_threshold = float(self.meta.get("fusion_threshold", SCORER_OFF))

    def __repr__(self) -> str:
        return f"LimNetModel(device={self.device}, weights={self.meta.get('name', '?')})"


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The requested device, else CUDA, then Apple MPS, then the CPU."""
    if device is not None:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"unknown device {device!r}; use cpu, cuda or mps") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but this machine has no CUDA GPU")
        mps = getattr(torch.backends, "mps", None)
        if dev.type == "mps" and not (mps is not None and mps.is_available()):
            raise ValueError(f"device {device!r} asked for, but Apple MPS is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_weights_path() -> Path:
    return Path(str(resources.files("napari_limnet").joinpath("weights", DEFAULT_WEIGHTS)))


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def half_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict on the CPU with its floating-point tensors as float16 (half the file;
    ``load_state_dict`` casts back to the parameters' float32)."""
    return {
        k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
        for k, v in state.items()
    }


def save_weights(net: LimNet, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write ``net``'s weights to ``path`` and its checksum to ``<path>.sha256``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = half_state(net.state_dict())
    meta = dict(meta or {})
    inter = net.interaction
    # the architecture load_model must build (absent: 0, as in older files); an ensemble's
    # members by their contexts
    context = inter.contexts if isinstance(inter, InteractionEnsemble) else inter.context_slices
    if context:
        meta["interaction_context"] = context
    else:
        meta.pop("interaction_context", None)
    torch.save({"format": FORMAT, "state_dict": state, "meta": meta}, path)
    Path(str(path) + ".sha256").write_text(sha256(path) + "\n")
    return path


def load_model(path: str | Path | None = None, device: str | None = None) -> LimNetModel:
    """Load weights (the bundled default when ``path`` is None) onto ``device``.

    ``device`` None picks CUDA, then MPS, then the CPU. Raises ValueError for a file that
    is not LIM-Net weights or fails its checksum.
    """
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    dev = pick_device(device)  # an unusable device fails before the file is read
    check = Path(str(path) + ".sha256")
    if not check.is_file() and path != default_weights_path():
        warnings.warn(
            f"{path}: no checksum file {check.name} beside it; the weights are not checked",
            stacklevel=2,
        )
    if check.is_file():
        expected = check.read_text().split()[0] if check.read_text().strip() else ""
        if sha256(path) != expected:
            raise ValueError(
                f"weights file {path} does not match its checksum ({check.name}): "
                "it is corrupt or was changed; reinstall or retrain it"
            )
    elif path == default_weights_path():
        raise ValueError(f"the bundled weights have no checksum file {check}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or truncated files
        raise ValueError(f"{path} is not a readable LIM-Net weights file: {exc}") from exc
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ValueError(f"{path} is not a LIM-Net weights file (format {FORMAT!r} expected)")
    meta = saved.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: its metadata is a {type(meta).__name__}, not a mapping")
    meta = dict(meta)
    if not isinstance(saved.get("state_dict"), dict) or not all(
        torch.is_tensor(v) for v in saved["state_dict"].values()
    ):
        raise ValueError(f"{path}: its state_dict is not a mapping of tensors")
    bad = [
        k
        for k, v in saved["state_dict"].items()
        if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise ValueError(
            f"{path}: {len(bad)} weight tensor(s) hold NaN or infinite values (first: {bad[0]}); "
            "the file is broken (a diverged training?)"
        )
    for key in ("fusion_threshold",):
        if key in meta:
            try:
                meta[key] = float(meta[key])
            except (TypeError, ValueError):
                raise ValueError(f"{path}: metadata {key} {meta[key]!r} is not a number") from None
            if not np.isfinite(meta[key]):
                raise ValueError(f"{path}: metadata {key} is not finite")
    try:
        context = meta.get("interaction_context", 0)
        context = [int(c) for c in context] if isinstance(context, list) else int(context)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path} has a bad interaction_context in its meta: {exc}") from exc
    try:  # the interaction network's widths, read from its weights
        sd = saved["state_dict"]
        if isinstance(context, list):
            widths: Any = [widths_of(sd, f"interaction.members.{k}.") for k in range(len(context))]
        else:
            widths = widths_of(sd, "interaction.")
        net = LimNet(interaction_context=context, interaction_widths=widths)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} does not fit this version's networks: {exc}") from exc
    try:
        state = {
            k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
            for k, v in saved["state_dict"].items()
        }
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not fit this version's networks: {exc}") from exc
    meta.setdefault("name", path.name)
    return LimNetModel(net, dev, meta)
