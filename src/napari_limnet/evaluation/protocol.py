"""The simulated-annotator protocol of DESIGN.md, run through the public API.

For each object (all its parts) and each variant (``full``, ``no_fusion``, ``2d_only``, ...):
round 1 places :func:`~napari_limnet.evaluation.annotator.first_click`, later rounds
:func:`~napari_limnet.evaluation.annotator.next_click` on the session's current 3D mask; every
click is followed by ``Session.run`` and the Dice of the whole 3D mask. A perfect result stops
the clicks and keeps its score for the remaining rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.measure import dice
from .annotator import (
    Click,
    first_click,
    first_click_off_centre,
    first_region_prompt,
    next_click,
)
from .cases import CaseSource, EvalObject, object_is_usable
from .report import write_outputs
from .results import ObjectResult

__all__ = ["VARIANTS", "evaluate_object", "run_evaluation"]

# name -> keyword arguments of ``evaluate_object``: the Session's options and the first prompt
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {"fusion": True, "propagation": True},
    "no_fusion": {"fusion": False, "propagation": True},
    "2d_only": {"fusion": True, "propagation": False},
    # the first click 30-50 % deep into the largest slice (``first_click_off_centre``)
    "off_centre": {"first": "off_centre"},
    # another first prompt than a click (``first_region_prompt``); clicks after it
    "box": {"first": "box"},
    "loose_box": {"first": "loose_box"},
    "scribble": {"first": "scribble"},
    "lasso": {"first": "lasso"},
    # the volume turned so that its slice axis is last, every prompt given with axis=2
    "turned": {"turned": True},
}


def evaluate_object(
    volume: np.ndarray,
    spacing: Sequence[float],
    gt: np.ndarray,
    model: Any,
    *,
    rounds: int = 15,
    fusion: bool = True,
    propagation: bool = True,
    first: str = "click",
    turned: bool = False,
) -> tuple[list[float], list[float], list[Click], int | None]:
    """Run the protocol on one object; returns (dice per round, seconds per round, clicks,
    round at which the result became perfect or None).

    ``first``: the first prompt: "click" (the protocol's), "off_centre"
    (``first_click_off_centre``), or "box", "loose_box", "scribble", "lasso" (``first_region_prompt``;
    listed among the clicks as the slice's most interior point).
    ``turned``: the session gets the volume with its slice axis moved last, (Y, X, Z), and
    every prompt with ``axis=2`` (prompts in any view: the same result is expected)."""
    from ..engine.session import Session

    gt = np.asarray(gt, bool)
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    axis = 2 if turned else 0

    def at(z: float, y: float, x: float) -> tuple[float, float, float]:
        """Voxel (z, y, x) of the volume as the session holds it."""
        return (y, x, z) if turned else (z, y, x)

    if turned:
        volume = np.moveaxis(np.asarray(volume), 0, 2)
        spacing = (spacing[1], spacing[2], spacing[0])
    session = Session(volume, spacing=spacing, model=model, fusion=fusion, propagation=propagation)
    if turned:
        spacing = (spacing[2], spacing[0], spacing[1])
    obj = session.new_object()
    pred = np.zeros(gt.shape, bool)
    dices: list[float] = []
    seconds: list[float] = []
    clicks: list[Click] = []
    perfect_at: int | None = None
    for r in range(1, rounds + 1):
        if r > 1:
            click = next_click(gt, pred, spacing)
        elif first == "off_centre":
            click = first_click_off_centre(gt, spacing)
        else:
            click = first_click(gt, spacing)
        if click is None:  # perfect: stop clicking, keep the score
            perfect_at = r - 1
            dices.extend([dices[-1]] * (rounds - len(dices)))
            break
        clicks.append(click)
        if r == 1 and first in ("box", "loose_box", "scribble", "lasso"):
            z, coords = first_region_prompt(gt, first, spacing)
            if first in ("box", "loose_box"):
                session.add_box(obj, z, tuple(int(c) for c in coords), axis=axis)
            elif first == "scribble":
                session.add_scribble(obj, [at(z, y, x) for y, x in coords], axis=axis)
            else:
                session.add_lasso(obj, [at(z, y, x) for y, x in coords], axis=axis)
        else:
            session.add_click(obj, at(*click.position), positive=click.positive, axis=axis)
        t0 = time.perf_counter()
        pred = np.asarray(session.run(obj), bool)
        if turned:
            pred = np.moveaxis(pred, 2, 0)
        seconds.append(time.perf_counter() - t0)
        dices.append(dice(pred, gt))
    return dices, seconds, clicks, perfect_at


def _load_groups(objects: Sequence[EvalObject]) -> dict[str, list[EvalObject]]:
    groups: dict[str, list[EvalObject]] = {}
    for o in objects:
        groups.setdefault(o.case_id, []).append(o)
    return groups


def run_evaluation(
    source: CaseSource,
    objects: Sequence[EvalObject],
    model: Any,
    *,
    rounds: int = 15,
    variants: Iterable[str] = ("full", "no_fusion", "2d_only"),
    out_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    min_slices: int = 3,
    min_voxels: int = 50,
) -> list[ObjectResult]:
    """Evaluate every object under every variant; writes outputs to ``out_dir`` when given.

    Objects too small to evaluate (fewer than ``min_slices`` slices or ``min_voxels`` voxels)
    are skipped with a log line. Cases are loaded once each.
    """
    variants = list(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if not variants:
        raise ValueError("no variants to evaluate")
    say = log or (lambda _msg: None)
    results: list[ObjectResult] = []
    t_start = time.perf_counter()
    for case_id, objs in _load_groups(objects).items():
        case = source.load_case(case_id)
        for o in objs:
            gt = case.object_mask(o.label_file, o.values)
            if not object_is_usable(gt, min_slices, min_voxels):
                say(f"skip {case_id}/{o.name}: too small ({int(gt.sum())} voxels)")
                continue
            n_slices = int(np.count_nonzero(gt.any(axis=(1, 2))))
            for v in variants:
                d, secs, clicks, perfect_at = evaluate_object(
                    case.image, case.spacing, gt, model, rounds=rounds, **VARIANTS[v]
                )
                res = ObjectResult(
                    variant=v,
                    dataset=o.dataset,
                    kind=o.kind,
                    case_id=case_id,
                    name=o.name,
                    n_voxels=int(gt.sum()),
                    n_slices=n_slices,
                    dice=[float(x) for x in d],
                    seconds=[float(s) for s in secs],
                    clicks=[(c.z, c.y, c.x, c.positive) for c in clicks],
                    perfect_at=perfect_at,
                )
                results.append(res)
                k6 = d[min(6, rounds) - 1]
                say(
                    f"{v:9s} {case_id}/{o.name}: Dice@1 {d[0]:.3f} @{min(6, rounds)} {k6:.3f} "
                    f"@{rounds} {d[-1]:.3f}  {np.mean(secs):.2f} s/round"
                )
        if out_dir is not None:  # partial results survive an interrupted run
            write_outputs(results, out_dir, rounds=rounds, plot=False)
        del case
    say(f"evaluated {len(results)} object-variants in {time.perf_counter() - t_start:.0f} s")
    if out_dir is not None:
        write_outputs(results, out_dir, rounds=rounds, plot=True)
    return results
