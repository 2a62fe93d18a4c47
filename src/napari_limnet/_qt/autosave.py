"""Never lose work: after every round the labels, prompts and object names are written to disk.

By default the file goes to the user's data folder (``<data dir>/autosave``;
``NAPARI_LIMNET_DATA_DIR`` overrides it) as ``<image stem>-<key>.limnet-autosave.npz``, the key
made from the image's path and shape; data folders are not written to. With the setting
*autosave beside the image* it is ``<image name>.limnet-autosave.npz`` next to the image file
when that folder is writable. Writing runs in a background thread on a snapshot, so the viewer
never waits.
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


def save_path(image: Any, shape: tuple[int, ...], beside: bool = False) -> Path:
    """The user's data folder; with ``beside``, next to the image when that folder is
    writable."""
    p = beside_path(image) if beside else None
    if (
        p is not None
        and p.parent.is_dir()
        and os.access(p.parent, os.W_OK)
        and not _inside_package(p.parent)
    ):
        return p
    return fallback_path(image, shape)


def find_autosave(
    image: Any, shape: tuple[int, ...], problems: list[str] | None = None
) -> Path | None:
    """The newest valid autosave for this image (same shape), or None.

    Both places are looked at (beside the image, the user data folder): when a save fell back
    to the data folder, the older file beside the image must not win. A file that fails
    :func:`load` is skipped, its reason appended to ``problems``.
    """
    found = []
    for p in {beside_path(image), fallback_path(image, shape)}:
        if p is not None and p.is_file():
            try:
                load(p, shape)
            except ValueError as exc:
                if problems is not None:
                    problems.append(str(exc))
                continue
            found.append((p.stat().st_mtime, str(p), p))
    return max(found)[2] if found else None


def load(path: Path, shape: tuple[int, ...] | None = None) -> tuple[np.ndarray, dict]:
    """Labels and metadata of an autosave, checked whole before anyone uses them.

    Raises ValueError naming the file and the problem: unreadable, labels not an integer
    array (of ``shape`` when given), or metadata whose objects and prompts are malformed.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            labels = np.asarray(z["labels"])
            meta = json.loads(str(z["meta"]))
    except Exception as exc:  # noqa: BLE001 - zip, npz, JSON errors: one message
        raise ValueError(f"{path}: not a readable autosave ({exc})") from exc
    problem = _problem(labels, meta, shape)
    if problem:
        raise ValueError(f"{path}: damaged autosave: {problem}")
    return labels, meta


def _problem(labels: np.ndarray, meta: Any, shape: tuple[int, ...] | None) -> str | None:
    if labels.dtype.kind not in "iu" or labels.ndim not in (2, 3):
        return f"labels are {labels.dtype} of shape {labels.shape}, not an integer image"
    if not isinstance(meta, dict):
        return "metadata is not a mapping"
    saved = meta.get("shape")
    if not isinstance(saved, list) or not all(isinstance(v, int) for v in saved):
        return "metadata has no image shape"
    if shape is not None and tuple(saved) != tuple(shape):
        return f"it is for an image of shape {tuple(saved)}, not {tuple(shape)}"
    if int(np.prod(labels.shape)) != int(np.prod(saved)):
        return f"labels of shape {labels.shape} do not fit the image shape {tuple(saved)}"
    objects = meta.get("objects", [])
    if not isinstance(objects, list):
        return "metadata 'objects' is not a list"
    for o in objects:
        if not isinstance(o, dict) or isinstance(o.get("id"), bool):
            return "an object entry is not a mapping with an id"
        if not isinstance(o.get("id"), int) or not 0 < o["id"] < 2**31:
            return f"object id {o.get('id')!r} is not a positive integer"
        if not isinstance(o.get("name", ""), str | None):
            return f"object {o['id']} has a name that is not text"
        prompts = o.get("prompts", [])
        if not isinstance(prompts, list) or not all(_prompt_ok(p) for p in prompts):
            return f"object {o['id']} has malformed prompts"
    return None


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)


def _points(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(q, list) and len(q) == 2 and all(_number(c) for c in q) for q in v
    )


def _prompt_ok(p: Any) -> bool:
    """One prompt in its JSON form (``layers`` module docstring)."""
    if not isinstance(p, list) or not p:
        return False
    kind = p[0]
    if kind == "click":
        return len(p) == 5 and all(_number(v) for v in p[1:4]) and isinstance(p[4], bool)
    if kind == "box":
        return len(p) == 6 and all(_number(v) for v in p[1:6])
    if kind == "scribble":
        return len(p) == 4 and _number(p[1]) and isinstance(p[2], bool) and _points(p[3])
    if kind == "lasso":
        return len(p) == 3 and _number(p[1]) and _points(p[2])
    return False


def _clean_stale(path: Path) -> None:
    """Remove temporary files a killed save of this autosave left behind (dead processes)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        parts = tmp.name[len(path.name) + 2 :].split(".")
        try:
            pid = int(parts[0])
        except (ValueError, IndexError):
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except OSError:  # alive, or not ours to signal: leave it
            continue


def _write(path: Path, labels: np.ndarray, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, labels=labels, meta=np.array(json.dumps(meta)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a full disk leaves no partial file


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
                except (OSError, ValueError) as e:
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
