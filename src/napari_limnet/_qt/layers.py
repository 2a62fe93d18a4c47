"""Layer <-> prompt conversion, and the prompt/result layers that sit on an image's grid.

Prompts are plain tuples in the session's voxel indices:

- click:    ``("click", z, y, x, positive[, axis])``
- box:      ``("box", z, y0, x0, y1, x1[, axis])`` (inclusive corners)
- scribble: ``("scribble", z, positive, ((y, x), ...)[, axis])`` (a path of the Shapes layer)
- lasso:    ``("lasso", z, ((y, x), ...)[, axis])`` (a polygon of the Shapes layer: a rough
  outline)

``axis`` (left out when 0) is the volume axis normal to the slice the prompt was placed on, as
in the engine's prompt verbs: for a box, scribble or lasso across axis 1 or 2, ``z`` is the
index along that axis and "y", "x" the slice's own two axes in volume order; a click is always
its (z, y, x) voxel. On the layers each prompt carries its axis as the ``axis`` feature: a new
point or shape gets -1 (the default), resolved to the axis of the view it was placed in.

On the Shapes layer a rectangle (or ellipse) is a box, a path or line a scribble (negative when
its ``positive`` feature is False: drawn while *Negative click* is on), a polygon a lasso.

A 2D image is handled as a volume of one slice (z is always 0 and the layers stay 2D).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from ..engine.prompts import rest_axes

Prompt = tuple

CLICK_COLORS = {True: "lime", False: "red"}  # face colour by the ``positive`` feature


def layer_label_names(layer: Any) -> dict[int, str]:
    """Names of a Labels layer's values: the plugin's ``limnet_objects`` metadata, else a
    features table (napari's: an ``index`` column of label values, or one row per value from
    0, and a ``name`` column, as the reader makes from an ITK-SNAP description)."""
    names: dict[int, str] = {}
    for o in (getattr(layer, "metadata", {}) or {}).get("limnet_objects", []):
        if isinstance(o, dict) and "id" in o and o.get("name"):
            names[int(o["id"])] = str(o["name"])
    if names:
        return names
    feats = getattr(layer, "features", None)
    if feats is None or "name" not in getattr(feats, "columns", []):
        return names
    index = feats["index"] if "index" in feats.columns else range(len(feats))
    for value, name in zip(index, feats["name"], strict=False):
        try:
            value = int(value)
        except (TypeError, ValueError):
            continue
        if value > 0 and isinstance(name, str) and name:
            names[value] = name
    return names


def check_image(layer: Any) -> str | None:
    """A user-facing reason why ``layer`` cannot be segmented, or None when it can."""
    from napari.layers import Image

    if layer is None:
        return "No image: open a CT or MR volume (or File > Open Sample > napari-limnet) first."
    if not isinstance(layer, Image):
        return f"'{layer.name}' is not an image layer."
    if layer.rgb:
        return f"'{layer.name}' is an RGB image; LIM-Net segments grey-value CT/MR volumes."
    if layer.ndim not in (2, 3):
        return (
            f"'{layer.name}' has {layer.ndim} dimensions; LIM-Net needs one 3D volume (Z, Y, X)"
            " or one 2D slice. Split time series or channels into separate layers first."
        )
    if 0 in layer.data.shape:
        return f"'{layer.name}' is empty."
    return None


def grid_kwargs(image: Any) -> dict[str, Any]:
    """Keyword arguments that put a new layer on ``image``'s grid (and carry its metadata)."""
    kw: dict[str, Any] = {
        "scale": np.asarray(image.scale).copy(),
        "translate": np.asarray(image.translate).copy(),
        "rotate": np.asarray(image.rotate).copy(),
        "shear": np.asarray(image.shear).copy(),
        "affine": np.asarray(image.affine.affine_matrix).copy(),
        "metadata": dict(image.metadata),
    }
    units = getattr(image, "units", None)
    if units is not None:
        kw["units"] = units
    return kw


def spacing_of(image: Any) -> tuple[float, float, float]:
    """Voxel spacing (sz, sy, sx) of the image (mm when the reader gave mm); 2D -> sz = 1."""
    s = [abs(float(v)) or 1.0 for v in image.scale]
    if len(s) == 2:
        s = [1.0, *s]
    return (s[0], s[1], s[2])


