"""An evaluation's outputs: summaries by variant and group, the CSV, JSON, Markdown and plot,
and the paired comparison of two evaluations.

:func:`compare_results` pairs two evaluations object by object (the same objects under two
engines or weights) and gives each round's mean change with its standard error, because a
difference of 0.01 in mean Dice over 30 objects is often noise (``docs/decisions.md``,
"Evaluation protocol and noise").

Summaries: per variant and per group (all, each kind, each data set), the mean over objects,
with NoC failures counted as R + 1 and their number given separately.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .results import THRESHOLDS, ObjectResult

__all__ = [
    "compare_results",
    "markdown_comparison",
    "markdown_summary",
    "summarise",
    "write_outputs",
]


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


def compare_results(
    base: dict[str, Any],
    new: dict[str, Any],
    at: Sequence[int] = (1, 6, 10),
    variants: tuple[str, str] | None = None,
    by: str | None = None,
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
    ``by="dataset"`` (or ``"kind"``): one row per variant and data set (or kind), each with
    its own standard error: whether a change holds on every data set or only on the largest.
    """
    if by not in (None, "dataset", "kind"):
        raise ValueError(f"by must be 'dataset' or 'kind', not {by!r}")
    rounds = min(int(base["rounds"]), int(new["rounds"]))

    def index(data: dict[str, Any], only: str | None) -> dict[tuple[str, str, str], np.ndarray]:
        found = {o["variant"] for o in data["objects"]}
        if only is not None and only not in found:
            raise ValueError(f"no variant {only!r} in the results (they have {sorted(found)})")
        return {
            (
                (f"{variants[1]} vs {variants[0]}" if variants else o["variant"])
                + (f", {o[by]}" if by else ""),
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
