"""``python -m napari_limnet.training``: ``limnet train`` without the other commands' imports."""

import argparse
import sys

from ..commands.train import configure


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m napari_limnet.training")
    configure(p)
    args = p.parse_args()
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
