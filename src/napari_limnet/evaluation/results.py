"""What an evaluation measures per object (:class:`ObjectResult`), and reading it back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["THRESHOLDS", "ObjectResult", "load_results", "noc"]

THRESHOLDS = (0.85, 0.90)  # the Dice of NoC@85 and NoC@90


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
