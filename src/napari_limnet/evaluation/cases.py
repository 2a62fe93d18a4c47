"""Real annotated volumes: the ``cases.json`` folder of ``../shared/data`` and MSD / nnU-Net folders.

Every loader returns a :class:`RealCase`: the image as a float32 (Z, Y, X) array whose axis 0 is
the slice axis, its spacing (sz, sy, sx) in mm, and label maps on the same grid as int32
(Z, Y, X) arrays.

NIfTI files are read by the package's own reader (:mod:`napari_limnet.io`), so the slice axis is
the one the plugin shows: the header's slice_dim when set, else the third voxel axis k, as
(k, j, i).

Two sources, one interface (``case_ids()``, ``load_case(id)``):

- :class:`SharedCases`: the ``cases.json`` format. Each case's ``use`` field is respected: a case
  whose use says "validation only" (or "do not train") is never returned for training, and asking
  for it with ``purpose="train"`` raises. ``configs/split.json`` decides train / validation by case.
- :class:`MSDDataset`: the Medical Segmentation Decathlon / nnU-Net raw layout (``imagesTr/``,
  ``labelsTr/``, ``dataset.json`` with ``labels`` as id -> name (MSD) or name -> id (nnU-Net v2),
  nnU-Net channel suffix ``_0000``), so users can fine-tune and evaluate on their own data.

Evaluation items (:class:`EvalObject`): ``validation_objects()`` reads
``configs/eval_objects.json`` (the objects of the validation cases of the shared split);
``msd_objects()`` builds them from every label of an MSD folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

__all__ = [
    "CaseInfo",
    "CaseSource",
    "EvalObject",
    "MSDDataset",
    "RealCase",
    "SharedCases",
    "guess_kind",
    "load_eval_objects",
    "load_split",
    "msd_objects",
    "read_nifti",
    "validation_objects",
]

Purpose = Literal["train", "validation", "any"]
NIFTI_ENDINGS = (".nii.gz", ".nii")


# --------------------------------------------------------------------------------------------
# NIfTI reading: the package's io reader (one slice-axis rule for the plugin and for training)
# --------------------------------------------------------------------------------------------


def read_nifti(
    path: str | Path, *, channel: int = 0, as_label: bool = False
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a NIfTI file as ((Z, Y, X) array, (sz, sy, sx)), axis 0 the slice axis.

    3D files go through :func:`napari_limnet.io.read_nifti` (the plugin's reader, so training,
    evaluation and the viewer see the same axes). A 4D file (MSD multi-modal images) gives its
    channel ``channel``, oriented by the same rule. Images come back as float32, labels
    (``as_label``) as int32, rounded.
    """
    import nibabel as nib

    from ..io import nifti as io_nifti
    from ..io.volume import spacing_of, world_affine_from_nifti

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    img = nib.load(str(path))
    shape = tuple(int(n) for n in img.shape)
    if len(shape) == 4 and shape[3] > 1:
        if not 0 <= channel < shape[3]:
            raise ValueError(f"{path.name}: channel {channel} not in 0..{shape[3] - 1}")
        arr = np.asanyarray(img.dataobj[..., channel])
        axis = io_nifti._slice_axis(img.header)
        axes = (axis,) + tuple(a for a in (2, 1, 0) if a != axis)
        data = np.transpose(arr, axes)
        spacing = spacing_of(world_affine_from_nifti(img.affine, axes))
    else:
        vol = io_nifti.read_nifti(path)
        data, spacing = vol.data, vol.spacing
    if as_label:
        if np.issubdtype(data.dtype, np.integer):
            out = data.astype(np.int32)
        else:
            out = np.rint(np.nan_to_num(data.astype(np.float64))).astype(np.int32)
    else:
        out = data.astype(np.float32)
    sp = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    return np.ascontiguousarray(out), sp


# --------------------------------------------------------------------------------------------
# Cases and sources
# --------------------------------------------------------------------------------------------


@dataclass
class RealCase:
    """One loaded case: image (Z, Y, X) float32, spacing (sz, sy, sx), label maps (Z, Y, X)."""

    id: str
    image: np.ndarray
    spacing: tuple[float, float, float]
    labels: dict[str, np.ndarray]
    modality: str = ""
    label_names: dict[str, dict[int, str]] = field(default_factory=dict)

    def object_mask(self, label_file: str, values: Iterable[int]) -> np.ndarray:
        """Bool (Z, Y, X) mask of the voxels of ``label_file`` whose value is in ``values``."""
        if label_file not in self.labels:
            raise ValueError(
                f"case {self.id!r} has no label file {label_file!r} "
                f"(it has: {', '.join(self.labels)})"
            )
        return np.isin(self.labels[label_file], np.asarray(list(values), dtype=np.int32))


