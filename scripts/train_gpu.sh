#!/usr/bin/env bash
# Train the default weights on one GPU (the shipped weights were made this way; see the
# model card). The three stages run as parallel processes on the same card, then export.
#   scripts/train_gpu.sh [CASES] [OUT]
# CASES: ../shared/data/cases.json, or a folder of .npz volumes written by
# napari_limnet.training.batches.export_training_volumes (for a machine without nibabel).
set -euo pipefail
CASES=${1:-../shared/data/cases.json}
OUT=${2:-runs/gpu}
export PYTHONUNBUFFERED=1
python3 -m napari_limnet.commands.train --config src/napari_limnet/configs/train_gpu.json \
  --cases "$CASES" --out "$OUT" --parallel --export "$OUT/limnet_default.pt"
