"""``limnet bench``: speed and memory of one interaction round (a benchmark, not a test).

Usage::

    limnet bench [--threads 2] [--repeats 5] [--slices 200] [--device auto|cpu|cuda]
                 [--weights W.pt] [--memory-slices 400] [--no-memory] [--json OUT.json]

On a synthetic 512 x 512 x ``--slices`` CT-like int16 volume (air, a body of -100..60 HU
with noise, an ellipsoid organ of about 50 HU over most slices) it runs ``--repeats`` fresh
sessions, each with one positive click in the organ, and reports medians of:

* first response: from ``add_click`` + ``run_iter`` to the first ``RoundEvent`` (the
  prompted slice's final 2D mask);
* propagation: slices per second over the remaining events of the round;
* round: seconds for the whole round, committed;
* peak memory: peak RSS of a fresh subprocess that segments a 512 x 512 x
  ``--memory-slices`` int16 volume (one round and ``labels()``).

It prints a markdown table with the thread count (``--threads 1`` gives the throughput the
widget gets when it leaves a core to the viewer) and runs on the GPU too when CUDA is
available (``--device auto``). Without the bundled weights it times untrained networks of the
same architecture and says so.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_parser", "make_ct", "run_bench"]


def make_ct(shape: tuple[int, int, int] = (200, 512, 512), seed: int = 0) -> np.ndarray:
    """A CT-like int16 volume: air, a noisy body, an ellipsoid organ over most slices."""
    rng = np.random.default_rng(seed)
    Z, Y, X = shape
    yy, xx = np.ogrid[:Y, :X]
    body = ((yy - Y / 2) / (0.42 * Y)) ** 2 + ((xx - X / 2) / (0.46 * X)) ** 2 <= 1
    tissue = np.where(xx < X / 2, -100, 60).astype(np.int16)  # fat left, muscle right
    zz = np.arange(Z)[:, None, None]
    oc = (Z / 2, 0.45 * Y, 0.55 * X)
    organ_r = (0.45 * Z, 0.18 * Y, 0.16 * X)
    vol = np.empty(shape, np.int16)
    for z in range(Z):
        sl = np.where(body, tissue, -1000).astype(np.int16)
        organ = (
            ((zz[z, 0, 0] - oc[0]) / organ_r[0]) ** 2
            + ((yy - oc[1]) / organ_r[1]) ** 2
            + ((xx - oc[2]) / organ_r[2]) ** 2
        ) <= 1
        sl[organ & body] = 50
        sl += rng.normal(0, 12, (Y, X)).astype(np.int16)
        vol[z] = sl
    return vol


def _model(weights: str | None, device: str) -> tuple[Any, str]:
    from ..engine.model import LimNetModel, load_model

    try:
        return load_model(weights, device=device), "bundled" if weights is None else weights
    except FileNotFoundError:
        import torch

        from ..engine.networks import LimNet

        torch.manual_seed(0)
        return LimNetModel(LimNet(), torch.device(device)), "untrained (no weights file)"


def _one_round(vol: np.ndarray, model: Any, threads: int) -> dict[str, float]:
    from ..engine.session import Session

    Z, Y, X = vol.shape
    s = Session(vol, spacing=(1.0, 0.8, 0.8), model=model, threads=threads)
    obj = s.new_object()
    t0 = time.perf_counter()
    s.add_click(obj, (Z // 2, int(0.45 * Y), int(0.55 * X)))
    it = s.run_iter(obj)
    next(it)
    t1 = time.perf_counter()
    n = 1
    for _ in it:
        n += 1
    t2 = time.perf_counter()
    return {
        "first_response_s": t1 - t0,
        "slices_per_s": (n - 1) / (t2 - t1) if n > 1 and t2 > t1 else float("nan"),
        "round_s": t2 - t0,
        "slices": float(n),
        "mask_voxels": float(s.mask(obj).sum()),
    }


def _memory_probe(slices: int, threads: int, weights: str | None) -> None:
    """Run in a fresh process: print the peak RSS (MiB) of one round on a 512^2 volume."""
    import resource

    model, _ = _model(weights, "cpu")
    vol = make_ct((slices, 512, 512), seed=1)
    _one_round(vol, model, threads)
    from ..engine.session import Session

    s = Session(vol, model=model, threads=threads)
    o = s.new_object()
    s.add_click(o, (slices // 2, 230, 280))
    s.run(o)
    s.labels()
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _peak_memory(slices: int, threads: int, weights: str | None) -> float:
    code = (
        "from napari_limnet.commands.bench import _memory_probe; "
        f"_memory_probe({slices}, {threads}, {weights!r})"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_rss_mib"])


def run_bench(
    threads: int = 2,
    repeats: int = 5,
    slices: int = 200,
    devices: tuple[str, ...] = ("cpu",),
    weights: str | None = None,
    memory_slices: int | None = 400,
) -> dict[str, Any]:
    """Run the benchmark; return the medians per device (and the raw runs)."""
    import torch

    vol = make_ct((slices, 512, 512))
    result: dict[str, Any] = {
        "threads": threads,
        "repeats": repeats,
        "volume": [slices, 512, 512],
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "devices": {},
    }
    for dev in devices:
        model, wname = _model(weights, dev)
        result["weights"] = wname
        _one_round(vol[: min(slices, 8)], model, threads)  # warm-up
        runs = [_one_round(vol, model, threads) for _ in range(repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        result["devices"][dev] = {"median": med, "runs": runs}
    if memory_slices:
        result["peak_rss_mib"] = _peak_memory(memory_slices, threads, weights)
        result["memory_volume"] = [memory_slices, 512, 512]
    return result


def to_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"LIM-Net round on a {r['volume'][1]} x {r['volume'][2]} x {r['volume'][0]} CT, "
        f"{r['threads']} CPU thread(s), median of {r['repeats']} fresh sessions "
        f"(weights: {r.get('weights')}, torch {r['torch']})",
        "",
        "| device | first response (ms) | propagation (slices/s) | round (s) | slices |",
        "|---|---:|---:|---:|---:|",
    ]
    for dev, d in r["devices"].items():
        m = d["median"]
        lines.append(
            f"| {dev} | {1000 * m['first_response_s']:.0f} | {m['slices_per_s']:.1f} "
            f"| {m['round_s']:.2f} | {m['slices']:.0f} |"
        )
    if "peak_rss_mib" in r:
        v = r["memory_volume"]
        lines += [
            "",
            f"Peak memory (RSS of a fresh process, one round + labels on a "
            f"{v[1]} x {v[2]} x {v[0]} int16 volume): {r['peak_rss_mib']:.0f} MiB",
        ]
    return "\n".join(lines)


def _main(args: argparse.Namespace) -> int:
    import torch

    if args.device == "auto":
        devices: tuple[str, ...] = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
    else:
        devices = (args.device,)
    if args.threads < 1 or args.repeats < 1 or args.slices < 2:
        raise ValueError("--threads and --repeats must be >= 1, --slices >= 2")
    r = run_bench(
        threads=args.threads,
        repeats=args.repeats,
        slices=args.slices,
        devices=devices,
        weights=args.weights,
        memory_slices=None if args.no_memory else args.memory_slices,
    )
    print(to_markdown(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``limnet bench``."""
    p = subparsers.add_parser(
        "bench", help="speed and memory benchmark of a round", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="fresh sessions timed (default 5)")
    p.add_argument("--slices", type=int, default=200, help="slices of the timed volume")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--weights", default=None, help="weights file (default: bundled)")
    p.add_argument("--memory-slices", type=int, default=400, help="slices of the memory test")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=_main)
    return p
