"""Training augmentation: a face-keeping square crop (zoom in or out), letterbox, colour, blur, flip,
rotation (optional), and a 2x2 mosaic of four such views (optional).

Geometry is done here with explicit arithmetic on the boxes (the crop window, then the shared
`engine.preprocess.letterbox`, then a horizontal flip, then an optional rotation); the
photometric jitter is an albumentations pipeline applied to the image part of the canvas only,
so the letterbox padding keeps the exact value inference sees. All randomness comes from one
numpy Generator per sample, which also seeds albumentations, so the same (seed, epoch, index)
always gives the same sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np

from ..boxes import corners
from ..defaults import CROP_WINDOW
from ..engine.preprocess import letterbox
from ..netdef import LETTERBOX_FILL

SEED_MAX = 2**31 - 1   # albumentations seeds must fit an int32


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of the training augmentation; the defaults suit WIDER FACE at 320-416 px input."""
    crop_p: float = 0.9                   # probability of a random crop window (else the whole image)
    window_range: tuple[float, float] = CROP_WINDOW  # crop side / image long side, log-uniform; > 1 zooms out
    flip_p: float = 0.5                   # horizontal flip probability
    brightness: float = 0.25              # +- brightness shift, fraction of 255
    contrast: float = 0.25                # +- contrast gain - 1
    brightness_contrast_p: float = 0.8    # probability of the brightness/contrast jitter
    hue: float = 8.0                      # +- hue shift, opencv hue units (180 = full circle)
    saturation: float = 30.0              # +- saturation shift, 0-255 units
    hsv_p: float = 0.5                    # probability of the hue/saturation jitter
    blur_p: float = 0.1                   # probability of a Gaussian or motion blur
    blur_max_kernel: int = 5              # largest blur kernel side in network pixels (odd)
    gray_p: float = 0.02                  # probability of a grey image
    max_angle: float = 0.0                # rotate views by up to +- this many degrees (0: never; tilted heads)
    rotate_p: float = 0.3                 # probability of a rotation when max_angle > 0
    mosaic_p: float = 0.0                 # probability of a 2x2 mosaic of four half-size views (more, smaller faces)
    min_visible: float = 0.5              # keep a face if this fraction of its area stays visible
    min_box_px: float = 2.0               # drop faces narrower or shorter than this in network pixels


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The per-sample random generator: a pure function of (seed, epoch, index)."""
    return np.random.default_rng([seed, epoch, index])


def photometric_pipeline(cfg: AugmentConfig) -> A.Compose:
    """The albumentations colour / blur jitter (pixels only, boxes unchanged)."""
    k = max(3, cfg.blur_max_kernel | 1)
    return A.Compose([
        A.RandomBrightnessContrast(brightness_limit=cfg.brightness, contrast_limit=cfg.contrast,
                                   p=cfg.brightness_contrast_p),
        A.HueSaturationValue(hue_shift_limit=cfg.hue, sat_shift_limit=cfg.saturation, val_shift_limit=0,
                             p=cfg.hsv_p),
        A.ToGray(p=cfg.gray_p),
        A.OneOf([A.GaussianBlur(blur_limit=(3, k), sigma_limit=(0.3, 1.5)),
                 A.MotionBlur(blur_limit=(3, k))], p=cfg.blur_p),
    ], seed=0)


def crop_window(width: int, height: int, boxes: np.ndarray, rng: np.random.Generator,
                cfg: AugmentConfig) -> tuple[float, float, float]:
    """(x0, y0, side) of a square window in image pixels that contains one random face when there is one.

    The window may stick out of the image (zoom out); the image then lies inside it.
    """
    long_side = max(width, height)
    if rng.random() >= cfg.crop_p:
        # the whole image, exactly as plain letterboxing frames it
        return (width - long_side) / 2, (height - long_side) / 2, float(long_side)
    lo, hi = np.log(cfg.window_range)
    side = long_side * math.exp(rng.uniform(lo, hi))
    face = None
    sizes = np.minimum(boxes[:, 2], boxes[:, 3]) if len(boxes) else np.zeros(0)
    if (sizes > 0).any():
        # python floats: float32 sums would break the interval arithmetic below by an ulp
        x, y, w, h = (float(v) for v in boxes[rng.choice(np.flatnonzero(sizes > 0))])
        # the part of the face inside the image (annotations may overhang it)
        x1, y1 = max(0.0, x), max(0.0, y)
        face = (x1, y1, min(float(width), x + w) - x1, min(float(height), y + h) - y1)
        side = max(side, face[2], face[3])
    origin = []
    for axis, extent in ((0, width), (1, height)):
        # window inside the image when it is smaller, image inside the window when larger
        lo_o, hi_o = sorted((0.0, extent - side))
        if face is not None:
            f0, fs = face[axis], face[axis + 2]
            lo_o, hi_o = max(lo_o, f0 + fs - side), min(hi_o, f0)
            if lo_o > hi_o:   # cannot hold face and stay on the image: centre on the face
                lo_o = hi_o = f0 + fs / 2 - side / 2
        origin.append(rng.uniform(lo_o, hi_o))
    return origin[0], origin[1], side


def cut_window(image: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The side x side window at integer (x0, y0), padded with LETTERBOX_FILL where it leaves the image."""
    h, w = image.shape[:2]
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    part = image[iy0:iy1, ix0:ix1]
    if (ix0, iy0, ix1, iy1) == (x0, y0, x0 + side, y0 + side):
        return part
    return cv2.copyMakeBorder(part, iy0 - y0, y0 + side - iy1, ix0 - x0, x0 + side - ix1,
                              cv2.BORDER_CONSTANT, value=(LETTERBOX_FILL,) * 3)


