"""``limnet segment``: headless segmentation of a volume from prompts in a JSON file.

Usage::

    limnet segment IMAGE --prompts PROMPTS.json -o LABELS.nii.gz [--threads N]
                   [--no-fusion] [--no-propagation] [--device cpu|cuda|mps] [--weights W.pt]

IMAGE is a NIfTI file, a DICOM series (a folder or one of its files) or a TIFF stack, read
with ``napari_limnet.io`` into (Z, Y, X) order, axis 0 being the acquisition's slice axis
(for a usual NIfTI file: z = k, y = j, x = i, the third, second and first voxel index).
The labels are written on the source grid (same shape, affine and orientation as IMAGE).

Prompts format (voxel indices of the (Z, Y, X) array; boxes are inclusive corners)::

    {
      "objects": [
        {
          "name": "liver",                 # optional, default "object <n>"
          "label": 1,                      # optional label value, default 1, 2, ... in order
          "rounds": [                      # each round: its prompts, then one engine round
            {"clicks": [{"z": 40, "y": 200, "x": 180, "positive": true}],
             "boxes":  [{"z": 40, "y0": 150, "x0": 120, "y1": 260, "x1": 240}]},
            {"clicks": [{"z": 55, "y": 210, "x": 300, "positive": false}]}
          ]
        }
      ]
    }

``positive`` defaults to true. Objects are segmented in the listed order; a voxel belongs to
at most one object (a later object never takes voxels of an earlier one), exactly as in the
interactive session. ``"rounds"`` may be replaced by ``"clicks"``/``"boxes"`` at the object
level for a single round.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ObjectPrompts", "add_parser", "load_prompts", "segment"]


class ObjectPrompts(dict):
    """One object of the prompts file: ``name``, ``label`` and ``rounds`` (validated)."""


def _num(d: dict, key: str, where: str) -> float:
    if key not in d:
        raise ValueError(f"{where}: missing {key!r}")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{where}: {key!r} must be a number, not {v!r}")
    return v


def load_prompts(path: str | Path) -> list[ObjectPrompts]:
    """Read and validate a prompts JSON file (format in the module docstring)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({exc})") from exc
    objs = doc.get("objects") if isinstance(doc, dict) else None
    if not isinstance(objs, list) or not objs:
        raise ValueError(f'{path}: expected {{"objects": [...]}} with at least one object')
    out: list[ObjectPrompts] = []
    used: set[int] = set()
    for i, o in enumerate(objs):
        where = f"{path}: objects[{i}]"
        if not isinstance(o, dict):
            raise ValueError(f"{where}: must be an object")
        rounds = o.get("rounds")
        if rounds is None:
            rounds = [{"clicks": o.get("clicks", []), "boxes": o.get("boxes", [])}]
        if not isinstance(rounds, list) or not rounds:
            raise ValueError(f"{where}: 'rounds' must be a non-empty list")
        label = o.get("label", i + 1)
        if isinstance(label, bool) or not isinstance(label, int) or label <= 0:
            raise ValueError(f"{where}: 'label' must be a positive integer, not {label!r}")
        if label in used:
            raise ValueError(f"{where}: label {label} is used by two objects")
        used.add(label)
        parsed = []
        for r, rnd in enumerate(rounds):
            w = f"{where}.rounds[{r}]"
            if not isinstance(rnd, dict):
                raise ValueError(f"{w}: must be an object with 'clicks' and/or 'boxes'")
            clicks = []
            for c, ck in enumerate(rnd.get("clicks", [])):
                wc = f"{w}.clicks[{c}]"
                if not isinstance(ck, dict):
                    raise ValueError(f"{wc}: must be an object with z, y, x")
                pos = ck.get("positive", True)
                if not isinstance(pos, bool):
                    raise ValueError(f"{wc}: 'positive' must be true or false")
                clicks.append(((_num(ck, "z", wc), _num(ck, "y", wc), _num(ck, "x", wc)), pos))
            boxes = []
            for b, bx in enumerate(rnd.get("boxes", [])):
                wb = f"{w}.boxes[{b}]"
                if not isinstance(bx, dict):
                    raise ValueError(f"{wb}: must be an object with z, y0, x0, y1, x1")
                boxes.append(
                    (_num(bx, "z", wb), tuple(_num(bx, k, wb) for k in ("y0", "x0", "y1", "x1")))
                )
            if not clicks and not boxes:
                raise ValueError(f"{w}: a round needs at least one click or box")
            parsed.append({"clicks": clicks, "boxes": boxes})
        out.append(
            ObjectPrompts(name=str(o.get("name", f"object {i + 1}")), label=label, rounds=parsed)
        )
    return out


