"""Real-data loaders: NIfTI axis order, MSD / nnU-Net folders, cases.json, evaluation objects."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_limnet.evaluation.cases import (
    EvalObject,
    MSDDataset,
    SharedCases,
    guess_kind,
    load_eval_objects,
    load_split,
    msd_objects,
    read_nifti,
    validation_objects,
)


def _save(path: Path, data: np.ndarray, zooms: tuple[float, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, np.diag([*zooms[:3], 1.0]))
    img.header.set_zooms(zooms)
    nib.save(img, str(path))


def test_read_nifti_puts_the_slice_axis_first(tmp_path: Path) -> None:
    a = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    _save(tmp_path / "k.nii.gz", a, (1.0, 1.0, 3.0))
    img, sp = read_nifti(tmp_path / "k.nii.gz")
    assert img.dtype == np.float32 and img.shape == (6, 5, 4) and sp == (3.0, 1.0, 1.0)
    assert img[2, 3, 1] == a[1, 3, 2]
    # the header's slice_dim, when set, names the slice axis (the io reader's rule)
    ni = nib.Nifti1Image(a, np.diag([2.5, 1.0, 1.0, 1.0]))
    ni.header.set_dim_info(slice=0)
    nib.save(ni, str(tmp_path / "i.nii.gz"))
    img, sp = read_nifti(tmp_path / "i.nii.gz")
    assert img.shape == (4, 6, 5) and sp == pytest.approx((2.5, 1.0, 1.0))
    assert img[1, 2, 3] == a[1, 3, 2]
    _save(tmp_path / "iso.nii.gz", a, (1.0, 1.0, 1.0))
    assert read_nifti(tmp_path / "iso.nii.gz")[0].shape == (6, 5, 4)
    lab = (a % 3).astype(np.float32) + 0.001
    _save(tmp_path / "lab.nii.gz", lab, (1.0, 1.0, 3.0))
    lab_out, _ = read_nifti(tmp_path / "lab.nii.gz", as_label=True)
    assert lab_out.dtype == np.int32 and set(np.unique(lab_out)) == {0, 1, 2}
    with pytest.raises(FileNotFoundError):
        read_nifti(tmp_path / "missing.nii.gz")


def _ball(shape: tuple[int, int, int], c: tuple[int, int, int], r: float) -> np.ndarray:
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r


def make_msd(root: Path, style: str = "msd", n: int = 2) -> Path:
    """A tiny MSD (id -> name, 4D images, 'training' list) or nnU-Net (name -> id, _0000) folder."""
    shape = (16, 14, 8)  # voxel axes (i, j, k); k has the largest spacing -> 8 slices
    rng = np.random.default_rng(0)
    training = []
    for c in range(n):
        cid = f"case_{c:03d}"
        lab = np.zeros(shape, np.uint8)
        lab[_ball(shape, (8, 7, 4), 4)] = 1
        lab[_ball(shape, (8, 7, 4), 2.5)] = 2  # a small "tumour" inside the organ
        lab[0, 0, 0] = 3  # a 1-voxel label: too small to evaluate
        img = rng.normal(0, 1, shape).astype(np.float32) + 3 * (lab > 0)
        if style == "msd":
            img4 = np.stack([img, -img], axis=-1)
            _save(root / "imagesTr" / f"{cid}.nii.gz", img4, (1.0, 1.0, 4.0, 1.0))
            training.append(
                {"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"}
            )
        else:
            _save(root / "imagesTr" / f"{cid}_0000.nii.gz", img, (1.0, 1.0, 4.0))
        _save(root / "labelsTr" / f"{cid}.nii.gz", lab, (1.0, 1.0, 4.0))
    (root / "labelsTr" / "._case_000.nii.gz").write_bytes(b"macOS junk")
    if style == "msd":
        meta = {
            "name": "TinyTask",
            "modality": {"0": "MRI", "1": "inverted"},
            "labels": {"0": "background", "1": "organ", "2": "tumour", "3": "speck"},
            "training": training,
        }
    else:
        meta = {
            "name": "TinyNN",
            "channel_names": {"0": "CT"},
            "labels": {"background": 0, "organ": 1, "tumour": 2, "speck": 3, "whole": [1, 2]},
            "file_ending": ".nii.gz",
        }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("style", ["msd", "nnunet"])
def test_msd_folder(tmp_path: Path, style: str) -> None:
    ds = MSDDataset(make_msd(tmp_path / style, style))
    assert ds.case_ids() == ["case_000", "case_001"]
    assert ds.labels["organ"] == (1,) and ds.labels["tumour"] == (2,)
    case = ds.load_case("case_001")
    assert case.image.shape == (8, 14, 16) and case.spacing == (4.0, 1.0, 1.0)
    assert case.labels["label"].shape == case.image.shape
    assert case.label_names["label"][2] == "tumour"
    organ = case.object_mask("label", [1, 2])
    assert organ.sum() == _ball((16, 14, 8), (8, 7, 4), 4).sum()
    # the image channel: 0 by default, another on request (MSD 4D files)
    if style == "msd":
        assert case.modality == "MRI"
        other = MSDDataset(tmp_path / style, channel=1).load_case("case_001")
        np.testing.assert_allclose(other.image, -case.image)
    else:
        assert ds.labels["whole"] == (1, 2)
    objs = msd_objects(ds)
    names = {o.name for o in objs}
    assert "speck" not in names  # too small
    assert {"organ", "tumour"} <= names
    kinds = {o.name: o.kind for o in objs}
    assert kinds["organ"] == "organ" and kinds["tumour"] == "lesion"
    assert all(o.dataset == ds.name for o in objs)
    with pytest.raises(ValueError):
        ds.load_case("nope")


def test_msd_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        MSDDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError):
        MSDDataset(tmp_path / "empty")


def test_guess_kind() -> None:
    assert guess_kind("tumour") == "lesion" and guess_kind("Tumor") == "lesion"
    assert guess_kind("kidney cyst") == "lesion" and guess_kind("liver") == "organ"


def _tiny_cases(root: Path) -> Path:
    shape = (10, 10, 6)
    lab = np.zeros(shape, np.uint8)
    lab[2:8, 2:8, 1:5] = 1
    for cid in ("a", "b", "nc"):
        _save(root / cid / "image.nii.gz", np.ones(shape, np.int16), (1.0, 1.0, 2.0))
        _save(root / cid / "label.nii.gz", lab, (1.0, 1.0, 2.0))
    cases = [
        {
            "id": "a",
            "image": "a/image.nii.gz",
            "labels": {"label": "a/label.nii.gz"},
            "names": "t",
        },
        {"id": "b", "image": "b/image.nii.gz", "labels": {"label": "b/label.nii.gz"}},
        {
            "id": "nc",
            "image": "nc/image.nii.gz",
            "labels": {"label": "nc/label.nii.gz"},
            "use": "validation only: non-commercial licence, do not train shipped weights on it",
            "names": "1 necrosis, 2 oedema",
        },
    ]
    (root / "cases.json").write_text(
        json.dumps({"cases": cases, "label_names": {"t": {"1": "box"}}})
    )
    return root / "cases.json"


def test_cases_json_use_and_split(tmp_path: Path) -> None:
    path = _tiny_cases(tmp_path)
    sc = SharedCases(path, split={"train": ["a"], "validation": ["b", "nc"]})
    assert sc.case_ids() == ["a", "b", "nc"]
    assert sc.case_ids("train") == ["a"] and sc.case_ids("validation") == ["b", "nc"]
    case = sc.load_case("a", purpose="train")
    assert case.image.shape == (6, 10, 10) and case.spacing == (2.0, 1.0, 1.0)
    assert case.labels["label"].sum() == 6 * 6 * 4
    assert case.label_names["label"] == {1: "box"}
    assert sc.label_names("nc") == {1: "necrosis", 2: "oedema"}
    assert not sc.info("nc").trainable and sc.info("a").trainable
    with pytest.raises(ValueError, match="training"):
        sc.load_case("nc", purpose="train")
    with pytest.raises(ValueError, match="validation"):
        sc.load_case("b", purpose="train")  # a validation case of the split
    assert sc.load_case("nc", purpose="validation").labels["label"].any()
    # a split that puts the validation-only case into training is refused
    bad = SharedCases(path, split={"train": ["a", "nc"], "validation": ["b"]})
    with pytest.raises(ValueError, match="validation-only"):
        bad.case_ids("train")
    with pytest.raises(ValueError):
        sc.load_case("unknown")
    with pytest.raises(ValueError):
        sc.load_case("a", label_files=["nope"])


def test_eval_objects_config_is_consistent() -> None:
    split = load_split()
    objs = validation_objects(split)
    assert len(objs) >= 20
    assert {o.kind for o in objs} == {"organ", "lesion"}
    assert {o.case_id for o in objs} <= set(split["validation"])
    assert not set(split["train"]) & set(split["validation"])
    assert len({(o.case_id, o.label_file, o.values) for o in objs}) == len(objs)
    o = objs[0]
    assert EvalObject.from_json(o.to_json()) == o
    with pytest.raises(ValueError, match="outside the validation split"):
        validation_objects({"train": [], "validation": ["mr_brain_aseg"]})
    assert load_eval_objects() == objs


def test_training_check_samples_are_on_training_cases_and_disjoint() -> None:
    split = load_split()
    # experiment samples: kept with the training record, not shipped in the package
    cfg = Path(__file__).resolve().parents[2] / "docs" / "training" / "check_objects"
    samples = [
        {(o.case_id, o.label_file, o.values) for o in load_eval_objects(str(cfg / name))}
        for name in (
            "check_objects_train.json",
            "check_objects_train2.json",
            "check_objects_train3.json",
        )
    ]
    assert [len(s) for s in samples] == [37, 31, 52]
    for s in samples:
        assert {c for c, _, _ in s} <= set(split["train"])
    assert not samples[0] & samples[1]
    assert not (samples[0] | samples[1]) & samples[2]


@pytest.mark.shared_data
def test_shared_cases(shared_data: Path) -> None:
    sc = SharedCases(shared_data)
    train = sc.case_ids("train")
    assert train and not any(c.startswith("mr_glioma_brats") for c in train)
    with pytest.raises(ValueError):
        sc.load_case("mr_glioma_brats_pat0005", purpose="train")
    case = sc.load_case("mr_spinalcord_sct_t2s", purpose="validation")
    assert case.spacing == pytest.approx((7.5, 0.5, 0.5), rel=1e-5)
    assert case.image.shape == (9, 54, 49)
    assert set(case.labels) == {"cord", "grey_matter"}
    names = sc.label_names("ct_abdomen_totalseg_dicom")
    assert names is not None and names[5] == "liver"


@pytest.mark.shared_data
def test_eval_objects_exist_in_shared_data(shared_data: Path) -> None:
    sc = SharedCases(shared_data)
    labels: dict[tuple[str, str], np.ndarray] = {}
    for o in validation_objects():
        key = (o.case_id, o.label_file)
        if key not in labels:
            labels[key], _ = read_nifti(sc.info(o.case_id).labels[o.label_file], as_label=True)
        m = np.isin(labels[key], o.values)
        n_slices = int(m.any(axis=(1, 2)).sum())
        assert n_slices >= 3 and m.sum() >= 50, (o.case_id, o.name, n_slices)
