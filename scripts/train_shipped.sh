#!/usr/bin/env bash
# The recipe of the v1 model, weights/v1.* (weights/README.md; the shipped v2 model grows from it): float warm-up, then the binary-weight /
# 2-bit HWGQ quantization network, then the integrated conversion. Each stage resumes from its
# run folder when re-run, so interrupt it any time and run it again.
# Usage: bash scripts/train_shipped.sh [WIDER_ROOT]
set -euo pipefail
cd "$(dirname "$0")/.."
WIDER=${1:-../shared/data/wider}
PY=.venv/bin/python

resume() { [ -f "$1/last.pt" ] && echo --resume || true; }

# 1. float warm-up (ReLU, float weights), 320 px crops; a 16-epoch schedule paused after epoch 7
$PY -m ifq_tinier_yolo train --wider-root "$WIDER" --out runs/float1 --quant float \
    --epochs 16 --stop-after 7 --img-size 320 --batch 16 --lr 2e-3 --no-val $(resume runs/float1)
# 2. quantization network: binary weights + 2-bit HWGQ, initialised from the float run
$PY -m ifq_tinier_yolo train --wider-root "$WIDER" --out runs/hwgq1 --quant hwgq \
    --init runs/float1/last.pt --epochs 14 --img-size 320 --batch 16 --lr 1e-3 --warmup 0.5 \
    $(resume runs/hwgq1)
# 3. a second HWGQ schedule from the best epoch of the first, lower peak learning rate
$PY -m ifq_tinier_yolo train --wider-root "$WIDER" --out runs/hwgq2 --quant hwgq \
    --init runs/hwgq1/best.pt --epochs 14 --img-size 320 --batch 16 --lr 6e-4 --warmup 0.3 \
    $(resume runs/hwgq2)
# 4. a third, longer HWGQ schedule from the best epoch of the second, validated at 512 px
$PY -m ifq_tinier_yolo train --wider-root "$WIDER" --out runs/hwgq3 --quant hwgq \
    --init runs/hwgq2/best.pt --epochs 42 --img-size 320 --val-size 512 --batch 16 --lr 8e-4 --warmup 0.3 \
    $(resume runs/hwgq3)
# 5. a fourth HWGQ schedule from the best epoch of the third, lower peak learning rate, with a
#    weight moving average that is validated (at 576 px) and saved
$PY -m ifq_tinier_yolo train --wider-root "$WIDER" --out runs/hwgq4 --quant hwgq \
    --init runs/hwgq3/best.pt --epochs 32 --img-size 320 --val-size 576 --batch 16 --lr 4e-4 --warmup 0.3 \
    --set ema=0.998 $(resume runs/hwgq4)
# 6. ship: the best validation epoch, run at 576 px, weights only, and the integer model
$PY scripts/export_weights.py runs/hwgq4/best.pt weights/v1.pt --img-size 576
$PY -m ifq_tinier_yolo convert weights/v1.pt --out weights/v1.ifq