def visible_faces(out: np.ndarray, area: np.ndarray, size: int,
                  cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Canvas boxes float (N, 4) x1 y1 x2 y2 and the faces' whole areas (N,) in canvas px^2 ->
    (float32 (M, 4) boxes clipped to the size x size canvas, kept indices): a face is kept when
    >= cfg.min_visible of its area is on the canvas and its clipped box is at least
    cfg.min_box_px on each side."""
    clipped = np.clip(out, 0, size)
    visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    with np.errstate(divide='ignore', invalid='ignore'):
        frac = np.where(area > 0, visible / area, 0.0)
    keep = ((frac >= cfg.min_visible) & (clipped[:, 2] - clipped[:, 0] >= cfg.min_box_px)
            & (clipped[:, 3] - clipped[:, 1] >= cfg.min_box_px))
    return clipped[keep].astype(np.float32), np.flatnonzero(keep)


def map_boxes(boxes: np.ndarray, width: int, height: int, x0: float, y0: float, scale: float,
              pad_x: float, pad_y: float, size: int, cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Boxes float (N, 4) x, y, w, h in image pixels -> (float32 (M, 4) x1, y1, x2, y2 on the canvas, kept indices).

    The faces' in-image parts go through `visible_faces` (the window is the canvas).
    """
    xyxy = corners(boxes).astype(np.float64)  # (N, 4)
    xyxy = np.clip(xyxy, 0, [width, height, width, height])
    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    out = (xyxy - [x0, y0, x0, y0]) * scale + [pad_x, pad_y, pad_x, pad_y]
    return visible_faces(out, area * scale * scale, size, cfg)


def letterbox_sample(image: np.ndarray, boxes: np.ndarray, size: int,
                     cfg: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """No augmentation: (uint8 (size, size, 3) canvas, float32 (M, 4) x1 y1 x2 y2 canvas px, kept indices)."""
    h, w = image.shape[:2]
    canvas, scale, pad_x, pad_y = letterbox(image, size)
    out, kept = map_boxes(boxes, w, h, 0.0, 0.0, scale, pad_x, pad_y, size, cfg)
    return canvas, out, kept


def rotate_sample(canvas: np.ndarray, boxes: np.ndarray, degrees: float,
                  cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotate a square canvas about its centre (counter-clockwise, opencv's sense) and its float
    (N, 4) x1 y1 x2 y2 boxes -> (canvas, float32 (M, 4) boxes, kept indices). A box becomes the
    bounding box of its inscribed ellipse rotated (a face's outline, not the box's corners, which
    would grow it by up to 41%), kept as `visible_faces` says."""
    size = canvas.shape[0]
    m = cv2.getRotationMatrix2D((size / 2, size / 2), degrees, 1.0)
    canvas = cv2.warpAffine(canvas, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=(LETTERBOX_FILL,) * 3)
    b = boxes.astype(np.float64).reshape(-1, 4)
    centre = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, np.ones(len(b))], axis=1) @ m.T
    a, c = (b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2          # the ellipse's semi-axes
    t = math.radians(degrees)
    ex, ey = np.hypot(a * math.cos(t), c * math.sin(t)), np.hypot(a * math.sin(t), c * math.cos(t))
    out = np.stack([centre[:, 0] - ex, centre[:, 1] - ey, centre[:, 0] + ex, centre[:, 1] + ey], axis=1)
    return (canvas, *visible_faces(out, 4 * ex * ey, size, cfg))


class Augmenter:
    """Random training view of one image: call with (image, boxes, size, rng)."""

    def __init__(self, cfg: AugmentConfig = AugmentConfig()):
        self.cfg = cfg
        self.photometric = photometric_pipeline(cfg)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, size: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 (H, W, 3) BGR, float (N, 4) x y w h px -> (uint8 (S, S, 3), float32 (M, 4) x1 y1 x2 y2, kept)."""
        cfg = self.cfg
        h, w = image.shape[:2]
        fx0, fy0, fside = crop_window(w, h, boxes, rng, cfg)
        # integer window so that the crop and the box arithmetic agree exactly
        x0, y0, side = math.floor(fx0), math.floor(fy0), max(1, math.ceil(fside))
        window = cut_window(image, x0, y0, side)
        canvas, scale, pad_x, pad_y = letterbox(window, size)
        out, kept = map_boxes(boxes, w, h, x0, y0, scale, pad_x, pad_y, size, cfg)

        # colour/blur only the image pixels of the canvas: the padding stays LETTERBOX_FILL
        cx0 = max(0, math.floor((max(0, x0) - x0) * scale + pad_x))
        cy0 = max(0, math.floor((max(0, y0) - y0) * scale + pad_y))
        cx1 = min(size, math.ceil((min(w, x0 + side) - x0) * scale + pad_x))
        cy1 = min(size, math.ceil((min(h, y0 + side) - y0) * scale + pad_y))
        if cx1 > cx0 and cy1 > cy0:
            self.photometric.set_random_seed(int(rng.integers(SEED_MAX)))
            region = np.ascontiguousarray(canvas[cy0:cy1, cx0:cx1])
            canvas[cy0:cy1, cx0:cx1] = self.photometric(image=region)['image']

        if rng.random() < cfg.flip_p:
            canvas = np.ascontiguousarray(canvas[:, ::-1])
            out = np.stack([size - out[:, 2], out[:, 1], size - out[:, 0], out[:, 3]], axis=1)
        if cfg.max_angle > 0 and rng.random() < cfg.rotate_p:   # no draw without rotation: old seeds repeat
            canvas, out, rotated = rotate_sample(canvas, out, rng.uniform(-cfg.max_angle, cfg.max_angle), cfg)
            kept = kept[rotated]
        return canvas, out.astype(np.float32).reshape(-1, 4), kept


def mosaic(views: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Four views [(uint8 (s, s, 3) canvas, float (N, 4) x1 y1 x2 y2)] -> their 2x2 tiling (uint8 (2s, 2s, 3),
    in reading order) and float32 (M, 4) boxes moved with their views. With s a multiple of the network's
    total stride the seams fall on cell borders."""
    if len(views) != 4:
        raise ValueError(f'a mosaic takes 4 views, not {len(views)}')
    s = views[0][0].shape[0]
    rows = [np.concatenate([views[r][0], views[r + 1][0]], axis=1) for r in (0, 2)]
    boxes = [np.asarray(b, np.float32).reshape(-1, 4) + np.float32([(k % 2) * s, (k // 2) * s] * 2)
             for k, (_, b) in enumerate(views)]
    return np.concatenate(rows, axis=0), np.concatenate(boxes, axis=0)
