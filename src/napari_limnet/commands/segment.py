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

``positive`` defaults to true. A click or box may carry ``"axis": 1`` or ``2``: it was placed
on a slice across that volume axis (a coronal or sagittal view; see ``Session.add_click``); a
box's ``z`` is then its index along that axis and ``y0, x0, y1, x1`` its corners in the slice's
own two axes, in volume order. Objects are segmented in the listed order; a voxel belongs to
at most one object (a later object never takes voxels of an earlier one), exactly as in the
interactive session. ``"rounds"`` may be replaced by ``"clicks"``/``"boxes"`` at the object
level for a single round.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ObjectPrompts", "add_parser", "load_prompts", "segment"]


_PALETTE = (  # label colours (0-1 RGB) for the label description file
    (0.90, 0.30, 0.24),
    (0.18, 0.55, 0.85),
    (0.30, 0.75, 0.35),
    (0.95, 0.75, 0.20),
    (0.60, 0.35, 0.75),
    (0.10, 0.75, 0.75),
    (0.95, 0.50, 0.15),
    (0.85, 0.40, 0.65),
)


class ObjectPrompts(dict):
    """One object of the prompts file: ``name``, ``label`` and ``rounds`` (validated)."""


def _num(d: dict, key: str, where: str) -> float:
    if key not in d:
        raise ValueError(f"{where}: missing {key!r}")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{where}: {key!r} must be a number, not {v!r}")
    return v


MAX_LABEL = 2**31 - 1  # label maps are written as at most int32


def _axis(d: dict, where: str) -> int:
    v = d.get("axis", 0)
    if isinstance(v, bool) or v not in (0, 1, 2):
        raise ValueError(f"{where}: 'axis' must be 0, 1 or 2, not {v!r}"[:300])
    return int(v)


def _list(d: dict, key: str, where: str) -> list:
    v = d.get(key, [])
    if not isinstance(v, list):
        raise ValueError(f"{where}: {key!r} must be a list, not {v!r}"[:300])
    return v


def load_prompts(path: str | Path) -> list[ObjectPrompts]:
    """Read and validate a prompts JSON file (format in the module docstring)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({exc})") from exc
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to be a prompts file") from None
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
        if isinstance(label, bool) or not isinstance(label, int) or not 0 < label <= MAX_LABEL:
            raise ValueError(
                f"{where}: 'label' must be an integer from 1 to {MAX_LABEL}, not {label!r}"[:300]
            )
        if label in used:
            raise ValueError(f"{where}: label {label} is used by two objects")
        used.add(label)
        parsed = []
        for r, rnd in enumerate(rounds):
            w = f"{where}.rounds[{r}]"
            if not isinstance(rnd, dict):
                raise ValueError(f"{w}: must be an object with 'clicks' and/or 'boxes'")
            clicks = []
            for c, ck in enumerate(_list(rnd, "clicks", w)):
                wc = f"{w}.clicks[{c}]"
                if not isinstance(ck, dict):
                    raise ValueError(f"{wc}: must be an object with z, y, x")
                pos = ck.get("positive", True)
                if not isinstance(pos, bool):
                    raise ValueError(f"{wc}: 'positive' must be true or false")
                zyx = (_num(ck, "z", wc), _num(ck, "y", wc), _num(ck, "x", wc))
                clicks.append((zyx, pos, _axis(ck, wc)))
            boxes = []
            for b, bx in enumerate(_list(rnd, "boxes", w)):
                wb = f"{w}.boxes[{b}]"
                if not isinstance(bx, dict):
                    raise ValueError(f"{wb}: must be an object with z, y0, x0, y1, x1")
                corners = tuple(_num(bx, k, wb) for k in ("y0", "x0", "y1", "x1"))
                boxes.append((_num(bx, "z", wb), corners, _axis(bx, wb)))
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
    from ..engine.prompts import Prompt
    from ..engine.session import Session
    from ..engine.volume import Volume

    # check every prompt against the volume first (fast; before the weights load)
    vol = Volume(volume, spacing)
    for i, o in enumerate(objects):
        for r, rnd in enumerate(o["rounds"]):
            try:
                for zyx, pos, axis in rnd["clicks"]:
                    Prompt.click(vol, zyx, positive=pos, axis=axis)
                for z, box, axis in rnd["boxes"]:
                    Prompt.box(vol, z, box, axis=axis)
            except ValueError as exc:
                raise ValueError(f"objects[{i}] ({o['name']}) round {r + 1}: {exc}") from exc
    s = Session(vol, model=model, **session_kwargs)
    ids: dict[int, int] = {}
    for o in objects:
        obj = s.new_object()
        ids[obj] = o["label"]
        for rnd in o["rounds"]:
            for zyx, pos, axis in rnd["clicks"]:
                s.add_click(obj, zyx, positive=pos, axis=axis)
            for z, box, axis in rnd["boxes"]:
                s.add_box(obj, z, box, axis=axis)
            s.run(obj)
    lab = s.labels()
    top = max(ids.values())
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32
    lut = np.zeros(max(ids) + 1, dtype)
    for k, v in ids.items():
        lut[k] = v
    return lut[lab]


def _write(out: Path, labels: np.ndarray, loaded: Any, names: dict[int, str]) -> list[Path]:
    """Write ``labels`` (Z, Y, X) on the grid of the image they were segmented in."""
    from ..io import write_label_file

    return write_label_file(
        out,
        labels,
        source=loaded.source,
        world_affine=loaded.affine,
        objects=[
            {"id": k, "name": v, "color": list(_PALETTE[(k - 1) % len(_PALETTE)])}
            for k, v in names.items()
        ],
    )


def check_output(out: Path) -> None:
    """Refuse an output path that cannot be written, before any segmentation runs."""
    from ..io.writer import NIFTI_SUFFIXES, TIFF_SUFFIXES

    if not out.name.lower().endswith(NIFTI_SUFFIXES + TIFF_SUFFIXES):
        raise ValueError(f"{out}: unsupported label file type; use .nii.gz, .nii, .tif or .tiff")
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; give a file name")
    folder = out.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{out}: cannot write there ({existing} is not a writable folder)")
    if folder.is_dir():
        probe = folder / f".{out.name}.limnet-probe-{os.getpid()}"
        try:
            probe.write_bytes(b"")
        except OSError as exc:
            raise ValueError(f"{out}: cannot write there ({exc.strerror or exc})") from None
        finally:
            probe.unlink(missing_ok=True)


def _main(args: argparse.Namespace) -> int:
    image, prompts, out = Path(args.image), Path(args.prompts), Path(args.output)
    if not image.exists():
        raise FileNotFoundError(f"{image}: no such file or folder")
    objects = load_prompts(prompts)
    check_output(out)
    from ..io import load_volume

    loaded = load_volume(image)
    model = None
    if args.device or args.weights:
        from ..engine.model import load_model

        model = load_model(args.weights, device=args.device)
    t0 = time.perf_counter()
    labels = segment(
        loaded.data,
        tuple(loaded.spacing),
        objects,
        model=model,
        threads=args.threads,
        fusion=not args.no_fusion,
        propagation=not args.no_propagation,
    )
    secs = time.perf_counter() - t0
    written = _write(out, labels, loaded, {o["label"]: o["name"] for o in objects})
    for o in objects:
        n = int((labels == o["label"]).sum())
        print(f"{o['name']} (label {o['label']}): {n} voxels", file=sys.stderr)
    print(f"segmented in {secs:.1f} s; wrote {', '.join(map(str, written))}", file=sys.stderr)
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
