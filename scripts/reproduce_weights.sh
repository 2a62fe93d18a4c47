#!/usr/bin/env bash
# Reproduce the shipped weights (src/napari_limnet/weights/limnet_default.pt), in three steps:
#   1. base training of the three networks (one GPU, ~10 min; see scripts/train_gpu.sh);
#   2. CPU fine-tuning of the interaction and memory networks from the base weights
#      (configs/finetune_cpu.json: two parallel processes of one thread each, 70 min);
#   3. the scorer fine-tuned on fusion decisions of simulated rounds that the step-2 networks
#      make on the training cases, with the fusion threshold chosen on held-out objects
#      (configs/scorer_rounds.json, ~15 min on 2 CPU threads).
# Every step resumes from its run folder's checkpoints when re-run.
#   scripts/reproduce_weights.sh [CASES] [OUT]
set -euo pipefail
CASES=${1:-../shared/data/cases.json}
OUT=${2:-runs/reproduce}
CFG=src/napari_limnet/configs
export PYTHONUNBUFFERED=1
train() { python3 -m napari_limnet.training --cases "$CASES" "$@"; }
if [ ! -f "$OUT/base.pt" ]; then
  train --config $CFG/train_gpu.json --out "$OUT/base" --parallel --export "$OUT/base.pt"
fi
if [ ! -f "$OUT/tuned.pt" ]; then
  train --config $CFG/finetune_cpu.json --out "$OUT/tune" --init-weights "$OUT/base.pt" \
    --stage interaction,memory --parallel --export "$OUT/tuned.pt"
fi
train --config $CFG/scorer_rounds.json --out "$OUT/scorer" --init-weights "$OUT/tuned.pt" \
  --stage scorer --export "$OUT/limnet_default.pt"
echo "weights: $OUT/limnet_default.pt"
