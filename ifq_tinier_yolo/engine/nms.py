"""Greedy non-maximum suppression with box voting, on integer or float boxes."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def _greedy(boxes: np.ndarray, ranks: np.ndarray, iou_num: int, iou_den: int,
            contain_num: int | None) -> Iterator[tuple[int, np.ndarray]]:
    """Greedy NMS: yields (kept index, indices it suppressed by IoU), best rank first (ties:
    lower index first). A box is suppressed when IoU > iou_num / iou_den with a kept box, tested
    by cross-multiplication (inter * den > num * union) so integer boxes need no division and no
    float; with contain_num, also (without voting) when more than contain_num / iou_den of its
    own area lies inside a kept box."""
    order = np.lexsort((np.arange(len(ranks)), -ranks))
    if iou_num >= iou_den and contain_num is None:   # no IoU exceeds 1: every box is kept, alone
        yield from ((int(i), order[:0]) for i in order)
        return
    boxes = boxes.astype(np.int64) if np.issubdtype(boxes.dtype, np.integer) else boxes.astype(np.float64)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = order[0]
        rest = order[1:]
        iw = np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])
        ih = np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])
        inter = np.maximum(iw, 0) * np.maximum(ih, 0)
        union = area[i] + area[rest] - inter
        by_iou = inter * iou_den > iou_num * union
        gone = by_iou if contain_num is None else by_iou | (inter * iou_den > contain_num * area[rest])
        yield i, rest[by_iou]
        order = rest[~gone]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_num: int, iou_den: int,
        contain_num: int | None = None) -> np.ndarray:
    """Indices kept by greedy NMS (`_greedy`), best score first.

    boxes: (N, 4) x1, y1, x2, y2 (integers or floats; areas use x2 - x1); scores (N,) rank them."""
    return np.asarray([i for i, _ in _greedy(boxes, scores, iou_num, iou_den, contain_num)], dtype=np.int64)


def nms_vote(boxes: np.ndarray, ranks: np.ndarray, weights: np.ndarray, iou_num: int, iou_den: int,
             contain_num: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy NMS whose kept boxes are voted: each becomes the weighted mean of itself and the
    boxes it suppressed by IoU (weights: the scores). A face draws several overlapping boxes and
    their mean fits it better than the best-scored one alone. Returns (kept indices, best first;
    their voted boxes (K, 4), same dtype as boxes).

    Integer boxes and weights stay integer: each coordinate is sum(w * b) / sum(w) rounded half
    up (floor((2 * sum(w * b) + sum(w)) / (2 * sum(w)))); a box whose voters weigh 0 is kept as is.
    """
    integer = np.issubdtype(boxes.dtype, np.integer)
    b = boxes.astype(np.int64) if integer else boxes.astype(np.float64)
    w = weights.astype(np.int64) if integer else weights.astype(np.float64)
    keep, owner = [], np.full(len(b), -1, dtype=np.int64)   # owner: the kept box each box votes for
    for k, (i, losers) in enumerate(_greedy(boxes, ranks, iou_num, iou_den, contain_num)):
        keep.append(i)
        owner[i] = k
        owner[losers] = k
    keep = np.asarray(keep, dtype=np.int64)
    voters = np.flatnonzero(owner >= 0)
    total = np.zeros(len(keep), dtype=w.dtype)
    mass = np.zeros((len(keep), 4), dtype=b.dtype)
    np.add.at(total, owner[voters], w[voters])
    np.add.at(mass, owner[voters], w[voters, None] * b[voters])
    den = np.where(total > 0, total, 1)[:, None]   # a zero total keeps its box (below)
    mean = (2 * mass + den) // (2 * den) if integer else mass / den
    voted = np.where((total > 0)[:, None], mean, b[keep])
    return keep, voted.reshape(-1, 4).astype(boxes.dtype, copy=False)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (N, M) of float x1, y1, x2, y2 boxes a (N, 4) and b (M, 4); 0 where the union is empty."""
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a, area_b = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)


IOU_DEN = 1000   # a user's IoU threshold becomes the integer ratio round(iou * IOU_DEN) / IOU_DEN


def iou_ratio(v: float | None) -> int | None:
    """A user threshold in [0, 1] -> its numerator over IOU_DEN (None stays None)."""
    return None if v is None else round(v * IOU_DEN)


def nms_vote_at(boxes: np.ndarray, ranks: np.ndarray, weights: np.ndarray, iou: float,
                contain: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`nms_vote` with user thresholds in [0, 1], turned into integer ratios."""
    return nms_vote(boxes, ranks, weights, iou_ratio(iou), IOU_DEN, iou_ratio(contain))
