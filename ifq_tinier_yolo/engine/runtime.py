"""The integer engine: .ifq model -> int32 head accumulators -> faces. numpy (+ opencv) only.

    model = load_model('weights/ifq_tinier_yolo.ifq')
    heads = run_heads(model, canvas)          # uint8 (H, W, 3) BGR canvas -> per head int32 (A*5, H/s, W/s)
    faces = detect(model, bgr, 0.3, 0.45)     # float64 (N, 5) x, y, w, h, score, original pixels

Per layer: integer conv (im2col GEMM, or exact Winograd for 3x3 stride-1 binary layers) ->
[2x2 max-pool of the accumulators] -> code = #{k : sign * acc > tau_k} as uint8 codes 0..3.
A layer reading several layers concatenates their codes; an upsample layer repeats each code
2x2. Each head adds its int32 bias; the heads' boxes are decoded each at its own scale and
stride, then go through one NMS. Arithmetic is integer throughout: float32 carries integers only
where `prepare` proved every partial sum below 2**24, otherwise int64 does.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import netdef
from ..boxes import detection_rows
from ..errors import ConfigError, ImageError
from . import layers as L
from .decode import BOX_FRAC_BITS, SCORE_FRAC_BITS, HeadDecoder, decode_fixed, requantize, score_threshold_q
from .model import N_THRESHOLDS, IntegerModel, IntLayer, input_max, weight_max
from .modelfile import read
from .nms import nms_vote_at
from .preprocess import letterbox, unletterbox_boxes

DETECTION_COLUMNS = 5   # x, y, w, h, score


@dataclass(frozen=True, eq=False)
class Step:
    """One layer prepared for execution."""
    name: str
    method: str                     # 'im2col', 'winograd', 'head' or 'upsample'
    sources: tuple[int, ...]        # layers whose outputs are concatenated as the input (-1: the canvas)
    kernel: int
    stride: int
    pool: bool
    out_ch: int
    weights: np.ndarray | None      # im2col: (O, k*k*I); winograd: (16, I, O); head: (I, O); float32 or int64
    thresholds: np.ndarray | None   # winograd: (3, O); im2col: (3, O, 1, 1, 1); accumulator units x gain
    post_signs: np.ndarray | None   # +-1 after the max-pool, shaped as thresholds[0]; None: folded
    bias: np.ndarray | None         # int32 (O,), head only


def _prepare_layer(layer: IntLayer, sources: tuple[int, ...]) -> Step:
    """Reorder weights for the GEMMs, fold signs and the Winograd gain, choose exact dtypes."""
    s = layer.spec
    sources = sources or (-1,)
    if s.info.upsamples:
        return Step(s.name, 'upsample', sources, 1, 1, False, s.out_ch, None, None, None, None)
    w = layer.weights.astype(np.int64)                                   # (O, I, k, k)
    signs = layer.signs.astype(np.int64) if layer.signs is not None else np.ones(s.out_ch, np.int64)
    fold = not s.pool                    # a sign commutes with the conv, not with the max-pool
    if fold:
        w = w * signs[:, None, None, None]
    wino_bound = L.winograd_bound(layer.in_ch, input_max(s), weight_max(s))
    gain_bound = L.WINO_GAIN * (layer.acc_bound + 1)
    binary = s.weight_bits == netdef.BINARY_WEIGHT_BITS
    if binary and s.kernel == 3 and s.stride == 1 and max(wino_bound, gain_bound) < L.FLOAT32_EXACT:
        method, gain, mat = 'winograd', L.WINO_GAIN, L.winograd_filters(w.astype(np.int8))
        view = (N_THRESHOLDS, s.out_ch)                                  # NHWC tiles: channels last
    else:
        method = 'head' if s.info.is_head else 'im2col'
        gain, view = 1, (N_THRESHOLDS, s.out_ch, 1, 1, 1)                # (O, B, H, W) accumulators
        mat = w.transpose(0, 2, 3, 1).reshape(s.out_ch, -1)             # (O, k*k*I), columns (ky, kx, c)
        if method == 'head':
            mat = mat.T                                                  # (I, O)
        mat = mat.astype(np.float32 if layer.acc_bound < L.FLOAT32_EXACT else np.int64)
    thresholds = None
    if layer.thresholds is not None:
        thresholds = (layer.thresholds.astype(np.int64).T * gain).astype(mat.dtype).reshape(view)
    post = None if fold or (signs > 0).all() else signs.astype(mat.dtype).reshape(view[1:])
    return Step(s.name, method, sources, s.kernel, s.stride, bool(s.pool), s.out_ch, np.ascontiguousarray(mat),
                thresholds, post, layer.bias)


_PLANS: dict[int, tuple[Step, ...]] = {}
_PLANS_LOCK = threading.Lock()   # detect may run in several threads; a plan is built once


def prepare(model: IntegerModel) -> tuple[Step, ...]:
    """The execution plan of a model, built once per model object and cached (thread-safe).

    Keyed by id(): the entry is dropped when the model is collected, before the id can be reused.
    """
    plan = _PLANS.get(id(model))
    if plan is None:
        with _PLANS_LOCK:
            plan = _PLANS.get(id(model))
            if plan is None:
                model.check()
                plan = tuple(_prepare_layer(layer, src)
                             for layer, src in zip(model.layers, netdef.sources(model.specs)))
                _PLANS[id(model)] = plan
                weakref.finalize(model, _PLANS.pop, id(model), None)
    return plan


def load_model(path: str | Path) -> IntegerModel:
    """Read an .ifq file (ModelFileError on any defect) and prepare it for running."""
    model = read(path)
    prepare(model)
    return model


def _check_canvases(model: IntegerModel, canvases: np.ndarray) -> None:
    """ImageError unless canvases is uint8 (B, H, W, 3) with H, W multiples of the total stride."""
    if not isinstance(canvases, np.ndarray) or canvases.dtype != np.uint8 or canvases.ndim != 4 \
            or canvases.shape[3] != netdef.IN_CHANNELS:
        raise ImageError(f'engine input must be uint8 (B, H, W, 3), got '
                         f'{getattr(canvases, "dtype", type(canvases).__name__)} {getattr(canvases, "shape", "")}')
    for side in canvases.shape[1:3]:
        try:
            netdef.check_input_size(side, model.specs, 'engine input')
        except ConfigError as e:   # a canvas of the wrong size is a bad image, not a bad option
            raise ImageError(str(e)) from None


def _conv_step(step: Step, x: np.ndarray) -> np.ndarray:
    """uint8 codes or pixels (B, H, W, C) -> uint8 codes (B, H', W', O) of one first/hidden layer."""
    if step.method == 'winograd':
        tiles = L.winograd_conv3x3(x, step.weights)                      # (4, B, H/2, W/2, O), gain 4
        if not step.pool:
            return L.interleave_tiles(L.threshold_codes(tiles, step.thresholds), x.shape[1], x.shape[2])
        h2, w2 = x.shape[1] // 2, x.shape[2] // 2
        acc = tiles.max(axis=0)[:, :h2, :w2]                             # a tile is a pool window
        if step.post_signs is not None:
            acc = acc * step.post_signs
        return L.threshold_codes(acc, step.thresholds)
    acc = L.im2col_gemm(x, step.weights, step.kernel, step.stride)       # (O, B, Ho, Wo)
    if step.pool:
        acc = L.maxpool2(acc)
    if step.post_signs is not None:
        acc = acc * step.post_signs
    codes = L.threshold_codes(acc, step.thresholds)                      # (O, B, Ho, Wo)
    return np.ascontiguousarray(codes.transpose(1, 2, 3, 0))             # (B, Ho, Wo, O)


def _head_step(step: Step, x: np.ndarray) -> np.ndarray:
    """uint8 codes (B, H, W, I) -> int32 head (B, O, H, W): acc + bias, exact."""
    b, h, w, c = x.shape
    acc = x.reshape(-1, c).astype(step.weights.dtype) @ step.weights    # (B*H*W, O)
    out = acc.astype(np.int32) + step.bias                               # exact: |acc| < 2**24 or int64
    return np.ascontiguousarray(out.reshape(b, h, w, step.out_ch).transpose(0, 3, 1, 2))


def run_heads_batch(model: IntegerModel, canvases: np.ndarray, packed: bool = False,
                    heads: tuple[int, ...] | None = None) -> list[np.ndarray]:
    """uint8 (B, H, W, 3) BGR canvases -> per head int32 (B, A*5, H/s, W/s): acc + bias, exact.

    packed=True holds the feature maps between layers as 2-bit codes packed four per byte
    (a quarter of the memory, a little slower); the result is identical. `heads` (head numbers
    in table order; None: all) computes only those heads, in that order, and only the layers they read.
    """
    _check_canvases(model, canvases)
    plan = prepare(model)
    need = netdef.layers_for_heads(model.specs, heads)
    last_use = {j: i for i, step in enumerate(plan) if i in need for j in step.sources}
    maps: dict[int, tuple[np.ndarray, int]] = {-1: (canvases, netdef.IN_CHANNELS)}   # layer -> (map, channels)
    out: dict[int, np.ndarray] = {}                                      # head layer index -> its integers
    for i, step in enumerate(plan):
        if i not in need:
            continue
        inputs = []
        for j in step.sources:
            x, channels = maps[j]
            inputs.append(L.unpack_codes(x, channels) if packed and j >= 0 else x)
            if last_use[j] == i:
                del maps[j]                                              # free maps nobody reads again
        x = inputs[0] if len(inputs) == 1 else np.concatenate(inputs, axis=-1)
        if step.method == 'head':
            out[i] = _head_step(step, x)
            continue
        codes = L.upsample2(x) if step.method == 'upsample' else _conv_step(step, x)   # uint8 (B, H', W', O)
        maps[i] = (L.pack_codes(codes) if packed else codes, step.out_ch)
    index = netdef.heads(model.specs)
    return [out[index[h]] for h in (range(len(index)) if heads is None else heads)]


def run_heads(model: IntegerModel, canvas: np.ndarray, packed: bool = False,
              heads: tuple[int, ...] | None = None) -> list[np.ndarray]:
    """uint8 (H, W, 3) BGR letterboxed canvas -> per head int32 accumulators (A*5, H/s, W/s)
    (only the heads numbered `heads`, table order, if given)."""
    if not isinstance(canvas, np.ndarray) or canvas.ndim != 3:
        raise ImageError(f'engine input must be a uint8 (H, W, 3) canvas, got '
                         f'{getattr(canvas, "shape", type(canvas).__name__)}')
    return [h[0] for h in run_heads_batch(model, canvas[None], packed, heads)]


def run_batch(model: IntegerModel, canvases: np.ndarray, packed: bool = False) -> np.ndarray:
    """Single-head models: uint8 (B, H, W, 3) canvases -> int32 head (B, A*5, H/16, W/16)."""
    model.head   # noqa: B018 - ValueError for a model of several heads
    return run_heads_batch(model, canvases, packed)[0]


def run(model: IntegerModel, canvas: np.ndarray, packed: bool = False) -> np.ndarray:
    """Single-head models: uint8 (H, W, 3) canvas -> int32 head accumulators (A*5, H/16, W/16)."""
    model.head   # noqa: B018 - ValueError for a model of several heads
    return run_heads(model, canvas, packed)[0]


def detect(model: IntegerModel, bgr_image: np.ndarray, conf: float, nms_iou: float,
           img_size: int | None = None, heads: tuple[int, ...] | None = None) -> np.ndarray:
    """uint8 (H, W, 3) BGR image -> float64 (N, 5) x, y, w, h, score in original pixels, best first.

    Letterbox -> integer layers -> fixed-point decode -> integer NMS (voted); float only for the
    result. `heads` (numbers in table order; None: all): only those heads' boxes, and only the
    layers they read computed.
    """
    wanted = decode_order(heads, len(model.decoders))
    decoders = [model.decoders[h] for h in wanted]
    return detect_with(lambda canvas, c, n: decode_heads(decoders, run_heads(model, canvas, heads=wanted), c, n),
                       model.specs, bgr_image, conf, nms_iou, img_size or model.input_size)


def decode_order(heads: tuple[int, ...] | None, num_heads: int) -> tuple[int, ...]:
    """The heads a detection decodes: `heads` (None: all) as a set in table order, as the C decoder
    does, so that every backend merges the same boxes in the same order."""
    return tuple(range(num_heads)) if heads is None else tuple(sorted(set(heads)))


# (letterboxed uint8 canvas, conf, nms IoU) -> (float64 (N, 4) x1, y1, x2, y2 network pixels, (N,) scores)
BoxesFn = Callable[[np.ndarray, float, float], tuple[np.ndarray, np.ndarray]]


def detect_with(boxes_fn: BoxesFn, specs: tuple[netdef.LayerSpec, ...], bgr_image: np.ndarray, conf: float,
                nms_iou: float, size: int) -> np.ndarray:
    """`detect` on any backend that turns a letterboxed canvas into decoded boxes (the numpy
    engine, the native runtime, onnxruntime): checks, letterbox (the longer side `size`, the
    canvas padded to multiples of the total stride only), boxes in original pixels."""
    netdef.check_input_size(size, specs)
    if not 0.0 <= conf <= 1.0 or not 0.0 < nms_iou <= 1.0:
        raise ConfigError(f'conf {conf} must lie in [0, 1] and nms {nms_iou} in (0, 1]')
    if not isinstance(bgr_image, np.ndarray) or bgr_image.dtype != np.uint8 or bgr_image.ndim != 3 \
            or bgr_image.shape[2] != netdef.IN_CHANNELS or bgr_image.size == 0:
        raise ImageError('detect needs a non-empty uint8 (H, W, 3) BGR image')
    canvas, scale, pad_x, pad_y = letterbox(bgr_image, size, netdef.total_stride(specs))
    boxes, scores = boxes_fn(canvas, conf, nms_iou)
    b = unletterbox_boxes(boxes, scale, pad_x, pad_y, bgr_image.shape[1], bgr_image.shape[0])
    out = detection_rows(b, scores).astype(np.float64)
    return out.reshape(-1, DETECTION_COLUMNS)


def rank_key(requantized: np.ndarray, objectness: np.ndarray) -> np.ndarray:
    """int64 NMS ranking of candidates: the requantized objectness (comparable across heads),
    ties broken by the head integer (so a single head ranks exactly by its integers)."""
    r = np.clip(requantized, -(1 << 30), 1 << 30)
    return (r << 32) + (objectness.astype(np.int64) + (1 << 31))


def decode_heads(decoders: list[HeadDecoder], heads: list[np.ndarray], conf: float,
                 nms_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """int32 (A*5, H, W) of each head -> fixed-point decode of each + one integer NMS with box
    voting -> (float64 (N, 4) x1, y1, x2, y2 in network pixels, float64 (N,) scores), best first;
    float only for the returned values."""
    conf_q = score_threshold_q(conf)
    boxes, scores, keys = [], [], []
    for d, head in zip(decoders, heads):
        b, s, obj = decode_fixed(head, d.anchors_q16, d.stride, d.out_multiplier, d.out_shift, conf_q)
        boxes.append(b)
        scores.append(s)
        keys.append(rank_key(requantize(obj, d.out_multiplier, d.out_shift), obj))
    boxes_q, scores_q = np.concatenate(boxes).reshape(-1, 4), np.concatenate(scores)
    keep, voted = nms_vote_at(boxes_q, np.concatenate(keys), scores_q, nms_iou)
    return (voted.astype(np.float64) / (1 << BOX_FRAC_BITS),
            scores_q[keep].astype(np.float64) / (1 << SCORE_FRAC_BITS))


def decode_head(model: IntegerModel, head: np.ndarray, conf: float,
                nms_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Single-head models: int32 head (A*5, H, W) -> `decode_heads`."""
    model.head   # noqa: B018 - ValueError for a model of several heads
    return decode_heads(model.decoders, [head], conf, nms_iou)
