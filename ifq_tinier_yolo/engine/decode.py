"""YOLOv2 region decoding (darknet): head output -> boxes and scores in network pixels.

`decode_float` is the float reference, used by the torch backend and as the bound for
`decode_fixed`, the integer engine's decoder (fixed point and lookup tables, no float).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..netdef import EXP_CLAMP, H_FIELD, OBJECTNESS_FIELD, VALUES_PER_ANCHOR, W_FIELD, X_FIELD, Y_FIELD
from .model import ANCHOR_FRAC_BITS   # anchors in 2**-16 grid cells (as stored in .ifq files)


def decode_float(head: np.ndarray, anchors: np.ndarray, stride: int,
                 conf: float) -> tuple[np.ndarray, np.ndarray]:
    """head: float (A*5, H, W) raw outputs; anchors (A, 2) in cells -> (boxes (N, 4) float64
    x1, y1, x2, y2 in network pixels, scores (N,)) for score = sigmoid(objectness) >= conf."""
    na = len(anchors)
    _, gh, gw = head.shape
    p = head.astype(np.float64).reshape(na, VALUES_PER_ANCHOR, gh, gw)   # (A, 5, H, W)
    score = 1 / (1 + np.exp(-p[:, OBJECTNESS_FIELD]))
    a, r, c = np.nonzero(score >= conf)
    sig = 1 / (1 + np.exp(-p[a, X_FIELD:Y_FIELD + 1, r, c]))            # (N, 2)
    cx = (c + sig[:, 0]) * stride
    cy = (r + sig[:, 1]) * stride
    w = np.exp(np.minimum(p[a, W_FIELD, r, c], EXP_CLAMP)) * anchors[a, 0] * stride
    h = np.exp(np.minimum(p[a, H_FIELD, r, c], EXP_CLAMP)) * anchors[a, 1] * stride
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    return boxes, score[a, r, c]


# --- fixed-point decoding (the integer engine) --------------------------------------------
# head integer h -> requantized r = h * out_scale in 2**-16 -> sigmoid / exp by interpolated
# lookup tables -> boxes in 2**-8 network pixels. The tables are constants, sampled once at
# import (a device would hold them in ROM); no float touches the per-image data.
REQUANT_FRAC_BITS = 16        # requantized head values: units of 2**-16
LUT_STEP_BITS = 8             # tables sample the value axis every 2**-8
SIGMOID_RANGE = (-16, 16)     # sigmoid table domain; beyond it sigmoid is within 2**-23 of 0 / 1
EXP_RANGE = (-16, int(EXP_CLAMP))   # exp table domain, up to the clamp of tw, th
SCORE_FRAC_BITS = 16          # sigmoid table values (scores, cell offsets): units of 2**-16
EXP_FRAC_BITS = 16            # exp table values: units of 2**-16
BOX_FRAC_BITS = 8             # fixed-point boxes: units of 2**-8 network pixels
BOX_LIMIT = 1 << 14           # box coordinates saturate at +-2**14 network pixels (NMS products fit int64)
MAX_ANCHOR_CELLS = 64         # exp * anchor * stride stays below 2**63 for anchors < 64 cells
MAX_STRIDE = 64               # and strides <= 64


def round_shift(x: np.ndarray, shift: int) -> np.ndarray:
    """int64 x / 2**shift rounded half up (toward +inf), by an arithmetic right shift; shift >= 1."""
    return (x + (np.int64(1) << np.int64(shift - 1))) >> np.int64(shift)


def _table(fn, lo: int, hi: int, frac_bits: int) -> np.ndarray:
    """int64 samples round(fn(v) * 2**frac_bits) at v = lo + i * 2**-LUT_STEP_BITS, up to hi."""
    v = lo + np.arange(((hi - lo) << LUT_STEP_BITS) + 1, dtype=np.float64) / (1 << LUT_STEP_BITS)
    return np.round(fn(v) * (1 << frac_bits)).astype(np.int64)


SIGMOID_LUT = _table(lambda v: 1 / (1 + np.exp(-v)), *SIGMOID_RANGE, SCORE_FRAC_BITS)
EXP_LUT = _table(np.exp, *EXP_RANGE, EXP_FRAC_BITS)


def lut_lookup(r: np.ndarray, table: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """int64 r in 2**-16 -> table value, linearly interpolated, r saturated to [lo, hi]; rounds half up."""
    frac_shift = REQUANT_FRAC_BITS - LUT_STEP_BITS
    pos = np.clip(r - (lo << REQUANT_FRAC_BITS), 0, (hi - lo) << REQUANT_FRAC_BITS)
    idx = np.minimum(pos >> frac_shift, len(table) - 2)
    frac = pos - (idx << frac_shift)                                     # 0 .. 2**frac_shift
    return table[idx] + round_shift((table[idx + 1] - table[idx]) * frac, frac_shift)


def requantize(h: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """Head integers -> h * multiplier * 2**-shift in units of 2**-16 (int64, rounded half up)."""
    return round_shift(h.astype(np.int64) * np.int64(multiplier), shift - REQUANT_FRAC_BITS)


def score_threshold_q(conf: float) -> int:
    """A score threshold in [0, 1] in the units of the sigmoid table (2**-16), rounded."""
    return int(round(conf * (1 << SCORE_FRAC_BITS)))


@dataclass(frozen=True, eq=False)
class HeadDecoder:
    """What decoding one head needs besides its integers."""
    anchors_q16: np.ndarray   # int64 (A, 2) anchor w, h in 2**-16 grid cells
    out_multiplier: int       # head value = h * out_multiplier * 2**-out_shift
    out_shift: int
    stride: int               # input pixels per grid cell


def decode_fixed(head: np.ndarray, anchors_q16: np.ndarray, stride: int, out_multiplier: int,
                 out_shift: int, conf_q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int32 head (A*5, H, W), anchors int64 (A, 2) in 2**-16 cells -> (boxes int64 (N, 4) x1, y1,
    x2, y2 in 2**-8 network pixels, scores int64 (N,) in 2**-16, objectness int64 (N,) head
    integers, which rank exactly as the float scores) for sigmoid(objectness) >= conf_q."""
    if anchors_q16.max(initial=0) >= MAX_ANCHOR_CELLS << ANCHOR_FRAC_BITS or not 0 < stride <= MAX_STRIDE:
        raise ValueError(f'anchors must be below {MAX_ANCHOR_CELLS} cells and stride at most {MAX_STRIDE}')
    na = len(anchors_q16)
    _, gh, gw = head.shape
    p = head.astype(np.int64).reshape(na, VALUES_PER_ANCHOR, gh, gw)    # (A, 5, H, W)
    obj = p[:, OBJECTNESS_FIELD]
    score = lut_lookup(requantize(obj, out_multiplier, out_shift), SIGMOID_LUT, *SIGMOID_RANGE)
    a, r, c = np.nonzero(score >= conf_q)
    t = requantize(p[a, X_FIELD:H_FIELD + 1, r, c], out_multiplier, out_shift)   # (N, 4) tx, ty, tw, th
    sx = lut_lookup(t[:, X_FIELD], SIGMOID_LUT, *SIGMOID_RANGE)
    sy = lut_lookup(t[:, Y_FIELD], SIGMOID_LUT, *SIGMOID_RANGE)
    ew = lut_lookup(t[:, W_FIELD], EXP_LUT, *EXP_RANGE)
    eh = lut_lookup(t[:, H_FIELD], EXP_LUT, *EXP_RANGE)
    to_box = SCORE_FRAC_BITS - BOX_FRAC_BITS
    cx = round_shift(((c.astype(np.int64) << SCORE_FRAC_BITS) + sx) * stride, to_box)
    cy = round_shift(((r.astype(np.int64) << SCORE_FRAC_BITS) + sy) * stride, to_box)
    wh_shift = EXP_FRAC_BITS + ANCHOR_FRAC_BITS - BOX_FRAC_BITS
    w = round_shift(ew * anchors_q16[a, 0] * stride, wh_shift)
    h = round_shift(eh * anchors_q16[a, 1] * stride, wh_shift)
    x1, y1 = cx - (w >> 1), cy - (h >> 1)
    lim = BOX_LIMIT << BOX_FRAC_BITS
    boxes = np.clip(np.stack([x1, y1, x1 + w, y1 + h], axis=1), -lim, lim)   # (N, 4)
    return boxes.astype(np.int64), score[a, r, c], obj[a, r, c]
