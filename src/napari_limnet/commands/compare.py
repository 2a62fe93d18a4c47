"""``limnet compare``: two ``limnet eval`` runs on the same objects, paired object by object.

Usage::

    limnet compare BASE NEW [--at 1,6,10] [--by dataset|kind] [--json OUT.json]
    limnet compare RUN RUN --variants no_fusion,full      # what fusion is worth, in one run

``BASE`` and ``NEW`` are ``limnet eval --out`` folders (or their ``results.json``). Prints, per
variant and round, both mean Dice values and the mean paired change with its standard error:
the way to tell whether an engine change or new weights helped, beyond the noise of a few
dozen objects.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def _main(args: argparse.Namespace) -> int:
    from ..evaluation import compare_results, load_results, markdown_comparison

    try:
        at = tuple(int(x) for x in args.at.split(",") if x.strip())
    except ValueError:
        raise ValueError(
            f"--at: give round numbers separated by commas, got {args.at!r}"
        ) from None
    if not at or min(at) < 1:
        raise ValueError("--at: round numbers start at 1")
    variants = None
    if args.variants:
        names = [v.strip() for v in args.variants.split(",")]
        if len(names) != 2 or not all(names):
            raise ValueError(f"--variants: give BASE,NEW, got {args.variants!r}")
        variants = (names[0], names[1])
    rows = compare_results(
        load_results(args.base), load_results(args.new), at=at, variants=variants, by=args.by
    )
    print(markdown_comparison(rows), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``limnet compare``."""
    p = subparsers.add_parser(
        "compare",
        help="two eval runs on the same objects: paired change of Dice per round, with s.e.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("base", help="eval output folder or results.json of the reference run")
    p.add_argument("new", help="eval output folder or results.json of the run to judge")
    p.add_argument("--at", default="1,6,10", help="rounds to report (the last is added)")
    p.add_argument(
        "--variants",
        default=None,
        help="BASE,NEW: pair this variant of BASE with that of NEW (default: like with like)",
    )
    p.add_argument(
        "--by",
        default=None,
        choices=("dataset", "kind"),
        help="one row per variant and data set (or kind of object), each with its s.e.",
    )
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.set_defaults(func=_main)
    return p
