"""Training batches: synthetic stacks mixed with stacks cut from real cases, the fixed
validation stacks, and the training volumes of a case list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..engine.networks import CROP
from .real_bank import LabelledVolume, RealBank
from .synthetic import generate, paint_labels


class Batches:
    """Mixed synthetic / real stacks with flips and 90-degree rotations."""

    def __init__(self, bank: RealBank | None, seed: int, device: torch.device) -> None:
        self.bank = bank
        self.pairs = None  # scorer stage: PairBank of real fusion decisions, if any
        self.device = device
        self.g = torch.Generator(device=device).manual_seed(seed)

    def get(
        self,
        batch: int,
        frames: int,
        real_fraction: float,
        compartments: float = 0.0,
        label_synth: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_real = int(round(batch * real_fraction)) if self.bank is not None else 0
        syn = generate(batch - n_real, frames, CROP, self.g, self.device, compartments)
        img, tgt = syn.image, syn.target
        if n_real:
            idx = torch.randint(len(self.bank), (n_real,), generator=self.g, device=self.device)
            real = self.bank.image[idx, :frames].float()
            if label_synth > 0 or self.bank.synth_only is not None:
                if self.bank.labels is None:
                    raise ValueError("label_synth needs a bank built with keep_labels=True")
                redraw = torch.rand(n_real, generator=self.g, device=self.device) < label_synth
                if self.bank.synth_only is not None:  # label maps without image: always
                    redraw |= self.bank.synth_only[idx]
                if redraw.any():
                    labels = self.bank.labels[idx[redraw], :frames]
                    real[redraw] = paint_labels(labels, self.g, real[redraw])
            img = torch.cat([img, real])
            tgt = torch.cat([tgt, self.bank.target[idx, :frames]])
        k = int(torch.randint(4, (1,), generator=self.g, device=self.device).item())
        img, tgt = torch.rot90(img, k, (2, 3)), torch.rot90(tgt, k, (2, 3))
        if torch.rand(1, generator=self.g, device=self.device).item() < 0.5:
            img, tgt = img.flip(3), tgt.flip(3)
        return img.contiguous(), tgt.contiguous()


class FixedBatches(Batches):
    """The validation stacks in order, no synthetic ones, no flips: the same data every time."""

    def __init__(self, bank: RealBank, device: torch.device) -> None:
        super().__init__(bank, 0, device)
        self._next = 0

    def get(
        self,
        batch: int,
        frames: int,
        real_fraction: float,
        compartments: float = 0.0,
        label_synth: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        idx = (torch.arange(batch) + self._next) % len(self.bank)
        self._next += batch
        idx = idx.to(self.bank.image.device)
        return self.bank.image[idx, :frames].float(), self.bank.target[idx, :frames]


def is_npz_folder(cases: str) -> bool:
    """``cases`` names a folder of ``.npz`` training volumes rather than a case list."""
    return Path(cases).is_dir() and not (Path(cases) / "cases.json").exists()


def load_training_volumes(cases: str, split: str = "") -> list[LabelledVolume]:
    """Every label map of the split's ``train`` cases (validation-only cases are refused).

    ``cases`` is a ``cases.json``, or a folder of ``.npz`` volumes written by
    ``export_training_volumes`` (for machines without the NIfTI readers).
    """
    if is_npz_folder(cases):
        out = []
        for f in sorted(Path(cases).glob("*.npz")):
            z = np.load(f)
            sp = tuple(float(v) for v in z["spacing"])
            out.append(LabelledVolume(z["image"].astype(np.float32), z["labels"], sp, f.stem))
        if not out:
            raise ValueError(f"no .npz training volumes in {cases}")
        return out

    return case_volumes(cases, split, "train")


def case_volumes(cases: str, split: str, purpose: str) -> list[LabelledVolume]:
    from ..evaluation.cases import SharedCases, load_split

    source = SharedCases(cases, load_split(split or None))
    out = []
    for cid in source.case_ids(purpose):  # type: ignore[arg-type]
        case = source.load_case(cid, purpose=purpose)  # type: ignore[arg-type]
        origin = str(source.info(cid).meta.get("source", cid))
        for name, lab in case.labels.items():
            out.append(LabelledVolume(case.image, lab, case.spacing, f"{cid}/{name}", origin))
    for mid in source.label_map_ids(purpose):  # type: ignore[arg-type]
        maps, spacing = source.load_label_map(mid, purpose=purpose)  # type: ignore[arg-type]
        origin = str(source.label_maps[mid].meta.get("source", mid))
        for name, lab in maps.items():
            out.append(LabelledVolume(None, lab, spacing, f"{mid}/{name}", origin))
    return out


def export_training_volumes(cases: str, folder: str | Path, split: str = "") -> list[Path]:
    """Write the training volumes of ``cases`` as compressed ``.npz`` files into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for v in load_training_volumes(cases, split):
        if v.image is None:
            continue  # (label maps without image are read from the cases folder itself)
        p = folder / (v.name.replace("/", "__") + ".npz")
        img = v.image
        if np.array_equal(img, np.round(img)) and np.abs(img).max() < 32000:
            img = img.astype(np.int16)
        np.savez_compressed(
            p, image=img, labels=v.labels.astype(np.int16), spacing=np.array(v.spacing)
        )
        paths.append(p)
    return paths


# --- losses ----------------------------------------------------------------------------------
