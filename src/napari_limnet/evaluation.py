"""The simulated-annotator evaluation of DESIGN.md, run through the public API.

For each object (all its parts) and each variant (``full``, ``no_fusion``, ``2d_only``):
round 1 places :func:`~napari_limnet.training.annotator.first_click`, later rounds
:func:`~napari_limnet.training.annotator.next_click` on the session's current 3D mask; every
click is followed by ``Session.run`` and the Dice of the whole 3D mask. A perfect result stops
the clicks and keeps its score for the remaining rounds.

Reported per object: Dice after rounds 1..R, NoC@85 / NoC@90 (the first round reaching that
Dice; None = failure, not reached within R), seconds per round. Summaries: per variant and per
group (all, each kind, each data set), the mean over objects, with NoC failures counted as R + 1
and their number given separately.

:func:`compare_results` pairs two evaluations object by object (the same objects under two
engines or weights) and gives each round's mean change with its standard error, because a
difference of 0.01 in mean Dice over 30 objects is often noise (``docs/training/experiments.md``,
fifteenth session).

Engine side: numpy, torch (through the session) and matplotlib's Agg backend only.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .training.annotator import (
    Click,
    first_click,
    first_click_off_centre,
    first_region_prompt,
    next_click,
)
from .training.real_data import CaseSource, EvalObject, object_is_usable

__all__ = [
    "VARIANTS",
    "ObjectResult",
    "compare_results",
    "dice",
    "evaluate_object",
    "load_results",
    "markdown_comparison",
    "markdown_summary",
    "run_evaluation",
    "summarise",
    "write_outputs",
]

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
THRESHOLDS = (0.85, 0.90)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two bool masks; 1.0 when both are empty."""
    p = np.asarray(pred, bool)
    g = np.asarray(gt, bool)
    denom = int(np.count_nonzero(p)) + int(np.count_nonzero(g))
    if denom == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & g)) / denom


def noc(dices: Sequence[float], threshold: float) -> int | None:
    """Clicks (= rounds) needed to reach ``threshold``; None when never reached."""
    for i, d in enumerate(dices):
        if d >= threshold:
            return i + 1
    return None


@dataclass
class ObjectResult:
    """One object under one variant."""

    variant: str
    dataset: str
    kind: str
    case_id: str
    name: str
    n_voxels: int
    n_slices: int
    dice: list[float]  # after rounds 1..R (a perfect result keeps its score)
    seconds: list[float]  # per round actually run
    clicks: list[tuple[int, int, int, bool]] = field(default_factory=list)
    perfect_at: int | None = None  # round at which the result became perfect

    def noc(self, threshold: float) -> int | None:
        return noc(self.dice, threshold)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["clicks"] = [list(c) for c in self.clicks]
        for t in THRESHOLDS:
            d[f"noc{round(t * 100)}"] = self.noc(t)
        return d


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
    from .engine.session import Session

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


# --------------------------------------------------------------------------------------------
# Summaries and outputs
# --------------------------------------------------------------------------------------------


def _mean(xs: Sequence[float]) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


def _max_drop(curve: np.ndarray) -> float:
    """The largest fall of a curve from one round to the next (0 if it never falls)."""
    return float(max([0.0, *(curve[:-1] - curve[1:]).tolist()]))


def summarise(results: Sequence[ObjectResult], rounds: int) -> list[dict[str, Any]]:
    """Per variant and per group ("all", "kind: organ", "dataset: X"), means over objects."""
    rows: list[dict[str, Any]] = []
    variants = list(dict.fromkeys(r.variant for r in results))
    for v in variants:
        rv = [r for r in results if r.variant == v]
        groups: list[tuple[str, list[ObjectResult]]] = [("all", rv)]
        for k in sorted({r.kind for r in rv}):
            groups.append((f"kind: {k}", [r for r in rv if r.kind == k]))
        for ds in sorted({r.dataset for r in rv}):
            groups.append((f"dataset: {ds}", [r for r in rv if r.dataset == ds]))
        for name, rs in groups:
            curve = np.mean(np.array([r.dice for r in rs], float), axis=0)
            row: dict[str, Any] = {
                "variant": v,
                "group": name,
                "n": len(rs),
                "dice_per_round": [float(x) for x in curve],
                "max_drop": _max_drop(curve),
                "sec_per_round_mean": _mean([s for r in rs for s in r.seconds]),
                "sec_per_round_median": (
                    float(np.median([s for r in rs for s in r.seconds]))
                    if any(r.seconds for r in rs)
                    else float("nan")
                ),
            }
            for k in (1, 6, 10, 15):
                row[f"dice@{k}"] = float(curve[k - 1]) if k <= rounds else float("nan")
            for t in THRESHOLDS:
                tag = round(t * 100)
                nocs = [r.noc(t) for r in rs]
                row[f"noc{tag}"] = _mean([n if n is not None else rounds + 1 for n in nocs])
                row[f"noc{tag}_failures"] = sum(n is None for n in nocs)
            rows.append(row)
    return rows