def view_axis(viewer: Any) -> int | None:
    """The volume axis normal to the slices a 2D view shows (0 for the default order), or
    None in the 3D view."""
    dims = viewer.dims
    if dims.ndisplay != 2 or dims.ndim < 3:
        return None
    shown = {int(d) - (dims.ndim - 3) for d in dims.displayed}
    rest = [a for a in range(3) if a not in shown]
    return rest[0] if len(rest) == 1 else None


def prompt_axis(p: Prompt) -> int:
    """The axis of a prompt tuple (see the module docstring)."""
    n = {"click": 5, "box": 6, "scribble": 4, "lasso": 3}[p[0]]
    return int(p[n]) if len(p) > n else 0


def _with_axis(p: Prompt, axis: int) -> Prompt:
    return p + (int(axis),) if axis else p


def _axes_feature(layer: Any, n: int) -> np.ndarray:
    feats = getattr(layer, "features", None)
    if feats is None or "axis" not in feats:
        return np.zeros(n, int)
    return np.asarray(feats["axis"], dtype=int)


def resolve_axes(layer: Any, axis: int) -> bool:
    """Give prompts just placed (``axis`` feature -1) the view's ``axis``; True if any had
    -1 (the caller blocks the layer's events)."""
    axes = _axes_feature(layer, len(layer.data))
    if not (axes < 0).any():
        return False
    defaults = dict(layer.feature_defaults) if hasattr(layer, "feature_defaults") else {}
    feats = layer.features.copy()
    feats["axis"] = np.where(axes < 0, axis, axes)
    layer.features = feats
    if defaults:
        layer.feature_defaults = defaults
    return True


def _key_click(z: int, y: int, x: int, positive: bool, axis: int = 0) -> Prompt:
    return _with_axis(("click", int(z), int(y), int(x), bool(positive)), axis)


def points_to_prompts(points: Any, shape: tuple[int, int, int]) -> tuple[list[Prompt], int]:
    """Clicks of a Points layer in the layer's order; returns (prompts, number dropped outside)."""
    data = np.asarray(points.data, dtype=float)
    if len(data) == 0:
        return [], 0
    pos = (
        np.asarray(points.features["positive"], dtype=bool)
        if "positive" in points.features
        else np.ones(len(data), bool)
    )
    axes = np.maximum(_axes_feature(points, len(data)), 0)
    out, dropped = [], 0
    for row, p, a in zip(data, pos, axes, strict=False):
        idx = np.round(row).astype(int)
        z, y, x = (0, *idx[-2:]) if len(idx) == 2 else idx[-3:]
        if not (0 <= z < shape[0] and 0 <= y < shape[1] and 0 <= x < shape[2]):
            dropped += 1
            continue
        out.append(_key_click(z, y, x, p, 0 if len(idx) == 2 else a))
    return out, dropped


