"""The in-memory integer model: what `integrate` produces, `.ifq` files hold and `engine` runs.

numpy only. Every array has a fixed dtype and shape, checked by `IntegerModel.check`:
- first layer: int8 weights in [-127, 127] on uint8 pixels, int32 thresholds;
- hidden layers: weights +-1 (int8 in memory, one bit in the file), int16 or int32 thresholds;
- both: code = #{k : sign * acc > thresholds[:, k]} in {0..3}, acc pooled first if `pool`;
- upsample: no parameters; nearest-neighbour 2x of its input codes;
- head: int8 weights in [-127, 127] on codes, int32 bias, its own output scale
  out_multiplier * 2**-out_shift (head value = (acc + bias) * scale) and its anchors.
A layer reads the previous one, or the concatenation (channels) of the layers its spec names.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .. import netdef
from ..netdef import BINARY_WEIGHT_BITS, LayerSpec

N_THRESHOLDS = netdef.HWGQ_LEVELS  # three thresholds per channel give the codes 0..3
ANCHOR_FRAC_BITS = 16               # anchors are stored in units of 2**-16 grid cells
MULTIPLIER_BITS = 31                # out_multiplier lies in [2**30, 2**31)
MIN_OUT_SHIFT, MAX_OUT_SHIFT = 17, 62   # out_shift range the fixed-point decoder accepts
INT32_LIMIT = 1 << 31


def input_max(spec: LayerSpec) -> int:
    """Largest input value of a layer: 255 for the pixel layer, 3 for 2-bit codes."""
    return spec.info.input_max


def weight_max(spec: LayerSpec) -> int:
    """Largest |weight|: 127 for the 8-bit layers, 1 for binary hidden layers."""
    return (1 << (spec.info.weight_bits - 1)) - 1 if spec.info.weight_bits > 1 else spec.info.weight_bits


def accumulator_bound(spec: LayerSpec, in_ch: int) -> int:
    """Worst-case |accumulator| of a layer: fan-in * input max * weight max (max-pool keeps it)."""
    return in_ch * spec.kernel * spec.kernel * input_max(spec) * weight_max(spec)


@dataclass(frozen=True, eq=False)
class IntLayer:
    """One integer layer: its netdef spec, input channels and integer parameters."""
    spec: LayerSpec
    in_ch: int
    weights: np.ndarray | None            # int8 (O, I, k, k); None for an upsample layer
    thresholds: np.ndarray | None = None  # int16 / int32 (O, 3), non-decreasing per row; None for the head
    signs: np.ndarray | None = None       # int8 (O,) +1 / -1: compare sign * acc; None for the head
    bias: np.ndarray | None = None        # int32 (O,), head only
    anchors_q16: np.ndarray | None = None  # head only: int64 (A, 2) anchor w, h in 2**-16 grid cells
    out_multiplier: int = 0               # head only: value = (acc + bias) * out_multiplier * 2**-out_shift
    out_shift: int = 0

    @property
    def out_scale(self) -> float:
        """A head's output scale as a float (for reference decoders and reports only)."""
        return float(self.out_multiplier) * 2.0 ** -self.out_shift

    @property
    def anchors(self) -> np.ndarray:
        """float64 (A, 2) anchors of a head in grid cells (reporting only)."""
        return self.anchors_q16.astype(np.float64) / (1 << ANCHOR_FRAC_BITS)

    @property
    def acc_bound(self) -> int:
        """Worst-case |accumulator| (bias excluded)."""
        return accumulator_bound(self.spec, self.in_ch)


@dataclass(frozen=True, eq=False)
class IntegerModel:
    """A converted network: the layers (heads with their anchors and output scales) and input size."""
    layers: tuple[IntLayer, ...]
    input_size: int           # default square input side in pixels
    separated: bool = False   # True: made by the separated (lossy) conversion, for comparison
    metadata: str = '{}'      # JSON object: provenance (training config, checkpoint, conversion)

    @property
    def specs(self) -> tuple[LayerSpec, ...]:
        """The layer table."""
        return tuple(layer.spec for layer in self.layers)

    @property
    def heads(self) -> list[IntLayer]:
        """The head layers, in table order."""
        return [self.layers[i] for i in netdef.heads(self.specs)]

    @property
    def head_strides(self) -> list[int]:
        """Input pixels per grid cell of each head."""
        return netdef.head_strides(self.specs)

    @property
    def stride(self) -> int:
        """The coarsest stride: input sides must be multiples of it."""
        return netdef.total_stride(self.specs)

    @property
    def head(self) -> IntLayer:
        """The only head of a single-head model (ValueError otherwise)."""
        heads = self.heads
        if len(heads) != 1:
            raise ValueError(f'this model has {len(heads)} heads')
        return heads[0]

    @property
    def decoders(self) -> list:
        """Each head's decoding parameters (engine.decode.HeadDecoder), in table order."""
        from .decode import HeadDecoder   # decode imports this module
        return [HeadDecoder(h.anchors_q16, h.out_multiplier, h.out_shift, s)
                for h, s in zip(self.heads, self.head_strides)]

    # the single head's parameters, for single-head models (version-1 files and their users)
    anchors_q16 = property(lambda self: self.head.anchors_q16)
    out_multiplier = property(lambda self: self.head.out_multiplier)
    out_shift = property(lambda self: self.head.out_shift)
    out_scale = property(lambda self: self.head.out_scale)
    anchors = property(lambda self: self.head.anchors)

    def check(self) -> None:
        """Raise ValueError naming the layer unless every array has its dtype, shape and range."""
        specs = self.specs
        netdef.check_layers(tuple(_with_float_anchors(layer) for layer in self.layers))
        netdef.check_input_size(self.input_size, specs)
        for layer, in_ch in zip(self.layers, netdef.in_channels(specs)):
            _check_layer(layer, in_ch)


