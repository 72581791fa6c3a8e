"""The QONNX export: the integer network in the dialect the FINN compiler reads.

    global_in   float32 (1, 3, S, S) NCHW, annotated UINT8: the BGR canvas (FINN takes float containers)
      -> per first/hidden/fixed layer: [Concat of its inputs, UINT2] -> Conv (INT8 / BIPOLAR weights,
         signs folded) [-> MaxPool 2x2 -> Mul signs] -> MultiThreshold (C, 3) thresholds tau + 1, out_dtype UINT2
      -> per upsample layer: Resize nearest 2x (asymmetric, floor), UINT2
      -> per head: Conv (INT8 weights) -> Add bias (INT32)
    one output per head, named after the head layer: float32 (1, A*5, S/s, S/s), s the head's
    stride, annotated INT32: engine.runtime.run_heads's integers (qonnx's cleanup renames them
    global_out, global_out_1, ... in the same order)

MultiThreshold counts x >= t; the engine counts acc > tau. On integers acc > tau is
acc >= tau + 1, so every threshold is written as tau + 1. Shapes are static (FINN needs them):
one file per input side. Datatypes are written as qonnx writes them (graph quantization
annotations with the key 'finn_datatype'), so this module needs onnx only, not qonnx.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from .. import netdef
from ..engine.model import IntegerModel, IntLayer
from . import meta
from .graph import GraphBuilder, check_float32_exact, signed_weights, walk

OPSET = 11                          # the standard opset qonnx and FINN prefer
IR_VERSION = 6                      # the IR of opset 11
QONNX_DOMAIN = 'qonnx.custom_op.general'
QONNX_OPSET = 1
INPUT = 'global_in'                 # the name qonnx's cleanup gives it anyway (outputs become global_out)
CODE_DTYPE = 'UINT2'                # 2-bit HWGQ codes 0..3
WEIGHT_DTYPE = {netdef.FIXED_WEIGHT_BITS: 'INT8', netdef.BINARY_WEIGHT_BITS: 'BIPOLAR'}   # by weight bits


class _QonnxBuilder(GraphBuilder):
    """GraphBuilder that also records the QONNX datatype of tensors."""

    def __init__(self):
        super().__init__()
        self.dtypes: dict[str, str] = {}

    def annotations(self) -> list[onnx.TensorAnnotation]:
        """The datatypes as TensorAnnotations, key 'finn_datatype' (qonnx ModelWrapper.set_tensor_datatype)."""
        out = []
        for name, dtype in self.dtypes.items():
            a = onnx.TensorAnnotation(tensor_name=name)
            a.quant_parameter_tensor_names.append(onnx.StringStringEntryProto(key='finn_datatype', value=dtype))
            out.append(a)
        return out


def _hidden(g: _QonnxBuilder, x: str, layer: IntLayer) -> str:
    """A first, hidden or fixed layer ending in one MultiThreshold node."""
    s, prefix = layer.spec, layer.spec.name
    weights, post_signs = signed_weights(layer)
    acc = g.conv(x, prefix, layer, weights)
    g.dtypes[f'{prefix}.weight'] = WEIGHT_DTYPE[s.weight_bits]
    if s.pool:
        acc = g.maxpool(acc, prefix)
    if post_signs is not None:
        sign = g.const(f'{prefix}.sign', post_signs.reshape(1, -1, 1, 1))
        g.dtypes[sign] = 'BIPOLAR'
        acc = g.node('Mul', [acc, sign], f'{prefix}.signed')
    # x >= tau + 1 is x > tau on integers; tau + 1 <= 2**24 stays exact in float32
    t = g.const(f'{prefix}.thresholds', (layer.thresholds.astype(np.int64) + 1).astype(np.float32))   # (O, 3)
    code = g.node('MultiThreshold', [acc, t], f'{prefix}.code', domain=QONNX_DOMAIN,
                  out_dtype=CODE_DTYPE, data_layout='NCHW')
    g.dtypes[code] = CODE_DTYPE
    return code


def _head(g: _QonnxBuilder, x: str, layer: IntLayer) -> str:
    """The head: Conv then Add of the bias (float32, exact: check_float32_exact counted the bias)."""
    prefix = layer.spec.name
    acc = g.conv(x, prefix, layer, layer.weights.astype(np.float32))
    g.dtypes[f'{prefix}.weight'] = WEIGHT_DTYPE[layer.spec.weight_bits]
    bias = g.const(f'{prefix}.bias', layer.bias.astype(np.float32).reshape(1, -1, 1, 1))
    g.dtypes[bias] = 'INT32'
    out = g.node('Add', [acc, bias], prefix)
    g.dtypes[out] = 'INT32'
    return out


def _upsample(g: _QonnxBuilder, x: str, layer: IntLayer) -> str:
    """An upsample layer: one Resize node; the codes stay UINT2."""
    out = g.upsample(x, layer.spec.name)
    g.dtypes[out] = CODE_DTYPE
    return out


EMIT = {'first': _hidden, 'hidden': _hidden, 'fixed': _hidden, 'upsample': _upsample, 'head': _head}


def build(model: IntegerModel, img_size: int | None = None) -> onnx.ModelProto:
    """The QONNX graph for a square input of img_size (default the model's); ConversionError if not exact."""
    model.check()
    size = img_size or model.input_size
    netdef.check_input_size(size, model.specs)
    check_float32_exact(model, bias_in_float=True)
    g = _QonnxBuilder()
    g.dtypes[INPUT] = 'UINT8'
    heads = walk(g, model, INPUT, EMIT)
    assert heads == [h.spec.name for h in model.heads]
    g.dtypes.update({n.output[0]: CODE_DTYPE for n in g.nodes if n.op_type == 'Concat'})   # concatenated codes
    graph = helper.make_graph(
        g.nodes, 'ifq_tinier_yolo_qonnx',
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [1, netdef.IN_CHANNELS, size, size])],
        [helper.make_tensor_value_info(h.spec.name, TensorProto.FLOAT, [1, h.spec.out_ch, size // s, size // s])
         for h, s in zip(model.heads, model.head_strides)],
        g.initializers)
    graph.quantization_annotation.extend(g.annotations())
    proto = helper.make_model(graph, producer_name='ifq-tinier-yolo',
                              opset_imports=[helper.make_opsetid('', OPSET),
                                             helper.make_opsetid(QONNX_DOMAIN, QONNX_OPSET)])
    proto.ir_version = IR_VERSION
    props = meta.to_props(model, 'qonnx')
    props[meta.PREFIX + 'input_size'] = str(size)   # the static side this file was written for
    helper.set_model_props(proto, props)
    onnx.checker.check_model(proto)
    return proto
