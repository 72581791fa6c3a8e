"""Reading images robustly: any depth and channel count in, 8-bit BGR out (numpy + opencv)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.pgm', '.ppm')
MAX_SIDE = 8192   # larger images are shrunk on read, not refused


def to_bgr8(image: np.ndarray, source: str = 'image') -> np.ndarray:
    """Any decoded image (gray, BGR, BGRA; 8/16-bit or float) -> contiguous uint8 (H, W, 3) BGR."""
    if image is None or image.size == 0 or image.ndim not in (2, 3):
        raise ImageError(f'{source}: not a decodable image')
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)           # keep the 8 most significant bits
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 1:
        image = cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.shape[2] != 3:
        raise ImageError(f'{source}: unsupported channel count {image.shape[2]}')
    h, w = image.shape[:2]
    if max(h, w) > MAX_SIDE:
        s = MAX_SIDE / max(h, w)
        image = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 (H, W, 3) BGR; raise ImageError naming the file otherwise."""
    return read_image_sized(path)[0]


def read_image_sized(path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
    """(`read_image(path)`, (width, height) of the file itself, before any shrinking to MAX_SIDE)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f'{path}: no such image file')
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise ImageError(f'{path}: empty file')
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f'{path}: not a readable image (corrupt, truncated or another format)')
    return to_bgr8(image, str(path)), (image.shape[1], image.shape[0])


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file as read by `read_image`."""
    h, w = read_image(path).shape[:2]
    return w, h