def shapes_to_prompts(shapes: Any, shape: tuple[int, int, int]) -> tuple[list[Prompt], list[str]]:
    """Boxes, scribbles and lassos of a Shapes layer (see the module docstring); (prompts,
    problems)."""
    out, problems = [], []
    types = list(getattr(shapes, "shape_type", []))
    feats = getattr(shapes, "features", None)
    signs = (
        [bool(v) for v in feats["positive"]]
        if feats is not None and "positive" in feats
        else [True] * len(shapes.data)
    )
    axes = np.maximum(_axes_feature(shapes, len(shapes.data)), 0)
    for i, verts in enumerate(shapes.data):
        kind = types[i] if i < len(types) else "rectangle"
        v = np.asarray(verts, dtype=float)
        axis = 0 if v.shape[1] == 2 else int(axes[i])
        if v.shape[1] == 2:
            zs = np.zeros(1)
            yx = v
        else:
            v = v[:, -3:]
            zs = np.round(v[:, axis])
            yx = v[:, list(rest_axes(axis))]
        nz, ny, nx = (shape[axis], *(shape[a] for a in rest_axes(axis)))
        what = {"path": "scribble", "line": "scribble", "polygon": "lasso"}.get(kind, "box")
        if np.ptp(zs) > 0:
            problems.append(f"a {what} must lie on one slice")
            continue
        z = int(zs[0])
        inside = (yx >= 0).all(1) & (yx[:, 0] <= ny - 1) & (yx[:, 1] <= nx - 1)
        if what == "scribble":
            if not 0 <= z < nz or not inside.all():
                problems.append("a scribble leaves the image")
                continue
            pts = tuple((round(float(y), 2), round(float(x), 2)) for y, x in yx)
            sign = signs[i] if i < len(signs) else True
            out.append(_with_axis(("scribble", z, sign, pts), axis))
            continue
        if what == "lasso":
            clipped = np.clip(yx, 0, [ny - 1, nx - 1])
            if not 0 <= z < nz or len(yx) < 3 or np.ptp(clipped, 0).min() == 0:
                problems.append("a lasso must enclose part of the image")
                continue
            pts = tuple((round(float(y), 2), round(float(x), 2)) for y, x in clipped)
            out.append(_with_axis(("lasso", z, pts), axis))
            continue
        y0, x0 = np.floor(yx.min(0)).astype(int)
        y1, x1 = np.ceil(yx.max(0)).astype(int)
        y0, x0 = max(y0, 0), max(x0, 0)
        y1, x1 = min(y1, ny - 1), min(x1, nx - 1)
        if not 0 <= z < nz or y1 < y0 or x1 < x0:
            problems.append("a box lies outside the image")
            continue
        if y1 == y0 or x1 == x0:
            problems.append("a box has no area")
            continue
        out.append(_with_axis(("box", z, int(y0), int(x0), int(y1), int(x1)), axis))
    return out, problems


def prompt_from_json(p: Any) -> Prompt:
    """A prompt tuple from its JSON form (lists for tuples, as the autosave writes it)."""

    def tup(v: Any) -> Any:
        return tuple(tup(x) for x in v) if isinstance(v, list | tuple) else v

    return tup(p)


def add_to_session(session: Any, obj: int, p: Prompt) -> None:
    """Add the prompt tuple ``p`` to ``obj`` of the engine session (ValueError if refused)."""
    kind = p[0]
    if kind not in ("click", "box", "scribble", "lasso"):
        raise ValueError(f"unknown prompt kind {kind!r}")
    axis = prompt_axis(p)

    def voxels(z: float, pts: Any) -> list[tuple[float, float, float]]:
        return [_insert(z, y, x, axis) for y, x in pts]

    if kind == "click":
        session.add_click(obj, p[1:4], positive=bool(p[4]), axis=axis)
    elif kind == "box":
        session.add_box(obj, p[1], p[2:6], axis=axis)
    elif kind == "scribble":
        session.add_scribble(obj, voxels(p[1], p[3]), positive=bool(p[2]), axis=axis)
    else:
        session.add_lasso(obj, voxels(p[1], p[2]), axis=axis)


def _insert(z: float, y: float, x: float, axis: int) -> tuple[float, float, float]:
    """The voxel at index ``z`` of ``axis`` and (y, x) on that slice's two axes."""
    v = [y, x]
    v.insert(axis, z)
    return (v[0], v[1], v[2])


def set_points(points: Any, prompts: list[Prompt], two_d: bool) -> None:
    """Show the clicks among ``prompts`` in ``points`` (caller blocks the layer's events)."""
    clicks = [p for p in prompts if p[0] == "click"]
    cols = slice(2, 4) if two_d else slice(1, 4)
    ndim = 2 if two_d else 3
    data = np.array([p[cols] for p in clicks], dtype=float).reshape(-1, ndim)
    positive = np.array([p[4] for p in clicks], dtype=bool)
    axes = np.array([prompt_axis(p) for p in clicks], dtype=int)
    points.selected_data = set()
    points.data = data
    points.features = {"positive": positive, "axis": axes}
    color_points(points)


def color_points(points: Any) -> None:
    """Recolour clicks from their ``positive`` feature (green positive, red negative)."""
    if len(points.data):
        points.refresh_colors(update_color_mapping=False)


