"""``evaluation.compare_results`` and ``limnet compare``: paired changes with standard errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_limnet.cli import main
from napari_limnet.evaluation import compare_results, load_results, markdown_comparison


def _obj(variant: str, case: str, name: str, dice: list[float]) -> dict:
    return {"variant": variant, "case_id": case, "name": name, "dice": dice}


def _run(objs: list[dict], rounds: int = 3) -> dict:
    return {"rounds": rounds, "summary": [], "objects": objs}


BASE = _run(
    [
        _obj("full", "c1", "liver", [0.5, 0.6, 0.7]),
        _obj("full", "c1", "spleen", [0.2, 0.4, 0.3]),
        _obj("full", "c2", "lesion", [0.1, 0.2, 0.4]),
        _obj("full", "c3", "only_in_base", [0.9, 0.9, 0.9]),
        _obj("no_fusion", "c1", "liver", [0.5, 0.5, 0.5]),
        _obj("no_fusion", "c1", "spleen", [0.2, 0.3, 0.3]),
    ]
)
NEW = _run(
    [
        _obj("full", "c1", "liver", [0.5, 0.7, 0.8]),
        _obj("full", "c1", "spleen", [0.2, 0.4, 0.5]),
        _obj("full", "c2", "lesion", [0.1, 0.1, 0.3]),
        _obj("no_fusion", "c1", "liver", [0.5, 0.5, 0.6]),
        _obj("no_fusion", "c1", "spleen", [0.2, 0.3, 0.3]),
    ]
)


def test_paired_change_and_standard_error() -> None:
    rows = compare_results(BASE, NEW, at=(1, 2))
    full, nf = rows
    assert (full["variant"], full["n"], full["only_base"], full["only_new"]) == ("full", 3, 1, 0)
    d = np.array([0.1, 0.2, -0.1])  # round 3 (the last), new - base per paired object
    assert full["change@3"] == pytest.approx(d.mean())
    assert full["se@3"] == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert full["base@3"] == pytest.approx(np.mean([0.7, 0.3, 0.4]))  # the unpaired one left out
    assert full["change@1"] == pytest.approx(0.0) and full["se@1"] == pytest.approx(0.0)
    assert full["change@2"] == pytest.approx(np.mean([0.1, 0.0, -0.1]))
    # round 6 is past the 3 rounds run, so rose / fell are counted at the last round
    assert (full["at_round"], full["rose"], full["fell"]) == (3, 2, 1)
    assert full["max_drop_base"] == pytest.approx(0.0)
    assert full["max_drop_new"] == pytest.approx(0.0)
    assert nf["n"] == 2 and nf["change@3"] == pytest.approx(0.05)
    # one object: its curve is the mean curve; no standard error from one object
    (one,) = compare_results(
        _run([_obj("full", "c", "a", [0.5, 0.8, 0.6])]),
        _run([_obj("full", "c", "a", [0.5, 0.6, 0.7])]),
    )
    assert one["max_drop_base"] == pytest.approx(0.2) and one["max_drop_new"] == 0.0
    assert one["change@3"] == pytest.approx(0.1) and np.isnan(one["se@3"])
    text = markdown_comparison(rows)
    assert "| full | 3 | 3 | 0.467 | 0.533 | +0.067 +- 0.088 |" in text
    assert "unpaired, left out: 1 in base, 0 in new" in text


def test_variants_of_one_run_pair_by_object() -> None:
    (row,) = compare_results(NEW, NEW, at=(1, 2), variants=("no_fusion", "full"))
    assert row["variant"] == "full vs no_fusion" and row["n"] == 2  # the lesion has no pair
    assert row["change@2"] == pytest.approx(np.mean([0.2, 0.1]))
    assert row["change@3"] == pytest.approx(np.mean([0.2, 0.2]))
    with pytest.raises(ValueError, match="no variant 'fusion'"):
        compare_results(NEW, NEW, variants=("fusion", "full"))


def test_runs_of_different_lengths_compare_their_common_rounds() -> None:
    longer = _run([{**o, "dice": o["dice"] + [0.95]} for o in NEW["objects"]], rounds=4)
    assert compare_results(BASE, longer, at=(1, 2)) == compare_results(BASE, NEW, at=(1, 2))
    (row,) = compare_results(_run(BASE["objects"][:1], 3), _run(longer["objects"][:1], 4))
    assert row["rounds"] == 3


def test_runs_without_common_objects_are_refused() -> None:
    with pytest.raises(ValueError, match="no object in common"):
        compare_results(BASE, _run([_obj("full", "c9", "x", [0.1, 0.2, 0.3])]))


def test_limnet_compare_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "results.json").write_text(json.dumps(BASE))
    (b / "results.json").write_text(json.dumps(NEW))
    out = tmp_path / "rows.json"
    assert main(["compare", str(a), str(b / "results.json"), "--at", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| full | 3 | 2 |" in printed and "| no_fusion | 2 | 3 |" in printed
    assert json.loads(out.read_text()) == compare_results(BASE, NEW, at=(2,))
    assert load_results(a) == BASE
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert "no evaluation results" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert main(["compare", str(a), str(tmp_path / "bad.json")]) == 2
    assert "not a limnet eval results.json" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--at", "0"]) == 2
    assert main(["compare", str(a), str(b), "--variants", "full"]) == 2


def test_by_data_set_each_group_has_its_own_standard_error() -> None:
    def tagged(run: dict) -> dict:
        sets = {"c1": "CT", "c2": "MR", "c3": "MR"}
        objs = [{**o, "dataset": sets[o["case_id"]], "kind": "organ"} for o in run["objects"]]
        return {**run, "objects": objs}

    rows = compare_results(tagged(BASE), tagged(NEW), at=(3,), by="dataset")
    by = {r["variant"]: r for r in rows}
    assert set(by) == {"full, CT", "full, MR", "no_fusion, CT"}
    assert by["full, CT"]["n"] == 2 and by["full, CT"]["change@3"] == pytest.approx(0.15)
    assert by["full, CT"]["se@3"] == pytest.approx(np.std([0.1, 0.2], ddof=1) / np.sqrt(2))
    assert by["full, MR"]["n"] == 1 and by["full, MR"]["change@3"] == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="by must be"):
        compare_results(BASE, NEW, by="case")
