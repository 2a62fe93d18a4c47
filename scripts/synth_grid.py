"""Save a PNG grid of the real training stacks as the interaction stage sees them.

Each tile is the first slice of one stack after ``Batches.get`` (real intensities, or
intensities synthesised from the labels: always for label maps without image), min-max scaled,
with the target's outline in red. Look at it before training on a new data mix.

    python scripts/synth_grid.py --cases ../shared/data/cases.json --out synth_grid.png
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from napari_limnet.engine.preprocess import CROP
from napari_limnet.training.batches import Batches, load_training_volumes
from napari_limnet.training.real_bank import build_bank


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", required=True)
    ap.add_argument("--out", default="synth_grid.png")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--label-synth", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    vols = load_training_volumes(args.cases)
    bank = build_bank(vols, args.n, 1, CROP, args.seed, keep_labels=True, union_fraction=0.15)
    data = Batches(bank, args.seed, torch.device("cpu"))
    img, tgt = data.get(args.n, 1, 1.0, label_synth=args.label_synth)
    tiles = []
    for i in range(args.n):
        x = img[i, 0].numpy().astype(np.float64)
        lo, hi = np.percentile(x, [1, 99])
        g = (np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
        rgb = np.stack([g, g, g], -1)
        t = tgt[i, 0].numpy()
        edge = t & ~(np.roll(t, 1, 0) & np.roll(t, -1, 0) & np.roll(t, 1, 1) & np.roll(t, -1, 1))
        rgb[edge] = (255, 0, 0)
        tiles.append(rgb)
    cols = 8
    rows = [np.concatenate(tiles[r * cols : (r + 1) * cols], 1) for r in range(args.n // cols)]
    Image.fromarray(np.concatenate(rows, 0)).save(args.out)
    n_synth = 0 if bank.synth_only is None else int(bank.synth_only.sum())
    print(f"wrote {args.out}: {args.n} stacks, {n_synth} cut from label maps without image")


if __name__ == "__main__":
    main()
