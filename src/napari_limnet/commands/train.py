"""``limnet train``: train the networks from a JSON config (see ``training.train``: the loop).

    limnet train --config CONFIG.json [--stage interaction|memory|scorer|all|A,B]
                 [--parallel] [--export WEIGHTS.pt] [--cases CASES] [--out DIR]
                 [--init-weights BASE.pt]

``all`` (or a comma list) runs the stages one after the other; ``--parallel`` starts them as
separate processes (they share one GPU well, the networks being small). A stage whose checkpoint
exists in ``out`` resumes from it. ``--export`` writes the weights file ``load_model``
reads; with ``init_weights`` (a fine-tuning run) the stages it did not train are taken from
those weights. Under ``torchrun`` each stage trains with DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train the LIM-Net networks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(p)
    return p


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="", help="JSON config (default: the packaged CPU config)")
    p.add_argument(
        "--stage", default="all", help="interaction, memory, scorer, all, or a comma list"
    )
    p.add_argument("--parallel", action="store_true", help="run the stages as parallel processes")
    p.add_argument("--export", default="", help="write the combined weights file here at the end")
    p.add_argument(
        "--cases", default=None, help="cases.json or folder of .npz volumes (overrides config)"
    )
    p.add_argument("--out", default=None, help="run folder (overrides config)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps or auto (overrides config)")
    p.add_argument(
        "--init-weights", default=None, help="weights to fine-tune from (overrides config)"
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace):
    from ..training.config import TrainConfig

    path = args.config or str(resources.files("napari_limnet").joinpath("configs/train_cpu.json"))
    cfg = TrainConfig.load(path)
    if args.cases is not None:
        cfg.cases = args.cases
    if args.out is not None:
        cfg.out = args.out
    if args.device is not None:
        cfg.device = args.device
    if args.init_weights is not None:
        cfg.init_weights = args.init_weights
    return cfg


def run(args: argparse.Namespace) -> int:
    from ..training.config import STAGES
    from ..training.train import train_stage
    from ..training.weights import export

    cfg = _config(args)
    stages = list(STAGES) if args.stage == "all" else args.stage.split(",")
    for s in stages:
        if s not in STAGES:
            raise ValueError(f"unknown stage {s!r}; use one of {', '.join(STAGES)} or all")
    if args.parallel and len(stages) > 1:
        procs = []
        for s in stages:
            cmd = [
                sys.executable,
                "-m",
                "napari_limnet.commands.train",
                "--stage",
                s,
                "--no-progress",
            ]
            for flag in ("config", "cases", "out", "device", "init_weights"):
                val = getattr(args, flag)
                if val:
                    cmd += [f"--{flag.replace('_', '-')}", val]
            Path(cfg.out).mkdir(parents=True, exist_ok=True)
            log = open(Path(cfg.out) / f"{s}.stdout", "w")  # noqa: SIM115 (closed on exit)
            procs.append((s, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
        failed = [s for s, p in procs if p.wait() != 0]
        if failed:
            raise RuntimeError(f"training stage(s) failed: {failed}; see {cfg.out}/<stage>.stdout")
    else:
        for s in stages:
            train_stage(cfg, s, progress=not args.no_progress)
    if args.export:
        path = export(
            cfg.out, args.export, {"config": args.config or "train_cpu.json"}, cfg.init_weights
        )
        print(f"weights written to {path}")
    return 0


def main() -> int:
    """``python -m napari_limnet.commands.train``: ``limnet train`` alone (the entry of
    ``torchrun`` and of ``--parallel``'s processes), without the other commands' imports."""
    p = argparse.ArgumentParser(prog="python -m napari_limnet.commands.train")
    configure(p)
    args = p.parse_args()
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
