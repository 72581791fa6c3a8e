"""Conversion passes: a quantization-network description -> an integer one (FINN-style).

A pass takes a `NetDesc` and returns a new one, never changing its input. Its docstring states
its precondition; a "have / want" comment shows the algebra; a violated precondition raises
ConversionError naming the layer. `INTEGRATED` and `SEPARATED` are the two conversions, each
an ordered list that reads top to bottom; `to_integer_model` turns the result into the
engine's `IntegerModel`. numpy only: `convert.describe_network` reads the torch model.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..boxes import anchors_fixed
from ..engine.layers import FLOAT32_EXACT
from ..engine.model import (MAX_OUT_SHIFT, MIN_OUT_SHIFT, MULTIPLIER_BITS, IntegerModel, IntLayer,
                            accumulator_bound, weight_max)
from ..errors import ConversionError
from ..netdef import BINARY_WEIGHT_BITS, LayerKind, LayerSpec

INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
INT16_BYTES = 2             # a kind whose threshold_bytes hold this may store int16 thresholds
SEPARATED_SCALE_BITS = 8    # separated conversion: weight scales as 8-bit dynamic fixed point
SEPARATED_PARAM_BITS = 16   # ... input scale, BatchNorm gamma / beta / mean / var, cut points: 16-bit


@dataclass(frozen=True, eq=False)
class BatchNorm:
    """Eval-mode BatchNorm parameters of one layer, float32 (O,)."""
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float


@dataclass(frozen=True, eq=False)
class LayerDesc:
    """One layer as the passes see it; fields fill in as the conversion proceeds."""
    spec: LayerSpec                         # heads: with their anchors (grid cells)
    in_ch: int
    weights: np.ndarray | None              # (O, I, k, k): float32 integer-valued, then int8; None: upsample
    w_scale: np.ndarray | None              # float32 (O,) or (1,): value of one weight unit
    in_scale: float                         # value of one input unit: 1/255 (pixels) or HWGQ_STEP (codes)
    bn: BatchNorm | None = None             # first / hidden layers
    affine: tuple[np.ndarray, ...] | None = None   # float32 (acc_scale, bn_scale, bn_shift) (O,) as torch has them
    head_bias: np.ndarray | None = None     # head: float32 integer-valued, then int32
    out_scale: float | None = None          # head: float32 value of one head unit
    acc_bound: int | None = None            # worst-case |accumulator|
    thresholds: np.ndarray | None = None    # int64 (O, 3), then int16 / int32
    signs: np.ndarray | None = None         # int8 (O,): code = #{k : sign * acc > thresholds[:, k]}
    rounded: dict[str, np.ndarray] | None = None   # separated conversion: float64 rounded parameters
    out_multiplier: int | None = None       # head: out_scale = out_multiplier * 2**-out_shift
    out_shift: int | None = None


@dataclass(frozen=True, eq=False)
class NetDesc:
    """A whole network for the passes."""
    layers: tuple[LayerDesc, ...]
    input_size: int                            # pixels
    cuts: np.ndarray                           # float32 (3,) HWGQ cut points, as the float model compares
    separated: bool = False


Pass = Callable[[NetDesc], NetDesc]


def _fail(layer: LayerDesc, why: str) -> ConversionError:
    return ConversionError(f'layer {layer.spec.name}: {why}')


def _map(net: NetDesc, fn: Callable[[LayerDesc], LayerDesc], which: Callable[[LayerKind], bool]) -> NetDesc:
    """Apply fn to the layers whose kind record satisfies `which`, keep the others."""
    return replace(net, layers=tuple(fn(ld) if which(ld.spec.info) else ld for ld in net.layers))


def convert_weights_to_integers(net: NetDesc) -> NetDesc:
    """Precondition: weights are finite integers, +-1 (hidden) or within [-127, 127] (first, head)."""
    # have: float32 weights holding integers; want: int8 (hidden: one sign bit each in the file)
    def convert(layer: LayerDesc) -> LayerDesc:
        w = layer.weights
        if not np.isfinite(w).all() or (w != np.round(w)).any():
            raise _fail(layer, 'weights are not integer-valued (is this a hwgq model?)')
        limit = weight_max(layer.spec)
        if layer.spec.weight_bits == BINARY_WEIGHT_BITS and not np.isin(w, (-1.0, 1.0)).all():
            raise _fail(layer, 'binary weights must be exactly +-1')
        if np.abs(w).max(initial=0) > limit:
            raise _fail(layer, f'weights outside [-{limit}, {limit}]')
        return replace(layer, weights=w.astype(np.int8))
    return _map(net, convert, lambda kind: kind.has_weights)


def bound_accumulators(net: NetDesc) -> NetDesc:
    """Precondition: every worst-case |accumulator| is below 2**24 (the float model is exact there)."""
    # have: fan-in, input max, weight max; want: acc_bound = fan_in * in_max * w_max per layer
    def bound(layer: LayerDesc) -> LayerDesc:
        r = accumulator_bound(layer.spec, layer.in_ch)
        if r >= FLOAT32_EXACT:
            raise _fail(layer, f'worst-case accumulator {r} reaches 2**24: the float32 reference is not exact')
        return replace(layer, acc_bound=r)
    return _map(net, bound, lambda kind: kind.has_weights)


def search_thresholds(f: Callable[[np.ndarray], np.ndarray], bound: int, cuts: np.ndarray,
                      layer: LayerDesc) -> tuple[np.ndarray, np.ndarray]:
    """Exact integer thresholds of a per-channel monotone f on [-bound, bound].

    f: int64 (O, n) accumulators -> (O, n) values, monotone along n for each channel. Returns
    (thresholds int64 (O, K) in [-bound-1, bound], signs int8 (O,)) with, for every integer
    |s| <= bound: #{k : f(s) > cuts[k]} == #{k : sign * s > thresholds[k]}.
    """
    o, k = len(layer.weights), len(cuts)
    ends = f(np.tile(np.array([[-bound, bound]], dtype=np.int64), (o, 1)))   # (O, 2)
    if not np.isfinite(ends).all():
        raise _fail(layer, 'the composed affine overflows or is not finite')
    signs = np.where(ends[:, 0] > ends[:, 1], -1, 1).astype(np.int8)      # decreasing channels flip
    sg = signs.astype(np.int64)[:, None]

    def below(s: np.ndarray) -> np.ndarray:      # g(s) = f(sign * s) <= cut, g non-decreasing in s
        return f(sg * s) <= cuts[None, :]
    lo = np.full((o, k), -bound - 1, dtype=np.int64)   # invariant: g(lo) <= cut (or lo below range)
    hi = np.full((o, k), bound + 1, dtype=np.int64)    # invariant: g(hi) > cut (or hi above range)
    while (hi - lo > 1).any():
        active = hi - lo > 1
        mid = np.clip((lo + hi) >> 1, -bound, bound)
        le = below(mid)
        lo = np.where(active & le, mid, lo)
        hi = np.where(active & ~le, mid, hi)
    # check both sides of every threshold (monotonicity makes this a proof for the whole range)
    inside_lo, inside_hi = lo >= -bound, lo + 1 <= bound
    if not (below(np.clip(lo, -bound, bound)) | ~inside_lo).all() or \
            (below(np.clip(lo + 1, -bound, bound)) & inside_hi).any():
        raise _fail(layer, 'composed affine is not monotone in the accumulator')
    return lo, signs


def compose_thresholds(net: NetDesc) -> NetDesc:
    """Precondition: acc_bound set; float32 affine (acc_scale, bn_scale, bn_shift) finite."""
    # have: z = ((s * acc_scale) * bn_scale) + bn_shift, three rounded float32 ops; q = #{k : z > T_k}
    # want: q = #{k : sign * s > tau_k} with integer tau_k, equal for every integer |s| <= acc_bound
    def compose(layer: LayerDesc) -> LayerDesc:
        if layer.affine is None or layer.acc_bound is None:
            raise _fail(layer, 'needs the float affine and bound_accumulators first')
        a, b, c = (np.asarray(v, dtype=np.float32)[:, None] for v in layer.affine)   # (O, 1)
        if not all(np.isfinite(v).all() for v in (a, b, c)):
            raise _fail(layer, 'scale or BatchNorm parameters are not finite')

        def f(s: np.ndarray) -> np.ndarray:
            return s.astype(np.float32) * a * b + c                       # float32, left to right
        tau, signs = search_thresholds(f, layer.acc_bound, net.cuts.astype(np.float32), layer)
        return replace(layer, thresholds=tau, signs=signs)
    return _map(net, compose, lambda kind: kind.has_thresholds)


def round_to_fixed(x: np.ndarray, bits: int) -> np.ndarray:
    """float -> float64 x rounded to signed `bits`-bit dynamic fixed point (one exponent per tensor,
    the largest |x| just fits), round half to even, saturated."""
    x = np.asarray(x, dtype=np.float64)
    m = np.abs(x).max(initial=0.0)
    if m == 0:
        return np.zeros_like(x)
    frac = bits - 2 - int(np.floor(np.log2(m)))
    q = np.clip(np.round(x * 2.0 ** frac), -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return q / 2.0 ** frac


def round_parameters_separately(net: NetDesc) -> NetDesc:
    """Precondition: first / hidden layers carry w_scale, in_scale and BatchNorm parameters."""
    # have: float w_scale, in_scale, gamma, beta, mean, var, cuts
    # want: each rounded on its own: w_scale to 8 bits, the others to 16 bits (dynamic fixed point)
    cuts = round_to_fixed(net.cuts, SEPARATED_PARAM_BITS)

    def rnd(layer: LayerDesc) -> LayerDesc:
        if layer.bn is None:
            raise _fail(layer, 'needs BatchNorm parameters')
        p = {name: round_to_fixed(getattr(layer.bn, name), SEPARATED_PARAM_BITS)
             for name in ('gamma', 'beta', 'mean', 'var')}
        p.update(w_scale=round_to_fixed(layer.w_scale, SEPARATED_SCALE_BITS),
                 in_scale=round_to_fixed(np.array([layer.in_scale]), SEPARATED_PARAM_BITS), cuts=cuts)
        return replace(layer, rounded=p)
    return replace(_map(net, rnd, lambda kind: kind.has_thresholds), separated=True)


def compose_rounded_thresholds(net: NetDesc) -> NetDesc:
    """Precondition: round_parameters_separately and bound_accumulators have run."""
    # have: z = gamma * (s * w_scale * in_scale - mean) / sqrt(var + eps) + beta, rounded params
    # want: q = #{k : sign * s > tau_k}, thresholds of that (float64) z against the rounded cuts
    def compose(layer: LayerDesc) -> LayerDesc:
        p = layer.rounded
        if p is None or layer.acc_bound is None:
            raise _fail(layer, 'needs round_parameters_separately and bound_accumulators first')
        col = {k: v[:, None] for k, v in p.items() if k != 'cuts'}

        def f(s: np.ndarray) -> np.ndarray:
            x = s.astype(np.float64) * col['w_scale'] * col['in_scale']
            return col['gamma'] * (x - col['mean']) / np.sqrt(col['var'] + layer.bn.eps) + col['beta']
        tau, signs = search_thresholds(f, layer.acc_bound, p['cuts'], layer)
        return replace(layer, thresholds=tau, signs=signs)
    return _map(net, compose, lambda kind: kind.has_thresholds)


def fold_head_bias(net: NetDesc) -> NetDesc:
    """Precondition: the head bias is integer-valued and |acc| + |bias| < 2**24."""
    # have: head = (acc + bias) * out_scale with bias a float32 integer; want: int32 bias
    def fold(layer: LayerDesc) -> LayerDesc:
        b = layer.head_bias
        if b is None or layer.acc_bound is None or not np.isfinite(b).all() or (b != np.round(b)).any():
            raise _fail(layer, 'head bias missing or not integer-valued (run bound_accumulators first)')
        if np.abs(b).max(initial=0) + layer.acc_bound >= FLOAT32_EXACT:
            raise _fail(layer, f'|bias| up to {np.abs(b).max():.0f} plus accumulator {layer.acc_bound} '
                               f'reaches 2**24: the float32 reference is not exact')
        return replace(layer, head_bias=b.astype(np.int32))
    return _map(net, fold, lambda kind: kind.is_head)


def requantize_out_scale(net: NetDesc) -> NetDesc:
    """Precondition: out_scale is a positive float32 in [2**-31, 2**14)."""
    # have: value = head * out_scale (float32); want: out_scale == M * 2**-shift exactly,
    # M in [2**30, 2**31): a float32 has 24 significant bits, so M = mantissa << 7 is exact
    def requant(layer: LayerDesc) -> LayerDesc:
        scale = np.float64(np.float32(layer.out_scale if layer.out_scale is not None else np.nan))
        if not np.isfinite(scale) or scale <= 0:
            raise _fail(layer, f'output scale {layer.out_scale} must be positive and finite')
        mant, exp = np.frexp(scale)                                      # scale = mant * 2**exp
        mult, shift = int(mant * 2.0 ** MULTIPLIER_BITS), MULTIPLIER_BITS - int(exp)
        if not MIN_OUT_SHIFT <= shift <= MAX_OUT_SHIFT or mult * 2.0 ** -shift != scale:
            raise _fail(layer, f'output scale {scale:g} is outside the fixed-point range')
        return replace(layer, out_multiplier=mult, out_shift=shift)
    return _map(net, requant, lambda kind: kind.is_head)


def narrow_thresholds(net: NetDesc) -> NetDesc:
    """Precondition: thresholds computed. First layer: int32; hidden: int16 where all fit."""
    # have: int64 thresholds; want: the narrowest file type that holds them
    def narrow(layer: LayerDesc) -> LayerDesc:
        t = layer.thresholds
        if t is None:
            raise _fail(layer, 'thresholds not computed')
        fits16 = INT16_BYTES in layer.spec.info.threshold_bytes and t.min() >= INT16_MIN and t.max() <= INT16_MAX
        return replace(layer, thresholds=t.astype(np.int16 if fits16 else np.int32))
    return _map(net, narrow, lambda kind: kind.has_thresholds)


INTEGRATED: tuple[Pass, ...] = (
    convert_weights_to_integers,
    bound_accumulators,
    compose_thresholds,
    fold_head_bias,
    requantize_out_scale,
    narrow_thresholds,
)
SEPARATED: tuple[Pass, ...] = (
    convert_weights_to_integers,
    bound_accumulators,
    round_parameters_separately,
    compose_rounded_thresholds,
    fold_head_bias,
    requantize_out_scale,
    narrow_thresholds,
)


def run_passes(net: NetDesc, passes: tuple[Pass, ...]) -> NetDesc:
    """Apply the passes in order."""
    for p in passes:
        net = p(net)
    return net


def to_integer_model(net: NetDesc) -> IntegerModel:
    """A fully converted description -> the engine's IntegerModel (ConversionError if incomplete)."""
    layers = []
    for ld in net.layers:
        spec = replace(ld.spec, anchors=())   # the integer model holds anchors in fixed point
        if not spec.info.has_weights:
            layers.append(IntLayer(spec, ld.in_ch, None))
            continue
        if ld.weights.dtype != np.int8:
            raise _fail(ld, 'weights not converted to integers')
        if spec.info.is_head:
            if ld.head_bias is None or ld.head_bias.dtype != np.int32 or ld.out_multiplier is None:
                raise _fail(ld, 'head bias or output scale not converted')
            layers.append(IntLayer(spec, ld.in_ch, ld.weights, bias=ld.head_bias,
                                   anchors_q16=anchors_fixed(ld.spec.anchors),
                                   out_multiplier=ld.out_multiplier, out_shift=ld.out_shift))
        else:
            if ld.thresholds is None or ld.thresholds.dtype not in (np.int16, np.int32):
                raise _fail(ld, 'thresholds not computed and narrowed')
            layers.append(IntLayer(spec, ld.in_ch, ld.weights, ld.thresholds, ld.signs))
    model = IntegerModel(tuple(layers), net.input_size, separated=net.separated)
    try:
        model.check()
    except ValueError as e:
        raise ConversionError(f'converted model is invalid: {e}') from None
    return model
