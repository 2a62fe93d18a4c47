#!/usr/bin/env bash
# Train several one-stage configs at once on one GPU (one process each), then export each
# run as a weights file whose other networks are the shipped ones, ready for `limnet eval
# --weights`. For short comparisons on a lent GPU (continuation runs and base trainings of
# the interaction network were compared this way: docs/decisions.md, "Training recipe").
#   scripts/train_gpu_variants.sh CONFIG_DIR DATA OUT [SECONDS_LIMIT]
# CONFIG_DIR: *.json `limnet train` configs, each with exactly one stage and its own "out".
# DATA: ../shared/data/cases.json, "" (each config's own "cases"), or a folder of .npz volumes written by
#   python -c "from napari_limnet.training.batches import export_training_volumes as e; e('../shared/data/cases.json', '.gpu/data')"
#   (the GPU machine has no NIfTI reader; carry that folder).
# OUT: the exported weights (<config name>.pt) and logs.tgz go here.
# SECONDS_LIMIT: hard stop per process (default 560; keep it above the configs' "seconds"
#   plus the real-stack cutting at start, about 60 s).
set -uo pipefail
CONFIGS=${1:?config folder}
DATA=${2?cases.json, .npz folder, or an empty string for the configs own cases}
OUT=${3:?output folder}
LIMIT=${4:-560}
PY=${PYTHON:-python3}
cases_arg=()
[ -n "$DATA" ] && cases_arg=(--cases "$DATA")
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
echo "start $(date +%T)"
cfg_field() { "$PY" -c "import json,sys; c=json.load(open(sys.argv[1])); print($2)" "$1"; }
pids=() names=() runs=()
for cfg in "$CONFIGS"/*.json; do
  name=$(basename "$cfg" .json)
  stage=$(cfg_field "$cfg" "next(iter(c['stages']))")
  run=$(cfg_field "$cfg" "c['out']")
  names+=("$name") runs+=("$run")
  mkdir -p "$run"
  timeout "$LIMIT" "$PY" -m napari_limnet.commands.train --config "$cfg" "${cases_arg[@]}" \
    --stage "$stage" --no-progress >"$run/stdout" 2>&1 &
  pids+=($!)
  echo "$name: stage $stage, pid ${pids[-1]}, run folder $run"
done
smi=""
if command -v nvidia-smi >/dev/null; then  # GPU use once a minute, into the logs
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 60 >"$OUT/gpu_use.csv" 2>&1 &
  smi=$!
fi
failed=0
for p in "${pids[@]}"; do
  wait "$p"; rc=$?
  echo "pid $p exit $rc"
  [ "$rc" -eq 0 ] || failed=1  # 124: stopped by SECONDS_LIMIT; its last checkpoint is exported
done
[ -n "$smi" ] && kill "$smi" 2>/dev/null
[ -f "$OUT/gpu_use.csv" ] && cat "$OUT/gpu_use.csv"
echo "trained $(date +%T)"
for i in "${!names[@]}"; do
  name=${names[$i]} run=${runs[$i]}
  "$PY" -c "
import sys
from napari_limnet.engine.model import default_weights_path
from napari_limnet.training.weights import export
export(sys.argv[1], sys.argv[2], {'config': sys.argv[3]}, default_weights_path())
" "$run" "$OUT/$name.pt" "$name" || { echo "export $name failed"; failed=1; }
  tail -n 2 "$run"/*.log.jsonl
  tail -n 3 "$run/stdout"
done
tar czf "$OUT/logs.tgz" --exclude='*.ckpt' --exclude='*.tmp' "${runs[@]}" 2>/dev/null
rm -f "$OUT"/*.sha256
ls -la "$OUT"
echo "end $(date +%T)"
exit "$failed"
