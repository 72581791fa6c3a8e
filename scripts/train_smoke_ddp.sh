#!/usr/bin/env bash
# Training smoke checks by hand (the test suite runs the same on the tiny fixture set):
#   1. the acceptance run: 16 WIDER images at 128 px, one epoch, last.pt + metrics.jsonl;
#   2. the same under torchrun with 2 CPU processes (DistributedDataParallel, gloo).
# Usage: scripts/train_smoke_ddp.sh [WIDER_ROOT] [OUT]   (defaults: ../shared/data/wider, a temp folder)
set -euo pipefail
cd "$(dirname "$0")/.."
WIDER=${1:-../shared/data/wider}
OUT=${2:-$(mktemp -d)}
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # 2 processes on 2 cores: no thread oversubscription
ARGS=(--wider-root "$WIDER" --epochs 1 --max-images 16 --img-size 128 --batch 8 --no-val --workers 0)

"$PY" -m ifq_tinier_yolo train --out "$OUT/single" "${ARGS[@]}"
"$PY" -m torch.distributed.run --standalone --nproc_per_node 2 -m ifq_tinier_yolo train --out "$OUT/ddp" "${ARGS[@]}"
for run in single ddp; do
    "$PY" -c "import sys; from ifq_tinier_yolo.checkpoint import load_checkpoint as l; c = l(sys.argv[1]); \
print(sys.argv[1], 'epoch', c['epoch'], 'step', c['step'])" "$OUT/$run/last.pt"
    tail -n 1 "$OUT/$run/metrics.jsonl"
done