class CaseSource(Protocol):
    """Anything evaluation can read cases from."""

    def case_ids(self) -> list[str]: ...

    def load_case(self, case_id: str) -> RealCase: ...


def _training_forbidden(use: str | None) -> bool:
    if not use:
        return False
    u = use.lower()
    return "validation only" in u or "do not train" in u or "not for training" in u


@dataclass(frozen=True)
class CaseInfo:
    """One entry of ``cases.json`` (paths resolved against its folder)."""

    id: str
    image: Path | None  # None: a label map without its image (``label_maps.json``)
    labels: dict[str, Path]
    modality: str = ""
    use: str = "any"
    names: str | None = None
    other_images: dict[str, Path] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def trainable(self) -> bool:
        """False when the case's ``use`` restricts it to validation."""
        return not _training_forbidden(self.use)


def load_split(path: str | Path | None = None) -> dict[str, list[str]]:
    """The train / validation split by case (default: the package's ``configs/split.json``)."""
    if path is None:
        text = resources.files("napari_limnet").joinpath("configs/split.json").read_text()
    else:
        text = Path(path).read_text()
    data = json.loads(text)
    return {"train": list(data.get("train", [])), "validation": list(data.get("validation", []))}


class SharedCases:
    """The ``cases.json`` folder format (``../shared/data``)."""

    def __init__(self, cases_json: str | Path, split: dict[str, list[str]] | None = None) -> None:
        p = Path(cases_json)
        if p.is_dir():
            p = p / "cases.json"
        if not p.is_file():
            raise FileNotFoundError(f"no cases.json at {p}")
        self.path = p
        self.root = p.parent
        raw = json.loads(p.read_text())
        self.label_name_tables: dict[str, dict[int, str]] = {
            k: {int(i): str(n) for i, n in v.items()}
            for k, v in raw.get("label_names", {}).items()
        }
        self.cases: dict[str, CaseInfo] = {}
        for c in raw.get("cases", []):
            known = {"id", "image", "labels", "modality", "use", "names", "other_images"}
            info = CaseInfo(
                id=str(c["id"]),
                image=self.root / c["image"],
                labels={k: self.root / v for k, v in c.get("labels", {}).items()},
                modality=str(c.get("modality", "")),
                use=str(c.get("use", "any")),
                names=c.get("names"),
                other_images={k: self.root / v for k, v in c.get("other_images", {}).items()},
                meta={k: v for k, v in c.items() if k not in known},
            )
            self.cases[info.id] = info
        # real label maps whose image is not available (``label_maps.json`` beside cases.json):
        # anatomy for images synthesised from labels (``synthetic.paint_labels``)
        self.label_maps: dict[str, CaseInfo] = {}
        maps_path = self.root / "label_maps.json"
        if maps_path.is_file():
            raw_maps = json.loads(maps_path.read_text())
            for k, v in raw_maps.get("label_names", {}).items():
                self.label_name_tables.setdefault(k, {int(i): str(n) for i, n in v.items()})
            for c in raw_maps.get("label_maps", []):
                info = CaseInfo(
                    id=str(c["id"]),
                    image=None,
                    labels={k: self.root / v for k, v in c.get("labels", {}).items()},
                    modality=str(c.get("modality", "")),
                    use=str(c.get("use", "any")),
                    names=c.get("names"),
                    meta={k: v for k, v in c.items() if k not in known},
                )
                self.label_maps[info.id] = info
        self.split = split if split is not None else load_split()

    # -- listing ------------------------------------------------------------------------------

    def case_ids(self, purpose: Purpose = "any") -> list[str]:
        """Case ids in file order: all, or those of the split's train / validation part.

        ``purpose="train"`` never returns a case whose ``use`` forbids training; a split that puts
        one into its train part is an error.
        """
        if purpose == "any":
            return list(self.cases)
        if purpose not in ("train", "validation"):
            raise ValueError(f"purpose must be 'train', 'validation' or 'any', not {purpose!r}")
        wanted = set(self.split.get(purpose, []))
        ids = [cid for cid in self.cases if cid in wanted]
        if purpose == "train":
            bad = [cid for cid in ids if not self.cases[cid].trainable]
            if bad:
                raise ValueError(
                    f"the split puts validation-only cases into training: {', '.join(bad)}"
                )
            clash = [cid for cid in ids if cid in set(self.split.get("validation", []))]
            if clash:
                raise ValueError(f"cases in both train and validation: {', '.join(clash)}")
        return ids

    def label_map_ids(self, purpose: Purpose = "any") -> list[str]:
        """Ids of the label maps without image: all, or those of the split's part."""
        if purpose == "any":
            return list(self.label_maps)
        wanted = set(self.split.get(purpose, []))
        ids = [i for i in self.label_maps if i in wanted]
        if purpose == "train":
            clash = [i for i in ids if i in set(self.split.get("validation", []))]
            if clash:
                raise ValueError(f"label maps in both train and validation: {', '.join(clash)}")
            bad = [i for i in ids if not self.label_maps[i].trainable]
            if bad:
                raise ValueError(f"the split trains on validation-only label maps: {bad}")
        return ids

    def load_label_map(
        self, map_id: str, purpose: Purpose = "any"
    ) -> tuple[dict[str, np.ndarray], tuple[float, float, float]]:
        """The label maps (name -> int32 (Z, Y, X)) and spacing of one imageless entry."""
        info = self.label_maps.get(map_id)
        if info is None:
            raise ValueError(f"unknown label map {map_id!r} in {self.root / 'label_maps.json'}")
        if purpose == "train" and (
            not info.trainable or map_id in set(self.split.get("validation", []))
        ):
            raise ValueError(f"label map {map_id!r} may not be used for training")
        labels: dict[str, np.ndarray] = {}
        spacing = (1.0, 1.0, 1.0)
        for k, path in info.labels.items():
            labels[k], spacing = read_nifti(path, as_label=True)
        return labels, spacing

    def training_cases(self) -> list[CaseInfo]:
        return [self.cases[c] for c in self.case_ids("train")]

    def validation_cases(self) -> list[CaseInfo]:
        return [self.cases[c] for c in self.case_ids("validation")]

    def info(self, case_id: str) -> CaseInfo:
        try:
            return self.cases[case_id]
        except KeyError:
            raise ValueError(f"unknown case {case_id!r} in {self.path}") from None

    def label_names(self, case_id: str) -> dict[int, str] | None:
        """id -> name for the case's label maps when ``names`` refers to a table, else None."""
        names = self.info(case_id).names
        if names is None:
            return None
        if names in self.label_name_tables:
            return dict(self.label_name_tables[names])
        found = re.findall(r"(\d+)\s+([A-Za-z][\w\- ]*?)(?=,|;|$)", names)
        return {int(i): n.strip() for i, n in found} or None

    # -- loading ------------------------------------------------------------------------------

    def check_purpose(self, case_id: str, purpose: Purpose) -> None:
        """Raise ValueError when ``case_id`` may not be used for ``purpose``."""
        info = self.info(case_id)
        if purpose == "train":
            if not info.trainable:
                raise ValueError(
                    f"case {case_id!r} may not be used for training (use: {info.use})"
                )
            if case_id in set(self.split.get("validation", [])):
                raise ValueError(f"case {case_id!r} is a validation case of the split")

    def load_case(
        self,
        case_id: str,
        purpose: Purpose = "any",
        label_files: Iterable[str] | None = None,
    ) -> RealCase:
        """Load image, spacing and label maps (all, or ``label_files``) of one case."""
        self.check_purpose(case_id, purpose)
        info = self.info(case_id)
        image, spacing = read_nifti(info.image)
        keys = list(info.labels) if label_files is None else list(label_files)
        labels: dict[str, np.ndarray] = {}
        for k in keys:
            if k not in info.labels:
                raise ValueError(f"case {case_id!r} has no label file {k!r}")
            lab, _ = read_nifti(info.labels[k], as_label=True)
            if lab.shape != image.shape:
                raise ValueError(
                    f"case {case_id!r}: label {k!r} shape {lab.shape} != image {image.shape}"
                )
            labels[k] = lab
        names = self.label_names(case_id)
        return RealCase(
            id=case_id,
            image=image,
            spacing=spacing,
            labels=labels,
            modality=info.modality,
            label_names={k: names for k in labels} if names else {},
        )


