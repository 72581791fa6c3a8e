"""The standard ONNX export: the integer network as plain ONNX operators (onnxruntime, OpenCV DNN).

    image   uint8 (N, H, W, 3) BGR letterboxed canvas, H and W multiples of the total stride
      -> Cast float32 -> Transpose NCHW
      -> per first/hidden/fixed layer: [Concat of its inputs] -> Conv (integer weights, signs folded)
         [-> MaxPool 2x2 -> Mul signs] -> Greater(acc, tau_k) for k = 0, 1, 2 -> Cast float32 -> Sum = code 0..3
      -> per upsample layer: Resize nearest 2x (asymmetric, floor): each code repeated 2x2
      -> per head: Conv -> Cast int32 -> Add int32 bias
    one output per head, named after the head layer ('head' in the v1 table; 'head16', 'head8'
    in v2): int32 (N, A*5, H/s, W/s), s the head's stride: exactly engine.runtime.run_heads_batch's integers

Decoding and NMS stay outside the graph (engine.runtime.decode_heads, as backend.py does):
the fixed-point sigmoid/exp tables and the cross-multiplied NMS have no exact ONNX form.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from .. import netdef
from ..engine.model import IntegerModel, IntLayer
from . import meta
from .graph import GraphBuilder, check_float32_exact, signed_weights, walk
from .meta import INPUT

OPSET = 17              # Conv/MaxPool/Greater/Sum/Cast in this form since 13; ORT and OpenCV read 17
IR_VERSION = 8          # the IR of opset 17: readers that refuse newer IRs still load the file
NHWC_TO_NCHW = [0, 3, 1, 2]


def _threshold(g: GraphBuilder, acc: str, prefix: str, thresholds: np.ndarray) -> str:
    """code = sum_k [acc > tau_k]: three comparisons with per-channel (1, O, 1, 1) thresholds."""
    bits = []
    for k, tau in enumerate(thresholds.T.astype(np.float32)):            # tau: (O,) exact, |tau| <= 2**24
        t = g.const(f'{prefix}.tau{k}', tau.reshape(1, -1, 1, 1))
        above = g.node('Greater', [acc, t], f'{prefix}.gt{k}')
        bits.append(g.node('Cast', [above], f'{prefix}.bit{k}', to=TensorProto.FLOAT))
    return g.node('Sum', bits, f'{prefix}.code')


def _hidden(g: GraphBuilder, x: str, layer: IntLayer) -> str:
    """A first, hidden or fixed layer: float codes (or pixels) (N, I, H, W) -> float codes (N, O, H', W')."""
    prefix = layer.spec.name
    weights, post_signs = signed_weights(layer)
    acc = g.conv(x, prefix, layer, weights)
    if layer.spec.pool:
        acc = g.maxpool(acc, prefix)
    if post_signs is not None:
        s = g.const(f'{prefix}.sign', post_signs.reshape(1, -1, 1, 1))
        acc = g.node('Mul', [acc, s], f'{prefix}.signed')
    return _threshold(g, acc, prefix, layer.thresholds)


def _head(g: GraphBuilder, x: str, layer: IntLayer) -> str:
    """The head: float codes -> int32 acc + bias; the bias is added in int32, so it may be any int32."""
    prefix = layer.spec.name
    acc = g.conv(x, prefix, layer, layer.weights.astype(np.float32))
    acc = g.node('Cast', [acc], f'{prefix}.acc_i32', to=TensorProto.INT32)
    bias = g.const(f'{prefix}.bias', layer.bias.astype(np.int32).reshape(1, -1, 1, 1))
    return g.node('Add', [acc, bias], prefix)


def _upsample(g: GraphBuilder, x: str, layer: IntLayer) -> str:
    """An upsample layer: float codes (N, C, H, W) -> (N, C, 2H, 2W), each code repeated 2x2."""
    return g.upsample(x, layer.spec.name)


EMIT = {'first': _hidden, 'hidden': _hidden, 'fixed': _hidden, 'upsample': _upsample, 'head': _head}


def build(model: IntegerModel) -> onnx.ModelProto:
    """The ONNX graph of a checked integer model (ConversionError if float32 would not be exact)."""
    model.check()
    check_float32_exact(model, bias_in_float=False)
    g = GraphBuilder()
    x = g.node('Cast', [INPUT], 'pixels', to=TensorProto.FLOAT)
    x = g.node('Transpose', [x], 'pixels_nchw', perm=NHWC_TO_NCHW)        # (N, 3, H, W)
    heads = walk(g, model, x, EMIT)
    assert heads == [h.spec.name for h in model.heads]   # the backend finds the outputs by head name
    graph = helper.make_graph(
        g.nodes, 'ifq_tinier_yolo',
        [helper.make_tensor_value_info(INPUT, TensorProto.UINT8,
                                       ['batch', 'height', 'width', netdef.IN_CHANNELS])],
        [helper.make_tensor_value_info(h.spec.name, TensorProto.INT32,
                                       ['batch', h.spec.out_ch, f'height/{s}', f'width/{s}'])
         for h, s in zip(model.heads, model.head_strides)],
        g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                              producer_name='ifq-tinier-yolo', doc_string=__doc__.split('\n')[0])
    helper.set_model_props(proto, meta.to_props(model, 'onnx'))
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    return proto
