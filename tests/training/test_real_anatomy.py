"""The real-anatomy data path: label maps without image, the source-balanced bank, off-centre
first clicks, scribbles and lassos (training side, annotator side, engine side)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_limnet.engine.preprocess import CROP
from napari_limnet.engine.prompts import fill_polygon, stroke_points
from napari_limnet.engine.session import Session
from napari_limnet.evaluation.annotator import first_click_off_centre, first_region_prompt
from napari_limnet.evaluation.cases import SharedCases
from napari_limnet.training import perturb
from napari_limnet.training.batches import Batches
from napari_limnet.training.real_bank import LabelledVolume, build_bank


def _nii(path: Path, data: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), path)
    return str(path)


def test_label_maps_beside_the_case_list(tmp_path: Path) -> None:
    lab = np.zeros((12, 10, 8), np.int16)
    lab[2:6, 2:6, 2:5] = 3
    img = np.zeros_like(lab)
    cases = {
        "cases": [{"id": "c1", "image": "c1/image.nii.gz", "labels": {"label": "c1/l.nii.gz"}}]
    }
    _nii(tmp_path / "c1/image.nii.gz", img)
    _nii(tmp_path / "c1/l.nii.gz", lab)
    maps = {
        "label_maps": [
            {"id": f"m{i}", "labels": {"label": f"m{i}/label.nii.gz"}, "names": "t"}
            for i in (1, 2)
        ],
        "label_names": {"t": {"3": "organ"}},
    }
    for i in (1, 2):
        _nii(tmp_path / f"m{i}/label.nii.gz", lab)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "label_maps.json").write_text(json.dumps(maps))
    src = SharedCases(tmp_path / "cases.json", {"train": ["c1", "m1"], "validation": ["m2"]})
    assert src.label_map_ids("train") == ["m1"] and src.label_map_ids("validation") == ["m2"]
    assert src.case_ids("any") == ["c1"]  # label maps are not cases (no image to evaluate)
    labels, spacing = src.load_label_map("m1", purpose="train")
    assert labels["label"].shape == (8, 10, 12) and spacing == (2.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="may not be used for training"):
        src.load_label_map("m2", purpose="train")


def _blobs(n_structures: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros((16, 48, 48), np.int32)
    for k in range(1, n_structures + 1):
        z, y, x = rng.integers(4, 12), rng.integers(8, 40), rng.integers(8, 40)
        lab[z - 3 : z + 3, y - 4 : y + 4, x - 4 : x + 4] = k
    return lab


def test_bank_balances_sources_and_repaints_label_maps() -> None:
    many = [  # 16 volumes of one structure each, with images
        LabelledVolume(
            np.random.default_rng(i).normal(size=(16, 48, 48)).astype(np.float32),
            _blobs(1, i),
            (2.0, 1.0, 1.0),
            f"a{i}",
            "many",
        )
        for i in range(16)
    ]
    rich = [LabelledVolume(None, _blobs(16, 99), (2.0, 1.0, 1.0), "b", "rich")]  # no image
    bank = build_bank(many + rich, 200, 3, CROP, 0, keep_labels=True, min_voxels=20)
    assert bank.synth_only is not None
    share = float(bank.synth_only.float().mean())
    # sqrt(16 structures) each: about half the stacks from each source, not 16 to 1
    assert 0.35 < share < 0.65
    assert float(bank.image[bank.synth_only].abs().max()) == 0.0
    data = Batches(bank, 0, torch.device("cpu"))
    img, _ = data.get(32, 3, 1.0, label_synth=0.0)
    assert float(img.std()) > 0  # label-map stacks were painted even with label_synth 0
    with pytest.raises(ValueError, match="no labelled structure"):
        build_bank(rich, 10, 3, 64, 0, keep_labels=False)


def test_off_centre_clicks_scribbles_and_lassos_for_training() -> None:
    gt = torch.zeros(8, 1, 64, 64, dtype=torch.bool)
    gt[:, :, 10:50, 20:40] = True
    g = torch.Generator().manual_seed(0)
    p = perturb.random_inside(gt, g).long()
    assert bool(gt[torch.arange(8), 0, p[:, 0], p[:, 1]].all())
    assert len({tuple(q.tolist()) for q in p}) > 1  # spread, not the centre each time
    pts, ok = perturb.scribbles(gt, g)
    assert pts.shape == (8, 16, 2) and bool(ok.all())  # a straight line in a box stays inside
    lasso = perturb.lassos(gt, g)
    covered = (lasso > 0.5) & gt
    assert float(covered.sum() / gt.sum()) > 0.7 and float((lasso > 0.5).sum()) > float(gt.sum())


def test_annotator_first_prompts() -> None:
    gt = np.zeros((5, 60, 60), bool)
    gt[1:4, 10:50, 15:45] = True
    gt[2, 5:55, 10:50] = True  # the largest slice
    c = first_click_off_centre(gt, (2.0, 1.0, 1.0))
    d = ndimage.distance_transform_edt(np.pad(gt[2], 1))[1:-1, 1:-1]
    assert c.z == 2 and 0.3 <= d[c.y, c.x] / d.max() <= 0.5
    assert first_click_off_centre(gt, (2.0, 1.0, 1.0)) == c  # seeded by the object
    z, box = first_region_prompt(gt, "box")
    assert z == 2 and box.tolist() == [3, 8, 56, 51]
    z, ends = first_region_prompt(gt, "scribble")
    assert ends.shape == (2, 2) and np.linalg.norm(ends[0] - ends[1]) > 10
    z, hull = first_region_prompt(gt, "lasso")
    filled = fill_polygon(hull, gt.shape[1:])
    assert filled[gt[2]].mean() > 0.97


def test_session_scribble_and_lasso_validation() -> None:
    s = Session(np.zeros((4, 20, 20), np.float32), spacing=(2.0, 1.0, 1.0), model=object())
    o = s.new_object()
    with pytest.raises(ValueError, match="one slice"):
        s.add_scribble(o, [(1, 2, 2), (2, 5, 5)])
    with pytest.raises(ValueError, match="at least 3 vertices"):
        s.add_lasso(o, [(1, 2, 2), (1, 5, 5)])
    with pytest.raises(ValueError, match="encloses no area"):
        s.add_lasso(o, [(1, 2, 2), (1, 5, 5), (1, 8, 8)])
    with pytest.raises(ValueError, match="outside the volume"):
        s.add_scribble(o, [(1, 2, 2), (1, 30, 5)])
    s.add_scribble(o, [(1, 2, 2), (1, 2, 12)], positive=False)
    (p,) = s.prompts(o)
    assert p.kind == "scribble" and not p.positive and p.coords == (2.0, 2.0, 2.0, 12.0)
    pts = stroke_points(p.coords)
    assert len(pts) == 21 and pts[0] == (2.0, 2.0) and pts[-1] == (2.0, 12.0)


def test_training_boxes_snug_and_loose() -> None:
    """``perturb.boxes``: the object's box with a little noise, or (box_margin) a loose one,
    as users drag them; the annotator's loose box for the evaluation is 15 % wider a side."""
    gt = torch.zeros(64, 48, 48, dtype=torch.bool)
    gt[:, 14:30, 10:36] = True
    snug = perturb.boxes(gt, torch.Generator().manual_seed(0))
    loose = perturb.boxes(gt, torch.Generator().manual_seed(0), margin=0.3)
    area = float(gt[0].sum())
    assert abs(float(snug.sum((1, 2)).float().mean()) / area - 1) < 0.2
    ratio = loose.sum((1, 2)).float() / area
    assert float(ratio.mean()) > 1.5 and float(ratio.min()) > 0.8 and float(ratio.max()) < 2.9
    assert (loose | ~gt).all(dim=(1, 2)).float().mean() > 0.6  # mostly the whole object
    g3 = np.zeros((3, 40, 40), bool)
    g3[1, 10:30, 5:25] = True
    _, box = first_region_prompt(g3, "box")
    _, wide = first_region_prompt(g3, "loose_box")
    assert list(box) == [8, 3, 31, 26] and list(wide) == [5, 0, 34, 29]
