"""Letterboxing: the one owner of how an image becomes the square network input."""
from __future__ import annotations

import cv2
import numpy as np

from ..netdef import LETTERBOX_FILL


def letterbox_geometry(width: int, height: int, size: int) -> tuple[float, int, int, int, int]:
    """(scale, new_w, new_h, pad_x, pad_y): resize by `scale` to new_w x new_h, centre on a size^2 canvas."""
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return scale, new_w, new_h, (size - new_w) // 2, (size - new_h) // 2


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, int, int]:
    """uint8 (H, W, 3) BGR -> (uint8 (size, size, 3) canvas, scale, pad_x, pad_y).

    Network pixel = original pixel * scale + pad. Bilinear resize; padding is LETTERBOX_FILL.
    """
    h, w = image.shape[:2]
    scale, new_w, new_h, pad_x, pad_y = letterbox_geometry(w, h, size)
    canvas = np.full((size, size, 3), LETTERBOX_FILL, dtype=np.uint8)
    resized = image if (new_w, new_h) == (w, h) else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
    return canvas, scale, pad_x, pad_y


def unletterbox_boxes(boxes: np.ndarray, scale: float, pad_x: int, pad_y: int,
                      width: int, height: int) -> np.ndarray:
    """float (N, 4) x1, y1, x2, y2 in network pixels -> original pixels, clipped to the image."""
    out = np.empty_like(boxes, dtype=np.float64)
    out[:, 0::2] = np.clip((boxes[:, 0::2] - pad_x) / scale, 0, width)    # x1, x2
    out[:, 1::2] = np.clip((boxes[:, 1::2] - pad_y) / scale, 0, height)   # y1, y2
    return out