def segment(
    volume: Any,
    spacing: tuple[float, float, float] | None,
    objects: list[ObjectPrompts],
    model: Any = None,
    **session_kwargs: Any,
) -> np.ndarray:
    """Run the prompts' rounds on ``volume``; return the label map (dtype fits the labels)."""
    from ..engine.session import Session

    s = Session(volume, spacing=spacing, model=model, **session_kwargs)
    ids: dict[int, int] = {}
    for i, o in enumerate(objects):
        obj = s.new_object()
        ids[obj] = o["label"]
        for r, rnd in enumerate(o["rounds"]):
            try:
                for zyx, pos in rnd["clicks"]:
                    s.add_click(obj, zyx, positive=pos)
                for z, box in rnd["boxes"]:
                    s.add_box(obj, z, box)
            except ValueError as exc:
                raise ValueError(f"objects[{i}] ({o['name']}) round {r + 1}: {exc}") from exc
            s.run(obj)
    lab = s.labels()
    top = max(ids.values())
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32
    lut = np.zeros(max(ids) + 1, dtype)
    for k, v in ids.items():
        lut[k] = v
    return lut[lab]


def _read(path: Path) -> tuple[np.ndarray, tuple[float, float, float], Any]:
    try:
        from .. import io as limnet_io
    except ImportError:  # the io package is not importable: plain NIfTI through nibabel
        limnet_io = None
    if limnet_io is not None:
        loaded = limnet_io.load_volume(path)
        return loaded.data, tuple(loaded.spacing), loaded
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D NIfTI volume, got shape {data.shape}")
    zooms = img.header.get_zooms()[:3]
    return data.transpose(2, 1, 0), (float(zooms[2]), float(zooms[1]), float(zooms[0])), img


def _write(out: Path, labels: np.ndarray, source: Any, names: dict[int, str]) -> None:
    """Write ``labels`` (Z, Y, X) on the grid of the image they were segmented in."""
    import nibabel as nib

    if not str(out).endswith((".nii", ".nii.gz")):
        raise ValueError(f"{out}: the output must be a NIfTI file (.nii or .nii.gz)")
    meta = getattr(source, "metadata", {}).get("limnet_source") if source is not None else None
    if isinstance(source, nib.Nifti1Image):  # nibabel fallback reader: (Z, Y, X) = (k, j, i)
        arr, affine, header = labels.transpose(2, 1, 0), source.affine, source.header.copy()
    elif meta is not None and meta.get("format") == "nifti":
        # data == source.reshape(shape3).transpose(axes): invert it onto the source grid
        arr = labels.transpose(np.argsort(meta["axes"])).reshape(meta["source_shape"])
        affine, header = meta["nifti_affine"], meta["nifti_header"].copy()
    else:
        from ..io import write_label_file  # DICOM / TIFF sources: the io package's writer

        write_label_file(out, labels, source, names)
        return
    header.set_data_dtype(labels.dtype)
    header.set_slope_inter(1, 0)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(arr), affine, header), str(out))


def _main(args: argparse.Namespace) -> int:
    image, prompts, out = Path(args.image), Path(args.prompts), Path(args.output)
    if not image.exists():
        raise FileNotFoundError(f"{image}: no such file or folder")
    objects = load_prompts(prompts)
    data, spacing, source = _read(image)
    model = None
    if args.device or args.weights:
        from ..engine.model import load_model

        model = load_model(args.weights, device=args.device)
    t0 = time.perf_counter()
    labels = segment(
        data,
        spacing,
        objects,
        model=model,
        threads=args.threads,
        fusion=not args.no_fusion,
        propagation=not args.no_propagation,
    )
    secs = time.perf_counter() - t0
    _write(out, labels, source, {o["label"]: o["name"] for o in objects})
    for o in objects:
        n = int((labels == o["label"]).sum())
        print(f"{o['name']} (label {o['label']}): {n} voxels", file=sys.stderr)
    print(f"wrote {out} in {secs:.1f} s", file=sys.stderr)
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``limnet segment``."""
    p = subparsers.add_parser(
        "segment",
        help="segment a volume from clicks/boxes in a JSON file (headless)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("image", help="NIfTI file, DICOM folder/file or TIFF stack")
    p.add_argument("--prompts", required=True, help="prompts JSON (see the README)")
    p.add_argument("-o", "--output", required=True, help="labels file to write (.nii.gz)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: best)")
    p.add_argument("--weights", default=None, help="weights file (default: bundled)")
    p.add_argument("--no-fusion", action="store_true", help="switch multi-round fusion off")
    p.add_argument("--no-propagation", action="store_true", help="2D only: no propagation")
    p.set_defaults(func=_main)
    return p
