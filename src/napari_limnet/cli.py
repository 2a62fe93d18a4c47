"""The ``limnet`` command line: each sub-command lives in ``napari_limnet.commands.<name>``.

Every command module defines ``add_parser(subparsers)`` (registering itself, with
``set_defaults(func=...)``) and is imported lazily so that ``limnet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("segment", "train", "eval", "compare", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="limnet", description="LIM-Net interactive 3D segmentation (headless tools)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"napari_limnet.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:  # user errors (and disks): one line, no traceback
        print(f"limnet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
