#!/usr/bin/env bash
# The recipe of the shipped model: float warm-up, then binary-weight / 2-bit HWGQ fine-tune,
# then the integrated conversion. Every stage resumes from its run folder when re-run
# (interrupt it any time). Usage: bash scripts/train_shipped.sh [WIDER_ROOT]
set -euo pipefail
cd "$(dirname "$0")/.."
WIDER=${1:-../shared/data/wider}
PY=.venv/bin/python
FLOAT_EPOCHS=${FLOAT_EPOCHS:-16}
HWGQ_EPOCHS=${HWGQ_EPOCHS:-24}

resume() { [ -f "$1/last.pt" ] && echo --resume || true; }

# 1. float warm-up (ReLU, float weights), 320 px crops
$PY -m ifq_tinier_yolo train --wider-root "$WIDER" --out runs/float1 --quant float \
    --epochs "$FLOAT_EPOCHS" --img-size 320 --batch 16 --lr 2e-3 --no-val $(resume runs/float1)
# 2. quantization network: binary weights + 2-bit HWGQ, initialised from the float run
$PY -m ifq_tinier_yolo train --wider-root "$WIDER" --out runs/hwgq1 --quant hwgq \
    --init runs/float1/last.pt --epochs "$HWGQ_EPOCHS" --img-size 320 --batch 16 --lr 1e-3 \
    --warmup 0.5 $(resume runs/hwgq1)
# 3. ship: weights-only checkpoint and the integer model
$PY scripts/export_weights.py runs/hwgq2/best.pt weights/ifq_tinier_yolo.pt --img-size 512
$PY -m ifq_tinier_yolo convert weights/ifq_tinier_yolo.pt --out weights/ifq_tinier_yolo.ifq --img-size 512
