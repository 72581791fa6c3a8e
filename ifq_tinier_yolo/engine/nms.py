"""Greedy non-maximum suppression on integer or float boxes."""
from __future__ import annotations

import numpy as np



def nms(boxes: np.ndarray, scores: np.ndarray, iou_num: int, iou_den: int,
        contain_num: int | None = None) -> np.ndarray:
    """Indices kept by greedy NMS, best score first (ties: lower index first).

    boxes: (N, 4) x1, y1, x2, y2 (integers or floats; areas use x2 - x1). A box is suppressed
    when IoU > iou_num / iou_den with a kept box, tested by cross-multiplication
    (inter * den > num * union) so integer boxes need no division and no float; with
    contain_num, also when more than contain_num / iou_den of its own area lies inside a kept box.
    """
    order = np.lexsort((np.arange(len(scores)), -scores))
    boxes = boxes.astype(np.int64) if np.issubdtype(boxes.dtype, np.integer) else boxes.astype(np.float64)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])
        ih = np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])
        inter = np.maximum(iw, 0) * np.maximum(ih, 0)
        union = area[i] + area[rest] - inter
        keep_rest = inter * iou_den <= iou_num * union
        if contain_num is not None:
            keep_rest &= inter * iou_den <= contain_num * area[rest]
        order = rest[keep_rest]
    return np.asarray(keep, dtype=np.int64)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (N, M) of float x1, y1, x2, y2 boxes a (N, 4) and b (M, 4); 0 where the union is empty."""
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None] + ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)


IOU_DEN = 1000   # a user's IoU threshold becomes the integer ratio round(iou * IOU_DEN) / IOU_DEN


def nms_at(boxes: np.ndarray, scores: np.ndarray, iou: float, contain: float | None = None) -> np.ndarray:
    """`nms` with a user IoU threshold (and containment threshold) in [0, 1], turned into integer ratios."""
    return nms(boxes, scores, round(iou * IOU_DEN), IOU_DEN,
               None if contain is None else round(contain * IOU_DEN))
