"""Box conventions, one owner for each conversion (numpy only: the engine imports this module).

- xywh: x, y (top-left corner), w, h, in pixels; detections add a score column (N, 5).
- corners (xyxy): x1, y1, x2, y2 with x2 = x + w, y2 = y + h (no +1: boxes are real-valued).
- FDDB ellipse: ra, rb, angle, cx, cy as the FDDB annotations write them
  (shared/reference/fddb/FDDB-folds): ra is the major semi-axis and angle its direction in
  radians, 1.570796 (pi/2 to 6 decimals) for a vertical major axis, 0 for a horizontal one.
- anchors: float (A, 2) w, h in grid cells -> int64 in 2**-ANCHOR_FRAC_BITS cells (rounded half
  to even, as np.round).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .engine.model import ANCHOR_FRAC_BITS

FDDB_VERTICAL = 1.570796   # angle of a tall ellipse as the FDDB files write it (pi/2, 6 decimals)


def corners(xywh: np.ndarray) -> np.ndarray:
    """(N, >=4) x, y, w, h -> (N, 4) x1, y1, x2, y2 with x2 = x + w (extra columns dropped)."""
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:4]], axis=1)


def detection_rows(xyxy: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(N, 4) x1, y1, x2, y2 and (N,) scores -> (N, 5) x, y, w, h, score (dtype as numpy promotes)."""
    return np.column_stack([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2], scores])


def fddb_ellipses(xywh: np.ndarray) -> np.ndarray:
    """(N, >=4) x, y, w, h -> float64 (N, 5) ra, rb, angle, cx, cy: the ellipse inscribed in each box.

    The major semi-axis comes first, as in the FDDB annotations: vertical (FDDB_VERTICAL) when
    the box is at least as tall as wide, else horizontal (angle 0).
    """
    b = np.asarray(xywh, dtype=np.float64)[:, :4]
    tall = b[:, 3] >= b[:, 2]
    return np.column_stack([np.maximum(b[:, 2], b[:, 3]) / 2, np.minimum(b[:, 2], b[:, 3]) / 2,
                            np.where(tall, FDDB_VERTICAL, 0.0),
                            b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2])


def anchors_fixed(anchors: ArrayLike) -> np.ndarray:
    """Float anchors (A, 2) w, h in grid cells -> int64 (A, 2) in 2**-ANCHOR_FRAC_BITS cells, rounded
    half to even."""
    a = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    return np.round(a * (1 << ANCHOR_FRAC_BITS)).astype(np.int64)
