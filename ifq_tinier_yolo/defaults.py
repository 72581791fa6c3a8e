"""Defaults shared by the Python API and the command line (one owner below both)."""
from __future__ import annotations

from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent.parent / 'weights'
DEFAULT_MODEL = WEIGHTS / 'ifq_tinier_yolo.ifq'            # the shipped integer model
DEFAULT_CHECKPOINT = DEFAULT_MODEL.with_suffix('.pt')       # its quantization-network checkpoint
# detect / webcam score threshold. Shipped model on the dev benchmark: 0.7 finds 55% of the faces
# with 0.8 false positives per image; 0.6 finds 57% with 1.4 (weights/README.md).
DEFAULT_CONF = 0.7
DEFAULT_NMS = 0.45                                          # NMS IoU threshold of every detector path