def set_shapes(shapes: Any, prompts: list[Prompt], two_d: bool) -> None:
    """Show the boxes, scribbles and lassos among ``prompts`` (caller blocks the layer's
    events)."""
    data, types, signs, axes = [], [], [], []
    for p in prompts:
        if p[0] == "box":
            z, y0, x0, y1, x1 = p[1:6]
            yx = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)
            types.append("rectangle")
            signs.append(True)
        elif p[0] == "scribble":
            z, yx = p[1], np.array(p[3], dtype=float).reshape(-1, 2)
            types.append("path")
            signs.append(bool(p[2]))
        elif p[0] == "lasso":
            z, yx = p[1], np.array(p[2], dtype=float).reshape(-1, 2)
            types.append("polygon")
            signs.append(True)
        else:
            continue
        axis = prompt_axis(p)
        axes.append(axis)
        data.append(yx if two_d else np.insert(yx, axis, float(z), axis=1))
    defaults = dict(shapes.feature_defaults) if hasattr(shapes, "feature_defaults") else {}
    shapes.selected_data = set()
    shapes.data = []
    if data:
        shapes.add(data, shape_type=types)
        if "positive" in getattr(shapes, "features", {}):
            shapes.features = {"positive": np.array(signs, bool), "axis": np.array(axes, int)}
    if defaults:
        shapes.feature_defaults = defaults


def diff_prompts(old: list[Prompt], new: list[Prompt]) -> tuple[list[int], list[Prompt]]:
    """What turns ``old`` into ``new``: indices of ``old`` to remove (descending), prompts to add.

    Moved prompts count as removed + added; order of the unchanged ones is kept.
    """
    want = Counter(new)
    removed = []
    for i, p in enumerate(old):
        if want[p] > 0:
            want[p] -= 1
        else:
            removed.append(i)
    gone = set(removed)
    have = Counter(p for i, p in enumerate(old) if i not in gone)
    added = []
    for p in new:
        if have[p] > 0:
            have[p] -= 1
        else:
            added.append(p)
    return sorted(removed, reverse=True), added


def from_session_prompt(p: Any) -> Prompt:
    """Turn a prompt as the engine lists it (``Session.prompts``) into our tuple form."""
    if isinstance(p, tuple) and p and p[0] in ("click", "box", "scribble", "lasso"):
        return p
    kind = getattr(p, "kind", "click")
    axis = int(getattr(p, "axis", 0))
    if kind == "box":
        y0, x0, y1, x1 = (int(round(float(v))) for v in p.coords)
        return _with_axis(("box", int(p.z), y0, x0, y1, x1), axis)
    if kind in ("scribble", "lasso"):
        pts = tuple(
            (round(float(y), 2), round(float(x), 2))
            for y, x in zip(p.coords[0::2], p.coords[1::2], strict=True)
        )
        if kind == "scribble":
            return _with_axis(("scribble", int(p.z), bool(p.positive), pts), axis)
        return _with_axis(("lasso", int(p.z), pts), axis)
    y, x = (int(round(float(v))) for v in p.coords)
    z, y, x = _insert(int(p.z), y, x, axis)
    return _key_click(int(z), int(y), int(x), bool(p.positive), axis)


WRITER = "napari-limnet.write_labels"


def prefer_plugin_writer() -> bool:
    """Put this plugin's labels writer first among napari's writers, so that File > Save
    Selected Layers offers it as the default file type of a labels layer: a ``.nii.gz``,
    ``.nii`` or ``.tif`` name then gets the source grid, spacing and names. napari lists its
    builtin writer first otherwise, which cannot write NIfTI ("did not return any written
    paths"). Reorders npe2's writer index (private: returns False, changing nothing, if npe2
    ever lays it out differently)."""
    try:
        from npe2 import PluginManager

        writers = PluginManager.instance()._contrib._writers
        ours = [t for t in writers if t[3].command == WRITER]
    except (ImportError, AttributeError, IndexError, TypeError):
        return False
    if not ours:
        return False
    writers[:] = ours + [t for t in writers if t[3].command != WRITER]
    return True
