"""Float detection with the PyTorch network (the `--backend torch` path and training validation)."""
from __future__ import annotations

import numpy as np
import torch

from .. import netdef
from ..boxes import detection_rows
from ..engine.decode import decode_float
from ..engine.nms import nms_vote_at
from ..engine.preprocess import letterbox, unletterbox_boxes
from .tinier_yolo import TinierYolo

def to_input(canvases: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) BGR canvases of one shape -> float (B, 3, H, W) pixel values, as the network reads them."""
    return torch.from_numpy(np.stack(canvases)).permute(0, 3, 1, 2).float()   # (B, 3, H, W)


@torch.no_grad()
def detect_batch(model: TinierYolo, images: list[np.ndarray], img_size: int, conf: float,
                 nms_iou: float, heads: tuple[int, ...] | None = None) -> list[np.ndarray]:
    """uint8 BGR images -> per image float64 (N, 5) x, y, w, h, score in original pixels.

    Letterboxed as the integer engines do (engine.runtime.detect_with: canvases padded to
    multiples of the total stride only); images of one canvas shape run as one batch. `heads`
    (numbers in table order; None: all): only those heads' boxes (every head still runs)."""
    netdef.check_input_size(img_size, model.layers)
    boxed = [letterbox(im, img_size, netdef.total_stride(model.layers)) for im in images]
    wanted = range(len(model.heads)) if heads is None else heads
    strides = [netdef.head_strides(model.layers)[h] for h in wanted]
    anchors = [model.head_anchors[h] for h in wanted]
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, b in enumerate(boxed):
        by_shape.setdefault(b[0].shape, []).append(i)
    results: list[np.ndarray] = [np.empty((0, 5))] * len(images)
    for group in by_shape.values():
        out = [h.float().numpy() for h in model(to_input([boxed[i][0] for i in group]))]   # per head (B, A*5, H, W)
        for k, i in enumerate(group):
            _, scale, px, py = boxed[i]
            boxes, scores = decode_nms_float([out[h][k] for h in wanted], anchors, strides, conf, nms_iou)
            b = unletterbox_boxes(boxes, scale, px, py, images[i].shape[1], images[i].shape[0])
            results[i] = detection_rows(b, scores)
    return results


def decode_nms_float(heads: list[np.ndarray], head_anchors, strides: list[int], conf: float,
                     nms_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Float values (A*5, H, W) of each head -> float decode of each, one NMS (voted) over all ->
    ((N, 4) x1, y1, x2, y2 network pixels, (N,) scores)."""
    decoded = [decode_float(h, np.asarray(a, dtype=np.float64), s, conf)
               for h, a, s in zip(heads, head_anchors, strides)]
    boxes = np.concatenate([d[0] for d in decoded]).reshape(-1, 4)
    scores = np.concatenate([d[1] for d in decoded])
    keep, voted = nms_vote_at(boxes, scores, scores, nms_iou)
    return voted, scores[keep]
