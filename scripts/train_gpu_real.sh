#!/usr/bin/env bash
# The real-anatomy recipe on one GPU in about 10 minutes: the stacks are cut by 14 worker
# processes (about a minute), the 2.5D interaction network is fine-tuned for 7 minutes in bf16
# (docs/training/real_anatomy/i_real_gpu.json), and the candidate weights are written beside
# the run. Run from the repository root with ../shared/data beside it.
#   scripts/train_gpu_real.sh [OUT]
set -euo pipefail
OUT=${1:-runs/i_real_gpu}
export PYTHONUNBUFFERED=1
python3 scripts/real_anatomy.py members
python3 -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
limnet train --config docs/training/real_anatomy/i_real_gpu.json --out "$OUT" --stage interaction --no-progress
python3 scripts/real_anatomy.py candidate "$OUT" "$OUT/limnet_real.pt"
tail -3 "$OUT/interaction.log.jsonl"
