"""``limnet segment`` end to end on a small NIfTI file written by the test."""

from __future__ import annotations

import argparse
import json

import nibabel as nib
import numpy as np
import pytest

from napari_limnet.commands import segment as seg_cmd
from napari_limnet.engine import model as model_mod
from napari_limnet.engine import session as session_mod


def threshold_round(model, volume, prompts, current, pinned, blocked, options=None):
    """Deterministic stand-in for the networks: the bright block under the prompts, on
    the prompted slice and every slice (the CLI plumbing is what is tested here)."""
    from scipy import ndimage

    seeds = []
    for z, sp in prompts.items():
        for y, x, _pos in sp.clicks:
            seeds.append((z, int(y), int(x)))
        for y0, x0, y1, x1 in sp.boxes:
            seeds.append((z, (y0 + y1) // 2, (x0 + x1) // 2))
    vol = np.stack([volume.slice(z) for z in range(volume.shape[0])])
    lab, _ = ndimage.label(vol > 50)
    ids = [lab[s] for s in seeds if lab[s]]
    order = sorted(prompts) + [z for z in range(volume.shape[0]) if z not in prompts]
    for z in order:
        m = np.isin(lab[z], ids)
        b = blocked(z)
        yield z, m if b is None else m & ~b, volume.shape[0]


@pytest.fixture(autouse=True)
def stand_in_model(monkeypatch):
    monkeypatch.setattr(session_mod.rounds, "run_round", threshold_round)
    monkeypatch.setattr(model_mod, "load_model", lambda *a, **k: object())


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="limnet")
    sub = parser.add_subparsers(dest="command", required=True)
    seg_cmd.add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


@pytest.fixture
def image(tmp_path):
    # NIfTI array order (i, j, k) = (x, y, z); the engine sees (z, y, x) = (k, j, i)
    zyx = np.zeros((8, 24, 20), np.int16)
    zyx[2:7, 3:10, 3:9] = 100
    zyx[1:6, 14:21, 11:18] = 200
    path = tmp_path / "ct.nii.gz"
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    nib.save(nib.Nifti1Image(zyx.transpose(2, 1, 0), affine), str(path))
    return path, zyx, affine


def test_segment_end_to_end(tmp_path, image):
    path, zyx, affine = image
    prompts = {
        "objects": [
            # placed in a sagittal view (a slice across x)
            {"name": "first", "rounds": [{"clicks": [{"z": 4, "y": 5, "x": 5, "axis": 2}]}]},
            {
                "name": "second",
                "label": 7,
                "rounds": [
                    {"boxes": [{"z": 3, "y0": 14, "x0": 11, "y1": 20, "x1": 17}]},
                    {"clicks": [{"z": 4, "y": 16, "x": 13, "positive": True}]},
                ],
            },
        ]
    }
    pj = tmp_path / "prompts.json"
    pj.write_text(json.dumps(prompts))
    out = tmp_path / "labels.nii.gz"
    assert (
        run_cli(["segment", str(path), "--prompts", str(pj), "-o", str(out), "--threads", "1"])
        == 0
    )
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, affine)
    lab = np.asarray(img.dataobj).transpose(2, 1, 0)
    assert lab.shape == zyx.shape
    assert set(np.unique(lab)) <= {0, 1, 7}
    assert lab[4, 5, 5] == 1 and lab[3, 16, 13] == 7 and lab[4, 16, 13] == 7
    np.testing.assert_array_equal(lab == 1, zyx == 100)
    np.testing.assert_array_equal(lab == 7, zyx == 200)


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({}, "objects"),
        ({"objects": []}, "objects"),
        ({"objects": [{"rounds": [{}]}]}, "at least one click"),
        ({"objects": [{"clicks": [{"z": 1, "y": 2}]}]}, "missing 'x'"),
        ({"objects": [{"clicks": [{"z": 1, "y": 2, "x": "3"}]}]}, "number"),
        ({"objects": [{"clicks": [{"z": 1, "y": 2, "x": 3, "positive": "no"}]}]}, "positive"),
        ({"objects": [{"clicks": [{"z": 1, "y": 2, "x": 3, "axis": 3}]}]}, "axis"),
        ({"objects": [{"label": 0, "clicks": [{"z": 1, "y": 2, "x": 3}]}]}, "label"),
        ({"objects": [{"clicks": [{"z": 99, "y": 2, "x": 3}]}]}, "outside"),
        ({"objects": [{"boxes": [{"z": 1, "y0": 2, "x0": 3, "y1": 2, "x1": 9}]}]}, "no area"),
    ],
)
def test_bad_prompts(tmp_path, image, doc, match):
    path, _, _ = image
    pj = tmp_path / "p.json"
    pj.write_text(json.dumps(doc))
    out = tmp_path / "labels.nii.gz"
    with pytest.raises(ValueError, match=match):
        run_cli(["segment", str(path), "--prompts", str(pj), "-o", str(out)])
    assert not out.exists()


def test_prompts_not_json(tmp_path, image):
    pj = tmp_path / "p.json"
    pj.write_text("{nope")
    with pytest.raises(ValueError, match="JSON"):
        seg_cmd.load_prompts(pj)
