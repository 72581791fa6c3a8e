"""Shared by the ONNX and QONNX writers: reading the integer model, proving float32 exactness,
folding the comparison signs, and a small node/initializer builder.

Both graphs carry integers in float32 tensors (the only type every runtime convolves). That is
exact while every product and partial sum is an integer below 2**24 (engine/layers.py,
FLOAT32_EXACT), which `check_float32_exact` proves per layer from the worst-case accumulator.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..engine.layers import FLOAT32_EXACT
from ..engine.model import IntegerModel, IntLayer
from ..engine.modelfile import read
from ..errors import ConversionError, ModelFileError
from ..netdef import UPSAMPLE

ZIP_MAGIC = b'PK\x03\x04'   # torch.save writes a zip archive
CHANNEL_AXIS = 1            # both graphs run NCHW


def read_integer_model(path: str | Path) -> IntegerModel:
    """The `.ifq` model at `path`; ModelFileError (one line) for a float checkpoint or a damaged file."""
    path = Path(path)
    if path.is_file():
        with path.open('rb') as f:
            magic = f.read(len(ZIP_MAGIC))
        if path.suffix.lower() == '.pt' or magic == ZIP_MAGIC:
            raise ModelFileError(f'{path}: a float checkpoint, not an integer model; convert it first: '
                                 f'python -m ifq_tinier_yolo convert {path} --out MODEL.ifq')
    return read(path)


def check_float32_exact(model: IntegerModel, bias_in_float: bool) -> None:
    """ConversionError naming the first layer whose worst-case |accumulator| (plus |bias| when the
    graph adds the bias in float32) reaches 2**24, where float32 stops holding every integer."""
    for layer in model.layers:
        bound = layer.acc_bound
        if bias_in_float and layer.bias is not None:
            bound += int(np.abs(layer.bias.astype(np.int64)).max(initial=0))
        if bound >= FLOAT32_EXACT:
            raise ConversionError(f'layer {layer.spec.name}: worst-case accumulator {bound} reaches 2**24; '
                                  f'float32 tensors would not carry it exactly')


def signed_weights(layer: IntLayer) -> tuple[np.ndarray, np.ndarray | None]:
    """(float32 (O, I, k, k) weights, float32 (O,) signs to apply after the max-pool, or None).

    sign * conv(w) = conv(sign * w), so without a pool the signs go into the weights (binary
    weights stay +-1). A max-pool does not commute with a negative sign, so a pooled layer
    with any negative sign keeps its weights and multiplies the pooled accumulators.
    """
    w = layer.weights.astype(np.float32)
    if layer.signs is None:
        return w, None
    signs = layer.signs.astype(np.float32)
    if not layer.spec.pool:
        return w * signs[:, None, None, None], None
    return w, (signs if (signs < 0).any() else None)


class GraphBuilder:
    """Collects nodes and initializers; names are made unique by the caller's layer prefixes."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        """Add an initializer; returns its name."""
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, domain: str = '', **attrs) -> str:
        """Add one single-output node named after its output; returns the output name."""
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain or None, **attrs))
        return output

    def conv(self, x: str, prefix: str, layer: IntLayer, weights: np.ndarray) -> str:
        """A 'same'-padded convolution without bias, as the layer table says.

        Every attribute is spelt out, defaults included: qonnx's LowerConvsToMatMul (FINN's
        route to hardware) reads `group` and `dilations` and fails when they are absent.
        """
        k, p = layer.spec.kernel, layer.spec.kernel // 2
        w = self.const(f'{prefix}.weight', weights)
        return self.node('Conv', [x, w], f'{prefix}.acc', kernel_shape=[k, k], pads=[p, p, p, p],
                         strides=[layer.spec.stride] * 2, dilations=[1, 1], group=1)

    def maxpool(self, x: str, prefix: str) -> str:
        """2x2 stride-2 max-pool; ONNX's floor mode drops an odd last row/column like the engine.
        `pads` spelt out for qonnx's channels-last conversion, which requires it."""
        return self.node('MaxPool', [x], f'{prefix}.pool', kernel_shape=[2, 2], strides=[2, 2],
                         pads=[0, 0, 0, 0])

    def upsample(self, x: str, prefix: str) -> str:
        """Nearest-neighbour 2x of NCHW codes, out[y, x] = in[y // 2, x // 2] as engine.layers.upsample2.

        Resize with `asymmetric` coordinates maps output pixel y to input y / 2 and `floor` takes
        y // 2: every code is repeated 2x2, exact on any side. The roi input is an empty
        initializer rather than left out: opset 11 requires it, and qonnx's executor looks up
        every input by name.
        """
        roi = self.const(f'{prefix}.roi', np.zeros(0, np.float32))
        scales = self.const(f'{prefix}.scales', np.array([1, 1, UPSAMPLE, UPSAMPLE], np.float32))   # N, C, H, W
        return self.node('Resize', [x, roi, scales], f'{prefix}.up', mode='nearest',
                         coordinate_transformation_mode='asymmetric', nearest_mode='floor')


# (builder, input tensor name, layer) -> output tensor name: how a graph writes one kind of layer
Emitter = Callable[[GraphBuilder, str, IntLayer], str]


def walk(g: GraphBuilder, model: IntegerModel, first_input: str, emit: dict[str, Emitter]) -> list[str]:
    """Emit every layer of the table in order; returns the head output names (the graph outputs).

    A layer reads the row above, or the layers its spec names in `inputs`, several of them
    joined by one Concat along channels in that order (`LAYER.in`); a kind without an emitter
    is refused by name.
    """
    tensors: dict[str, str] = {}
    x, heads = first_input, []
    for layer in model.layers:
        s = layer.spec
        if s.inputs:
            sources = [tensors[n] for n in s.inputs]
            x = sources[0] if len(sources) == 1 else g.node('Concat', sources, f'{s.name}.in', axis=CHANNEL_AXIS)
        if s.kind not in emit:
            raise ConversionError(f'layer {s.name}: no graph form for a {s.kind!r} layer yet')
        x = tensors[s.name] = emit[s.kind](g, x, layer)
        if s.info.is_head:
            heads.append(x)
    return heads
