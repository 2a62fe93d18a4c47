"""Never lose work: after every round the labels, prompts and object names are written to disk.

The file ``<image name>.limnet-autosave.npz`` sits next to the image file when its folder is
writable, else in the user's data folder (``<data dir>/autosave``; ``NAPARI_LIMNET_DATA_DIR``
overrides it). Writing runs in a background thread on a snapshot, so the viewer never waits.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .settings import data_dir

SUFFIX = ".limnet-autosave.npz"
_PATH_KEYS = ("path", "source_path", "file", "filename", "limnet_path")


def image_path(image: Any) -> Path | None:
    """The file or folder the image was read from, if napari or the reader recorded it."""
    src = getattr(getattr(image, "source", None), "path", None)
    if src:
        return Path(src)
    md = getattr(image, "metadata", {}) or {}
    src = md.get("limnet_source")
    if isinstance(src, dict) and src.get("path"):
        return Path(src["path"])
    for key in _PATH_KEYS:
        v = md.get(key)
        if isinstance(v, str | os.PathLike) and str(v):
            return Path(v)
    return None


def _stem(p: Path) -> str:
    name = p.name
    for ext in (".nii.gz", ".nii", ".tiff", ".tif", ".dcm", ".npy", ".npz", ".mha", ".nrrd"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "image"


def fallback_path(image: Any, shape: tuple[int, ...]) -> Path:
    src = image_path(image)
    key = f"{src.resolve() if src else image.name}|{tuple(shape)}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    stem = _stem(src) if src else image.name
    return data_dir() / "autosave" / f"{_safe(stem)}-{digest}{SUFFIX}"


def beside_path(image: Any) -> Path | None:
    src = image_path(image)
    if src is None:
        return None
    return src.parent / f"{_stem(src)}{SUFFIX}"


def _inside_package(folder: Path) -> bool:
    """The plugin's own folders (sample data) are never written to."""
    pkg = Path(__file__).resolve().parents[1]
    try:
        folder.resolve().relative_to(pkg)
    except ValueError:
        return False
    return True


def save_path(image: Any, shape: tuple[int, ...]) -> Path:
    """Next to the image when that folder is writable, else in the user's data folder."""
    p = beside_path(image)
    if (
        p is not None
        and p.parent.is_dir()
        and os.access(p.parent, os.W_OK)
        and not _inside_package(p.parent)
    ):
        return p
    return fallback_path(image, shape)


def find_autosave(image: Any, shape: tuple[int, ...]) -> Path | None:
    """An existing autosave for this image (same shape), or None."""
    for p in (save_path(image, shape), beside_path(image), fallback_path(image, shape)):
        if p is not None and p.is_file():
            try:
                _, meta = load(p)
            except Exception:  # noqa: BLE001 - a broken autosave is simply not offered
                continue
            if tuple(meta.get("shape", ())) == tuple(shape):
                return p
    return None


def load(path: Path) -> tuple[np.ndarray, dict]:
    with np.load(path, allow_pickle=False) as z:
        labels = np.asarray(z["labels"])
        meta = json.loads(str(z["meta"]))
    return labels, meta


def _write(path: Path, labels: np.ndarray, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, labels=labels, meta=np.array(json.dumps(meta)))
    os.replace(tmp, path)


class AutoSaver:
    """Writes autosaves one at a time in a background thread; the newest request wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = False
        self._pending: tuple[list[Path], np.ndarray, dict] | None = None
        self.last_path: Path | None = None
        self.last_error: str | None = None

    def save(self, paths: list[Path], labels: np.ndarray, meta: dict) -> None:
        """Queue a write of a snapshot (``labels`` must not change afterwards: pass a copy).

        ``paths`` are tried in order (the image's folder may turn out to be read-only).
        """
        meta = {**meta, "saved": time.strftime("%Y-%m-%d %H:%M:%S")}
        with self._lock:
            self._pending = (list(paths), labels, meta)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._lock:
                job, self._pending = self._pending, None
                if job is None:
                    self._running = False
                    return
            paths, labels, meta = job
            for path in paths:
                try:
                    _write(path, labels, meta)
                except OSError as e:
                    self.last_error = f"{path}: {e}"
                    continue
                self.last_path, self.last_error = path, None
                break

    def wait(self, timeout: float = 30.0) -> None:
        """Block until queued writes are on disk (tests, closing the widget)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if not self._running:
                    return
            time.sleep(0.01)
