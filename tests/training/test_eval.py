"""The evaluation protocol and ``limnet eval`` end to end on tiny synthetic cases."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_limnet import evaluation
from napari_limnet.commands import eval as eval_cmd
from napari_limnet.evaluation import (
    ObjectResult,
    dice,
    evaluate_object,
    markdown_summary,
    noc,
    summarise,
)


def _save(path: Path, data: np.ndarray, zooms: tuple[float, float, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
    nib.save(img, str(path))


def _sphere_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxel order (i, j, k) = (x, y, z): 32 x 28 x 10, a bright ball plus a dim 'lesion'."""
    rng = np.random.default_rng(seed)
    ii, jj, kk = np.ogrid[:32, :28, :10]
    d2 = (ii - 15.0) ** 2 + (jj - 13.0) ** 2 + ((kk - 4.5) * 3) ** 2  # 3 mm slices
    lab = np.zeros((32, 28, 10), np.uint8)
    lab[d2 <= 9.0**2] = 1
    lab[d2 <= 5.0**2] = 2
    img = rng.normal(0.0, 10.0, lab.shape) + np.where(lab == 1, 200.0, 0) + 120.0 * (lab == 2)
    return img.astype(np.int16), lab


def _msd(root: Path, n: int = 1) -> Path:
    for c in range(n):
        img, lab = _sphere_case(c)
        _save(root / "imagesTr" / f"ball_{c:03d}_0000.nii.gz", img, (1.0, 1.0, 3.0))
        _save(root / "labelsTr" / f"ball_{c:03d}.nii.gz", lab, (1.0, 1.0, 3.0))
    meta = {"name": "Balls", "labels": {"background": 0, "ball": [1, 2], "tumour": 2}}
    (root / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".nii.gz"}))
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained networks, seeded: the protocol's plumbing, not the model's accuracy."""
    import torch

    from napari_limnet.engine.model import save_weights
    from napari_limnet.engine.networks import LimNet

    torch.manual_seed(0)
    return save_weights(LimNet(), tmp_path_factory.mktemp("w") / "untrained.pt", {"name": "t"})


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="limnet")
    sub = parser.add_subparsers(dest="command", required=True)
    eval_cmd.add_parser(sub)
    args = parser.parse_args(["eval", *argv])
    return int(args.func(args) or 0)


def test_dice_and_noc() -> None:
    a = np.zeros((2, 4, 4), bool)
    b = a.copy()
    assert dice(a, b) == 1.0
    a[0, :2] = True
    b[0, 1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert noc([0.5, 0.86, 0.95], 0.85) == 2 and noc([0.5, 0.86, 0.95], 0.9) == 3
    assert noc([0.5, 0.6], 0.85) is None


class _ScriptedSession:
    """A stand-in for Session (monkeypatched) whose masks follow a script, to test the protocol
    bookkeeping independently of the networks: round 1 gives half the object, round 2 all."""

    gt: np.ndarray
    calls: list[tuple[tuple[int, int, int], bool]] = []

    def __init__(self, volume, spacing=None, model=None, *, fusion=True, propagation=True):
        self.rounds = 0

    def new_object(self) -> int:
        return 1

    def add_click(self, obj, point, positive=True, axis=0) -> None:
        type(self).calls.append((tuple(int(v) for v in point), positive))

    def run(self, obj) -> np.ndarray:
        self.rounds += 1
        if self.rounds == 1:
            m = self.gt.copy()
            m[: self.gt.shape[0] // 2] = False
            return m
        return self.gt.copy()


def test_perfect_result_stops_clicks_and_keeps_score(monkeypatch: pytest.MonkeyPatch) -> None:
    import napari_limnet.engine.session as session_mod

    gt = np.zeros((6, 10, 10), bool)
    gt[:, 3:7, 3:7] = True
    _ScriptedSession.gt = gt
    _ScriptedSession.calls = []
    monkeypatch.setattr(session_mod, "Session", _ScriptedSession)
    dices, secs, clicks, perfect_at = evaluate_object(
        np.zeros(gt.shape, np.float32), (3.0, 1.0, 1.0), gt, None, rounds=5
    )
    assert len(dices) == 5 and dices[1:] == [1.0] * 4
    assert dices[0] == pytest.approx(2 * 48 / (48 + 96))
    assert len(secs) == 2 and len(clicks) == 2 and perfect_at == 2
    # round 1: largest slice (all equal -> first, z=0), centre of the 4x4 square (first max)
    assert _ScriptedSession.calls[0] == ((0, 4, 4), True)
    # round 2: the missed half (slices 0..2): first slice with the largest error
    assert _ScriptedSession.calls[1] == ((0, 4, 4), True)
    with pytest.raises(ValueError):
        evaluate_object(np.zeros(gt.shape), (1, 1, 1), gt, None, rounds=0)


def test_summary_rows_and_markdown() -> None:
    def r(v: str, kind: str, ds: str, d: list[float]) -> ObjectResult:
        return ObjectResult(v, ds, kind, "c", "o", 10, 3, d, [0.1] * len(d))

    results = [
        r("full", "organ", "A", [0.5, 0.9, 0.95]),
        r("full", "lesion", "B", [0.3, 0.6, 0.8]),
        r("2d_only", "organ", "A", [0.5, 0.7, 0.6]),
    ]
    rows = summarise(results, rounds=3)
    full_all = next(x for x in rows if x["variant"] == "full" and x["group"] == "all")
    assert full_all["n"] == 2 and full_all["dice@1"] == pytest.approx(0.4)
    assert np.isnan(full_all["dice@6"])
    assert full_all["noc85"] == pytest.approx((2 + 4) / 2) and full_all["noc85_failures"] == 1
    assert full_all["noc90"] == pytest.approx((2 + 4) / 2)
    two_d = next(x for x in rows if x["variant"] == "2d_only" and x["group"] == "all")
    assert two_d["max_drop"] == pytest.approx(0.1)
    groups = {x["group"] for x in rows}
    assert {"all", "kind: organ", "kind: lesion", "dataset: A", "dataset: B"} <= groups
    md = markdown_summary(rows, 3)
    assert md.startswith("| group | variant | n | Dice@1 | Dice@6 | Dice@10 |")
    assert "| all | full | 2 | 0.400 | - | - | 3.00 (1) |" in md


def test_limnet_eval_msd_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture, weights: Path
) -> None:
    root = _msd(tmp_path / "Balls")
    out = tmp_path / "out"
    rc = _run_cli(
        [
            "--msd", str(root), "--rounds", "2", "--variants", "full,2d_only",
            "--out", str(out), "--threads", "1", "-q", "--weights", str(weights),
        ]
    )  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| group | variant |" in printed and "kind: lesion" in printed
    for name in ("per_object.csv", "results.json", "summary.md", "dice_vs_round.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    rows = list(csv.DictReader((out / "per_object.csv").open()))
    assert len(rows) == 2 * 2  # (ball, tumour) x (full, 2d_only)
    assert {r["object"] for r in rows} == {"ball", "tumour"}
    assert {r["kind"] for r in rows} == {"organ", "lesion"}
    for r in rows:
        for k in ("dice_r1", "dice_r2"):
            assert 0.0 <= float(r[k]) <= 1.0
    doc = json.loads((out / "results.json").read_text())
    assert doc["rounds"] == 2 and len(doc["objects"]) == 4
    first = doc["objects"][0]
    assert first["clicks"][0][3] is True and len(first["dice"]) == 2
    # the first click is the annotator's: the ball's largest slice, at its centre
    assert first["clicks"][0][:3] in ([4, 13, 15], [5, 13, 15])


def test_limnet_eval_cases_json(
    tmp_path: Path, capsys: pytest.CaptureFixture, weights: Path
) -> None:
    img, lab = _sphere_case(3)
    _save(tmp_path / "data" / "v" / "image.nii.gz", img, (1.0, 1.0, 3.0))
    _save(tmp_path / "data" / "v" / "label.nii.gz", lab, (1.0, 1.0, 3.0))
    case = {"id": "v", "image": "v/image.nii.gz", "labels": {"label": "v/label.nii.gz"}}
    (tmp_path / "data" / "cases.json").write_text(json.dumps({"cases": [case]}))
    (tmp_path / "split.json").write_text(json.dumps({"train": [], "validation": ["v"]}))
    obj = {"case": "v", "label_file": "label", "values": [1, 2], "name": "ball"}
    objs = {"objects": [{**obj, "kind": "organ", "dataset": "Synthetic"}]}
    (tmp_path / "objects.json").write_text(json.dumps(objs))
    common = ["--split-file", str(tmp_path / "split.json"), "--objects"]
    rc = _run_cli(
        [
            "--cases", str(tmp_path / "data" / "cases.json"), *common,
            str(tmp_path / "objects.json"), "--rounds", "2", "--variants", "no_fusion",
            "--out", str(tmp_path / "out"), "-q", "--weights", str(weights),
        ]
    )  # fmt: skip
    assert rc == 0
    assert "dataset: Synthetic" in capsys.readouterr().out
    # objects on a case outside the requested split are refused
    (tmp_path / "split.json").write_text(json.dumps({"train": ["v"], "validation": []}))
    with pytest.raises(ValueError, match="not validation cases"):
        _run_cli(["--cases", str(tmp_path / "data"), *common, str(tmp_path / "objects.json")])
    with pytest.raises(ValueError, match="variants"):
        _run_cli(["--cases", str(tmp_path / "data"), "--variants", "bogus"])


def test_run_evaluation_rejects_unknown_variants() -> None:
    with pytest.raises(ValueError):
        evaluation.run_evaluation(None, [], None, variants=["nope"])  # type: ignore[arg-type]