def _with_float_anchors(layer: IntLayer) -> LayerSpec:
    """The layer's spec with a head's fixed-point anchors as floats (for netdef.check_layers)."""
    if not layer.spec.info.is_head or layer.anchors_q16 is None:
        return layer.spec
    return replace(layer.spec, anchors=tuple(map(tuple, layer.anchors.tolist())))


def _check_head(layer: IntLayer) -> None:
    """Anchors and output scale of a head (ValueError naming it)."""
    name, a = layer.spec.name, layer.anchors_q16
    if a is None or a.dtype != np.int64 or a.ndim != 2 or a.shape != (layer.spec.out_ch // netdef.VALUES_PER_ANCHOR, 2) \
            or (a <= 0).any():
        raise ValueError(f'layer {name}: anchors must be positive int64 (A, 2), got '
                         f'{getattr(a, "dtype", None)} {getattr(a, "shape", None)}')
    if not (1 << (MULTIPLIER_BITS - 1)) <= layer.out_multiplier < (1 << MULTIPLIER_BITS):
        raise ValueError(f'layer {name}: out_multiplier {layer.out_multiplier} outside [2**30, 2**31)')
    if not MIN_OUT_SHIFT <= layer.out_shift <= MAX_OUT_SHIFT:
        raise ValueError(f'layer {name}: out_shift {layer.out_shift} outside [{MIN_OUT_SHIFT}, {MAX_OUT_SHIFT}]')


def _check_layer(layer: IntLayer, in_ch: int) -> None:
    """Dtype, shape and range checks of one layer (ValueError naming it)."""
    s, name = layer.spec, layer.spec.name
    if layer.in_ch != in_ch:
        raise ValueError(f'layer {name}: {layer.in_ch} input channels, the table implies {in_ch}')
    if not s.info.is_head and (layer.anchors_q16 is not None or layer.out_multiplier or layer.out_shift):
        raise ValueError(f'layer {name}: only heads have anchors and an output scale')
    if not s.info.has_weights:
        if any(a is not None for a in (layer.weights, layer.thresholds, layer.signs, layer.bias)):
            raise ValueError(f'layer {name}: a {s.kind} layer has no parameters')
        return
    w = layer.weights
    if w.dtype != np.int8 or w.shape != (s.out_ch, in_ch, s.kernel, s.kernel):
        raise ValueError(f'layer {name}: weights must be int8 {(s.out_ch, in_ch, s.kernel, s.kernel)}, '
                         f'got {w.dtype} {w.shape}')
    if s.weight_bits == BINARY_WEIGHT_BITS and not np.isin(w, (-1, 1)).all():
        raise ValueError(f'layer {name}: binary weights must be +-1')
    if (np.abs(w.astype(np.int16)) > weight_max(s)).any():
        raise ValueError(f'layer {name}: weights outside [-{weight_max(s)}, {weight_max(s)}]')
    if s.info.is_head:
        b = layer.bias
        if b is None or b.dtype != np.int32 or b.shape != (s.out_ch,):
            raise ValueError(f'layer {name}: bias must be int32 ({s.out_ch},)')
        if int(np.abs(b.astype(np.int64)).max(initial=0)) + layer.acc_bound >= INT32_LIMIT:
            raise ValueError(f'layer {name}: accumulator plus bias can overflow int32')
        if layer.thresholds is not None or layer.signs is not None:
            raise ValueError(f'layer {name}: the head has no thresholds')
        _check_head(layer)
        return
    t, sg = layer.thresholds, layer.signs
    if t is None or t.dtype not in (np.int16, np.int32) or t.shape != (s.out_ch, N_THRESHOLDS):
        raise ValueError(f'layer {name}: thresholds must be int16/int32 ({s.out_ch}, {N_THRESHOLDS})')
    if t.dtype.itemsize not in s.info.threshold_bytes:
        allowed = '/'.join(f'int{8 * n}' for n in s.info.threshold_bytes)
        raise ValueError(f'layer {name}: {s.kind}-layer thresholds must be {allowed}')
    r = layer.acc_bound
    t64 = t.astype(np.int64)
    if (t64 < -r - 1).any() or (t64 > r).any():
        raise ValueError(f'layer {name}: thresholds outside the accumulator range [{-r - 1}, {r}]')
    if (np.diff(t64, axis=1) < 0).any():
        raise ValueError(f'layer {name}: thresholds must be non-decreasing per channel')
    if sg is None or sg.dtype != np.int8 or sg.shape != (s.out_ch,) or not np.isin(sg, (-1, 1)).all():
        raise ValueError(f'layer {name}: signs must be int8 +-1 ({s.out_ch},)')
    if layer.bias is not None:
        raise ValueError(f'layer {name}: only the head has a bias')
