"""Letterboxing: the one owner of how an image becomes the square network input."""
from __future__ import annotations

import cv2
import numpy as np

from ..netdef import LETTERBOX_FILL


def canvas_side(side: int, multiple: int) -> int:
    """`side` rounded up to a multiple of `multiple`."""
    return -(-side // multiple) * multiple


def letterbox_geometry(width: int, height: int, size: int,
                       multiple: int | None = None) -> tuple[float, int, int, int, int, int, int]:
    """(scale, new_w, new_h, pad_x, pad_y, canvas_w, canvas_h): resize by `scale` so that the longer
    side is `size`, to new_w x new_h, and centre on a canvas whose sides are new_w and new_h rounded
    up to multiples of `multiple` (None: size, a square canvas)."""
    scale = size / max(width, height)
    new_w, new_h = min(size, max(1, round(width * scale))), min(size, max(1, round(height * scale)))
    m = multiple or size
    canvas_w, canvas_h = canvas_side(new_w, m), canvas_side(new_h, m)
    return scale, new_w, new_h, (canvas_w - new_w) // 2, (canvas_h - new_h) // 2, canvas_w, canvas_h


def letterbox(image: np.ndarray, size: int, multiple: int | None = None) -> tuple[np.ndarray, float, int, int]:
    """uint8 (H, W, 3) BGR -> (uint8 (canvas_h, canvas_w, 3) canvas, scale, pad_x, pad_y).

    The longer side becomes `size`; the canvas is square (multiple None: what training batches
    need) or the resized image padded to multiples of `multiple` (the detectors: a 4:3 image costs
    3/4 of the square's pixels). Network pixel = original pixel * scale + pad. Bilinear resize
    (area averaging when shrinking scored the shipped model lower: weights/README.md); padding
    is LETTERBOX_FILL.
    """
    h, w = image.shape[:2]
    scale, new_w, new_h, pad_x, pad_y, canvas_w, canvas_h = letterbox_geometry(w, h, size, multiple)
    canvas = np.full((canvas_h, canvas_w, 3), LETTERBOX_FILL, dtype=np.uint8)
    inner = canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w]
    if (new_w, new_h) == (w, h):
        inner[...] = image
    else:   # resized straight into the canvas: no copy pass (about 1% of a 416 px detection)
        resized = cv2.resize(image, (new_w, new_h), dst=inner, interpolation=cv2.INTER_LINEAR)
        if resized is not inner:   # OpenCV made its own array (an image unlike the canvas)
            inner[...] = resized
    return canvas, scale, pad_x, pad_y


def unletterbox_boxes(boxes: np.ndarray, scale: float, pad_x: int, pad_y: int,
                      width: int, height: int) -> np.ndarray:
    """float (N, 4) x1, y1, x2, y2 in network pixels -> original pixels, clipped to the image."""
    out = np.empty_like(boxes, dtype=np.float64)
    out[:, 0::2] = np.clip((boxes[:, 0::2] - pad_x) / scale, 0, width)    # x1, x2
    out[:, 1::2] = np.clip((boxes[:, 1::2] - pad_y) / scale, 0, height)   # y1, y2
    return out