# --------------------------------------------------------------------------------------------
# Medical Segmentation Decathlon / nnU-Net raw folders
# --------------------------------------------------------------------------------------------


def _strip_ending(name: str) -> str:
    for e in NIFTI_ENDINGS:
        if name.endswith(e):
            return name[: -len(e)]
    return name


def _is_nifti(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.name.endswith(NIFTI_ENDINGS)


class MSDDataset:
    """An MSD (``Task01_...``) or nnU-Net raw (``Dataset001_...``) folder.

    ``labels``: name -> label values (an nnU-Net region may list several values). The background
    (value 0) is left out.
    """

    def __init__(self, root: str | Path, channel: int = 0) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"no such folder: {self.root}")
        self.images_dir = self.root / "imagesTr"
        self.labels_dir = self.root / "labelsTr"
        if not self.images_dir.is_dir() or not self.labels_dir.is_dir():
            raise ValueError(f"{self.root} is not an MSD / nnU-Net folder (imagesTr/, labelsTr/)")
        self.channel = int(channel)
        meta_path = self.root / "dataset.json"
        self.meta: dict[str, Any] = (
            json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        )
        self.name: str = str(self.meta.get("name") or self.root.name)
        self.labels: dict[str, tuple[int, ...]] = self._parse_labels(self.meta.get("labels", {}))
        ending = str(self.meta.get("file_ending", ".nii.gz"))
        if ending not in NIFTI_ENDINGS:
            raise ValueError(f"{self.root}: only NIfTI files are supported (file_ending {ending})")
        self._pairs: dict[str, tuple[Path, Path]] = self._find_pairs()
        if not self._pairs:
            raise ValueError(f"{self.root}: no image/label pairs found in imagesTr/ and labelsTr/")

    @staticmethod
    def _parse_labels(raw: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        out: dict[str, tuple[int, ...]] = {}
        for k, v in raw.items():
            if isinstance(v, str) and re.fullmatch(r"\d+", str(k).strip()):  # MSD: id -> name
                name, values = v, (int(k),)
            elif isinstance(v, int | float) and not isinstance(v, bool):  # nnU-Net: name -> id
                name, values = str(k), (int(v),)
            elif isinstance(v, list | tuple):  # nnU-Net region: name -> [ids]
                name, values = str(k), tuple(int(x) for x in v)
            else:
                raise ValueError(f"dataset.json: cannot read label entry {k!r}: {v!r}")
            values = tuple(x for x in values if x != 0)
            if values and name.lower() != "background":
                out[name] = values
        return out

    def _image_for(self, case_id: str) -> Path | None:
        for e in NIFTI_ENDINGS:
            for cand in (
                self.images_dir / f"{case_id}_{self.channel:04d}{e}",
                self.images_dir / f"{case_id}{e}",
            ):
                if cand.is_file():
                    return cand
        return None

    def _find_pairs(self) -> dict[str, tuple[Path, Path]]:
        pairs: dict[str, tuple[Path, Path]] = {}
        training = self.meta.get("training")
        if isinstance(training, list) and training and isinstance(training[0], dict):
            for entry in training:
                lab = self.root / str(entry["label"])
                cid = _strip_ending(lab.name)
                img = self.root / str(entry["image"])
                if not img.is_file():
                    img = self._image_for(cid) or img
                if lab.is_file() and img.is_file():
                    pairs[cid] = (img, lab)
        else:
            for lab in sorted(self.labels_dir.iterdir()):
                if not _is_nifti(lab):
                    continue
                cid = _strip_ending(lab.name)
                img = self._image_for(cid)
                if img is not None:
                    pairs[cid] = (img, lab)
        return dict(sorted(pairs.items()))

    def case_ids(self) -> list[str]:
        return list(self._pairs)

    def load_case(self, case_id: str) -> RealCase:
        if case_id not in self._pairs:
            raise ValueError(f"unknown case {case_id!r} in {self.root}")
        img_path, lab_path = self._pairs[case_id]
        image, spacing = read_nifti(img_path, channel=self.channel)
        lab, _ = read_nifti(lab_path, as_label=True)
        if lab.shape != image.shape:
            raise ValueError(f"case {case_id!r}: label shape {lab.shape} != image {image.shape}")
        names = {v: n for n, vs in self.labels.items() if len(vs) == 1 for v in vs}
        modality = ""
        mods = self.meta.get("modality") or self.meta.get("channel_names") or {}
        if isinstance(mods, dict):
            modality = str(mods.get(str(self.channel), ""))
        return RealCase(
            id=case_id,
            image=image,
            spacing=spacing,
            labels={"label": lab},
            modality=modality,
            label_names={"label": names},
        )


# --------------------------------------------------------------------------------------------
# Evaluation objects
# --------------------------------------------------------------------------------------------

_LESION_WORDS = re.compile(
    r"tumou?r|lesion|cancer|carcinom|nodule|metasta|cyst|glioma|oedema|edema|enhanc|necro|mass",
    re.IGNORECASE,
)


def guess_kind(name: str) -> str:
    """'lesion' for names that look like a lesion or tumour, else 'organ'."""
    return "lesion" if _LESION_WORDS.search(name) else "organ"


@dataclass(frozen=True)
class EvalObject:
    """One object to evaluate: the voxels of ``label_file`` whose value is in ``values``."""

    case_id: str
    label_file: str
    values: tuple[int, ...]
    name: str
    kind: str  # "organ" or "lesion"
    dataset: str

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case_id,
            "label_file": self.label_file,
            "values": list(self.values),
            "name": self.name,
            "kind": self.kind,
            "dataset": self.dataset,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EvalObject:
        kind = str(d.get("kind", "organ"))
        if kind not in ("organ", "lesion"):
            raise ValueError(f"object kind must be 'organ' or 'lesion', not {kind!r}")
        return cls(
            case_id=str(d["case"]),
            label_file=str(d.get("label_file", "label")),
            values=tuple(int(v) for v in d["values"]),
            name=str(d["name"]),
            kind=kind,
            dataset=str(d.get("dataset", "")),
        )


def load_eval_objects(path: str | Path | None = None) -> list[EvalObject]:
    """Objects listed in an eval-objects JSON file (default: ``configs/eval_objects.json``)."""
    if path is None:
        text = resources.files("napari_limnet").joinpath("configs/eval_objects.json").read_text()
    else:
        text = Path(path).read_text()
    return [EvalObject.from_json(d) for d in json.loads(text)["objects"]]


def validation_objects(
    split: dict[str, list[str]] | None = None, path: str | Path | None = None
) -> list[EvalObject]:
    """The evaluation objects of the validation cases of the split (``configs/eval_objects.json``).

    Raises if the list names a case that is not a validation case of the split.
    """
    split = split if split is not None else load_split()
    val = set(split["validation"])
    objs = load_eval_objects(path)
    outside = sorted({o.case_id for o in objs} - val)
    if outside:
        raise ValueError(f"eval objects on cases outside the validation split: {outside}")
    return objs


def object_is_usable(mask: np.ndarray, min_slices: int = 3, min_voxels: int = 50) -> bool:
    """Large enough to evaluate: present on ``min_slices`` slices and ``min_voxels`` voxels."""
    n_slices = int(np.count_nonzero(mask.any(axis=(1, 2))))
    return n_slices >= min_slices and int(np.count_nonzero(mask)) >= min_voxels


def msd_objects(
    dataset: MSDDataset,
    *,
    case_ids: Iterable[str] | None = None,
    min_slices: int = 3,
    min_voxels: int = 50,
    kinds: dict[str, str] | None = None,
) -> list[EvalObject]:
    """One object per label (all its parts) per case, skipping those too small to evaluate.

    ``kinds`` overrides :func:`guess_kind` by label name. Reads every label map once.
    """
    kinds = kinds or {}
    out: list[EvalObject] = []
    for cid in case_ids if case_ids is not None else dataset.case_ids():
        _, lab_path = dataset._pairs[cid]
        lab, _ = read_nifti(lab_path, as_label=True)
        label_items = dataset.labels or {
            f"label_{v}": (int(v),) for v in np.unique(lab).tolist() if v != 0
        }
        for name, values in label_items.items():
            m = np.isin(lab, np.asarray(values, dtype=np.int32))
            if not object_is_usable(m, min_slices, min_voxels):
                continue
            out.append(
                EvalObject(
                    case_id=cid,
                    label_file="label",
                    values=tuple(values),
                    name=name,
                    kind=kinds.get(name, guess_kind(name)),
                    dataset=dataset.name,
                )
            )
    return out
