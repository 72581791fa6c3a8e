"""Float detection with the PyTorch network (the `--backend torch` path and training validation)."""
from __future__ import annotations

import numpy as np
import torch

from .. import netdef
from ..engine.decode import decode_float
from ..engine.nms import nms_at
from ..engine.preprocess import letterbox, unletterbox_boxes
from .tinier_yolo import TinierYolo

def to_input(canvases: list[np.ndarray]) -> torch.Tensor:
    """uint8 (S, S, 3) BGR canvases -> float (B, 3, S, S) pixel values, as the network reads them."""
    return torch.from_numpy(np.stack(canvases)).permute(0, 3, 1, 2).float()   # (B, 3, S, S)


@torch.no_grad()
def detect_batch(model: TinierYolo, images: list[np.ndarray], img_size: int, conf: float,
                 nms_iou: float) -> list[np.ndarray]:
    """uint8 BGR images -> per image float64 (N, 5) x, y, w, h, score in original pixels."""
    netdef.check_input_size(img_size, model.layers)
    boxed = [letterbox(im, img_size) for im in images]
    head = model(to_input([b[0] for b in boxed])).float().numpy()             # (B, A*5, H, W)
    stride = netdef.total_stride(model.layers)
    results = []
    for out, im, (_, scale, px, py) in zip(head, images, boxed):
        boxes, scores = decode_nms_float(out, model.anchors, stride, conf, nms_iou)
        b = unletterbox_boxes(boxes, scale, px, py, im.shape[1], im.shape[0])
        results.append(np.column_stack([b[:, :2], b[:, 2:] - b[:, :2], scores]))
    return results


def decode_nms_float(head: np.ndarray, anchors, stride: int, conf: float,
                     nms_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Float head values (A*5, H, W) -> float decode + NMS -> ((N, 4) x1, y1, x2, y2 network pixels, (N,) scores)."""
    boxes, scores = decode_float(head, np.asarray(anchors, dtype=np.float64), stride, conf)
    keep = nms_at(boxes, scores, nms_iou)
    return boxes[keep], scores[keep]
