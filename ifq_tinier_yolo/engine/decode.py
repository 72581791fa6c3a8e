"""YOLOv2 region decoding (darknet): head output -> boxes and scores in network pixels.

`decode_float` is the float reference, used by the torch backend and as the bound for the
fixed-point decoder of the integer engine.
"""
from __future__ import annotations

import numpy as np

from ..netdef import VALUES_PER_ANCHOR


def decode_float(head: np.ndarray, anchors: np.ndarray, stride: int,
                 conf: float) -> tuple[np.ndarray, np.ndarray]:
    """head: float (A*5, H, W) raw outputs; anchors (A, 2) in cells -> (boxes (N, 4) float64
    x1, y1, x2, y2 in network pixels, scores (N,)) for score = sigmoid(objectness) >= conf."""
    na = len(anchors)
    _, gh, gw = head.shape
    p = head.astype(np.float64).reshape(na, VALUES_PER_ANCHOR, gh, gw)   # (A, 5, H, W)
    score = 1 / (1 + np.exp(-p[:, 4]))
    a, r, c = np.nonzero(score >= conf)
    sig = 1 / (1 + np.exp(-p[a, :2, r, c]))                             # (N, 2)
    cx = (c + sig[:, 0]) * stride
    cy = (r + sig[:, 1]) * stride
    w = np.exp(np.minimum(p[a, 2, r, c], 10)) * anchors[a, 0] * stride
    h = np.exp(np.minimum(p[a, 3, r, c], 10)) * anchors[a, 1] * stride
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    return boxes, score[a, r, c]
