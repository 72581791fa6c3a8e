"""Defaults shared by the Python API and the command line (one owner below both)."""
from __future__ import annotations

from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent.parent / 'weights'
DEFAULT_MODEL = WEIGHTS / 'ifq_tinier_yolo.ifq'            # the shipped integer model
DEFAULT_CHECKPOINT = DEFAULT_MODEL.with_suffix('.pt')       # its quantization-network checkpoint
# detect / webcam score threshold. The shipped model is trained toward the IoU of its box
# (darknet's rescore), so its scores run lower than a model trained toward 1. On the dev
# benchmark (default settings, box voting) 0.4 finds 62% of the faces with 0.66 false positives
# per image; 0.5 finds 57% with 0.33 (weights/README.md).
DEFAULT_CONF = 0.4
DEFAULT_NMS = 0.4                                           # NMS IoU threshold of every detector path
# training crop window side / image long side (log-uniform; > 1 zooms out), for 320-416 px training input
CROP_WINDOW = (0.25, 1.25)
