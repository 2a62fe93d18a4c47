"""``limnet eval``: the simulated-annotator protocol of DESIGN.md on a case list or MSD folder.

Usage::

    limnet eval --cases ../shared/data/cases.json [--split validation] [--objects OBJ.json]
    limnet eval --msd Task09_Spleen [--msd-channel 0]
        [--weights W.pt] [--device cpu] [--rounds 15] [--variants full,no_fusion,2d_only]
        [--out eval_out] [--threads 2] [--limit N]

``--cases``: the validation objects of the package's split (``configs/eval_objects.json`` on the
validation cases of ``configs/split.json``), or those of ``--objects``. ``--msd``: one object per
label of every case (objects on fewer than 3 slices or 50 voxels are skipped; labels whose name
looks like a tumour or lesion count as lesions). Writes ``per_object.csv``, ``results.json``,
``summary.md`` and ``dice_vs_round.png`` into ``--out`` and prints the summary table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def _variants(text: str) -> list[str]:
    from ..evaluation import VARIANTS

    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        raise ValueError(f"--variants: unknown {bad}; choose from {', '.join(VARIANTS)}")
    return names


def _main(args: argparse.Namespace) -> int:
    from ..evaluation import markdown_summary, run_evaluation, summarise
    from ..evaluation.cases import (
        MSDDataset,
        SharedCases,
        load_eval_objects,
        load_split,
        msd_objects,
        validation_objects,
    )

    if args.rounds < 1:
        raise ValueError("--rounds must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise ValueError("--threads must be at least 1")
    variants = _variants(args.variants)
    if args.cases and args.msd:
        raise ValueError("give either --cases or --msd, not both")

    if args.msd:
        source: Any = MSDDataset(args.msd, channel=args.msd_channel)
        objects = msd_objects(source)
        where = f"MSD folder {args.msd}"
    else:
        cases = Path(args.cases) if args.cases else Path("../shared/data/cases.json")
        if not cases.exists():
            raise FileNotFoundError(f"no case list at {cases} (give --cases or --msd)")
        split = load_split(args.split_file)
        source = SharedCases(cases, split=split)
        if args.objects:
            objects = load_eval_objects(args.objects)
        else:
            objects = validation_objects(split)
        known = set(source.case_ids(args.split))
        missing = sorted({o.case_id for o in objects} - known)
        if missing:
            raise ValueError(f"objects on cases that are not {args.split} cases: {missing}")
        where = f"{cases} ({args.split} split)"
    if args.limit is not None:
        objects = objects[: args.limit]
    if not objects:
        raise ValueError(f"no objects to evaluate in {where}")

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from ..engine.model import load_model

    model = load_model(args.weights, device=args.device)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    log(
        f"limnet eval: {len(objects)} objects x {len(variants)} variants, {args.rounds} rounds, "
        f"from {where}"
    )
    t0 = time.perf_counter()
    results = run_evaluation(
        source,
        objects,
        model,
        rounds=args.rounds,
        variants=variants,
        out_dir=args.out,
        log=None if args.quiet else log,
    )
    if not results:
        raise ValueError("every object was too small to evaluate")
    print(markdown_summary(summarise(results, args.rounds), args.rounds))
    log(
        f"wrote {args.out}/ (per_object.csv, results.json, summary.md, dice_vs_round.png) "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``limnet eval``."""
    p = subparsers.add_parser(
        "eval",
        help="accuracy with simulated clicks (Dice per round, NoC) on cases or an MSD folder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("data (one of)")
    src.add_argument(
        "--cases", default=None, help="cases.json (default: ../shared/data/cases.json)"
    )
    src.add_argument("--msd", default=None, help="MSD / nnU-Net raw folder (imagesTr, labelsTr)")
    p.add_argument(
        "--split",
        default="validation",
        choices=["validation", "train", "any"],
        help="which cases of the split the objects may lie on (default: validation)",
    )
    p.add_argument("--split-file", default=None, help="split JSON (default: the package's)")
    p.add_argument(
        "--objects", default=None, help="objects JSON (default: configs/eval_objects.json)"
    )
    p.add_argument("--msd-channel", type=int, default=0, help="image channel of an MSD folder")
    p.add_argument("--weights", default=None, help="weights file (default: bundled)")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: best)")
    p.add_argument("--rounds", type=int, default=15, help="clicks per object (default 15)")
    p.add_argument(
        "--variants",
        default="full,no_fusion,2d_only",
        help="comma list of full, no_fusion, 2d_only (default: all three)",
    )
    p.add_argument("--out", default="eval_out", help="output folder (default: eval_out)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N objects")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-object progress lines")
    p.set_defaults(func=_main)
    return p