def _fmt(x: float, nd: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def markdown_summary(summary: Sequence[dict[str, Any]], rounds: int) -> str:
    """The summary as a markdown table (one row per group and variant)."""
    head = (
        "| group | variant | n | Dice@1 | Dice@6 | Dice@10 | NoC@85 (fail) | NoC@90 (fail) "
        "| max drop | s/round |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    order = {name: i for i, name in enumerate(dict.fromkeys(r["group"] for r in summary))}
    for r in sorted(summary, key=lambda r: order[r["group"]]):
        lines.append(
            f"| {r['group']} | {r['variant']} | {r['n']} | {_fmt(r['dice@1'])} "
            f"| {_fmt(r['dice@6'])} | {_fmt(r['dice@10'])} "
            f"| {_fmt(r['noc85'], 2)} ({r['noc85_failures']}) "
            f"| {_fmt(r['noc90'], 2)} ({r['noc90_failures']}) "
            f"| {_fmt(r['max_drop'])} | {_fmt(r['sec_per_round_median'], 2)} |"
        )
    note = (
        f"\nMean over objects; {rounds} rounds, one simulated click per round. NoC: clicks to "
        f"reach the Dice, failures (not reached in {rounds}) counted as {rounds + 1} and given "
        "in brackets. max drop: largest fall of the mean Dice curve from one round to the "
        "next. s/round: median seconds per round.\n"
    )
    return head + "\n".join(lines) + "\n" + note


def _plot(results: Sequence[ObjectResult], rounds: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    kinds = {r.kind for r in results}
    panels = [
        "all",
        *[k for k in ("organ", "lesion") if k in kinds],
        *sorted(kinds - {"organ", "lesion"}),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    x = np.arange(1, rounds + 1)
    for ax, panel in zip(axes[0], panels, strict=True):
        for v in dict.fromkeys(r.variant for r in results):
            rs = [r for r in results if r.variant == v and panel in ("all", r.kind)]
            if not rs:
                continue
            curve = np.mean(np.array([r.dice for r in rs], float), axis=0)
            ax.plot(x, curve, marker="o", ms=3, label=f"{v} (n={len(rs)})")
        ax.set_title(panel if panel == "all" else f"{panel}s")
        ax.set_xlabel("round (clicks)")
        ax.set_ylabel("mean Dice")
        ax.set_xticks(x if rounds <= 15 else x[:: max(1, rounds // 15)])
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(
    results: Sequence[ObjectResult], out_dir: str | Path, *, rounds: int, plot: bool = True
) -> dict[str, Path]:
    """per_object.csv, results.json, summary.md and (``plot``) dice_vs_round.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out / "per_object.csv",
        "json": out / "results.json",
        "markdown": out / "summary.md",
    }
    with paths["csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "variant",
                "dataset",
                "kind",
                "case",
                "object",
                "n_voxels",
                "n_slices",
                *[f"dice_r{i}" for i in range(1, rounds + 1)],
                "noc85",
                "noc90",
                "sec_per_round",
                "perfect_at",
            ]
        )
        for r in results:
            w.writerow(
                [
                    r.variant,
                    r.dataset,
                    r.kind,
                    r.case_id,
                    r.name,
                    r.n_voxels,
                    r.n_slices,
                    *[f"{d:.4f}" for d in r.dice],
                    r.noc(0.85) if r.noc(0.85) is not None else "",
                    r.noc(0.90) if r.noc(0.90) is not None else "",
                    f"{_mean(r.seconds):.3f}",
                    r.perfect_at if r.perfect_at is not None else "",
                ]
            )
    summary = summarise(results, rounds) if results else []
    paths["json"].write_text(
        json.dumps(
            {"rounds": rounds, "summary": summary, "objects": [r.to_json() for r in results]},
            indent=1,
        )
    )
    paths["markdown"].write_text(markdown_summary(summary, rounds) if summary else "")
    if plot and results:
        paths["plot"] = out / "dice_vs_round.png"
        _plot(results, rounds, paths["plot"])
    return paths


def load_results(path: str | Path) -> dict[str, Any]:
    """A ``results.json`` written by :func:`write_outputs` (or the folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise FileNotFoundError(f"no evaluation results at {p} (run limnet eval --out first)")
    data = json.loads(p.read_text())
    if not isinstance(data, dict) or "objects" not in data or "rounds" not in data:
        raise ValueError(f"{p} is not a limnet eval results.json")
    return data


def compare_results(
    base: dict[str, Any],
    new: dict[str, Any],
    at: Sequence[int] = (1, 6, 10),
    variants: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Per variant, ``new`` against ``base`` on the objects both evaluated.

    Objects are paired by (variant, case, name). When the two ran different numbers of rounds,
    the first rounds both ran are compared (the Dice after round k does not depend on the
    rounds that follow it).
    ``variants=(b, n)`` pairs variant ``b`` of ``base`` with variant ``n`` of ``new`` instead
    (one run may be both: ``full`` against ``no_fusion`` is the value of fusion).
    For each round k in ``at`` and the last round: both means, the mean paired change and its
    standard error (sample standard deviation / sqrt(n); nan for one object); also the objects
    that rose or fell by more than 0.05 at round 6 (or the last, if fewer), and each mean
    curve's largest fall from one round to the next.
    """
    rounds = min(int(base["rounds"]), int(new["rounds"]))

    def index(data: dict[str, Any], only: str | None) -> dict[tuple[str, str, str], np.ndarray]:
        found = {o["variant"] for o in data["objects"]}
        if only is not None and only not in found:
            raise ValueError(f"no variant {only!r} in the results (they have {sorted(found)})")
        return {
            (
                f"{variants[1]} vs {variants[0]}" if variants else o["variant"],
                o["case_id"],
                o["name"],
            ): np.asarray(o["dice"], float)[:rounds]
            for o in data["objects"]
            if only is None or o["variant"] == only
        }

    a = index(base, variants[0] if variants else None)
    b = index(new, variants[1] if variants else None)
    keys = [k for k in a if k in b]
    if not keys:
        raise ValueError("the two evaluations have no object in common")
    ks = sorted({min(k, rounds) for k in (*at, rounds)})
    mid = min(6, rounds)
    rows: list[dict[str, Any]] = []
    for v in dict.fromkeys(k[0] for k in keys):
        da = np.array([a[k] for k in keys if k[0] == v])
        db = np.array([b[k] for k in keys if k[0] == v])
        n = len(da)
        diff = db - da
        ca, cb = da.mean(0), db.mean(0)
        row: dict[str, Any] = {
            "variant": v,
            "n": n,
            "rounds": rounds,
            "only_base": sum(k[0] == v for k in a if k not in b),
            "only_new": sum(k[0] == v for k in b if k not in a),
            "rose": int(np.count_nonzero(diff[:, mid - 1] > 0.05)),
            "fell": int(np.count_nonzero(diff[:, mid - 1] < -0.05)),
            "at_round": mid,
            "at": ks,
            "max_drop_base": _max_drop(ca),
            "max_drop_new": _max_drop(cb),
        }
        for k in ks:
            d = diff[:, k - 1]
            row[f"base@{k}"] = float(ca[k - 1])
            row[f"new@{k}"] = float(cb[k - 1])
            row[f"change@{k}"] = float(d.mean())
            row[f"se@{k}"] = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        rows.append(row)
    return rows


def markdown_comparison(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`compare_results` as a markdown table, one row per variant and round."""
    out = [
        "| variant | n | round | base | new | change +- s.e. |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for k in r["at"]:
            out.append(
                f"| {r['variant']} | {r['n']} | {k} | {_fmt(r[f'base@{k}'])} "
                f"| {_fmt(r[f'new@{k}'])} | {r[f'change@{k}']:+.3f} +- {_fmt(r[f'se@{k}'])} |"
            )
    notes = []
    for r in rows:
        extra = ""
        if r["only_base"] or r["only_new"]:
            extra = f"; unpaired, left out: {r['only_base']} in base, {r['only_new']} in new"
        notes.append(
            f"- {r['variant']}: at round {r['at_round']} {r['rose']} objects rose and "
            f"{r['fell']} fell by more than 0.05; largest fall of the mean curve "
            f"{_fmt(r['max_drop_base'])} (base) and {_fmt(r['max_drop_new'])} (new){extra}."
        )
    tail = (
        "\nPaired by object; change: mean of new - base over the objects, s.e.: its standard "
        "error. A change within about two standard errors of zero is not one the objects can "
        "tell from chance."
    )
    return "\n".join(out) + "\n\n" + "\n".join(notes) + "\n" + tail + "\n"
