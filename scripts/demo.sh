#!/usr/bin/env bash
# First command of a fresh clone: set up .venv, then detect faces on the bundled samples with
# the integer model, writing annotated images to runs/demo/ and the faces as JSON lines.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" requirements.txt
.venv/bin/python -m ifq_tinier_yolo detect data/samples --out runs/demo --json -
echo "annotated images in runs/demo/" >&2
