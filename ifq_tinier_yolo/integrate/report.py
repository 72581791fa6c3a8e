"""`report`: per-layer table, model bytes, and feature-map memory of the engine vs the float network.

Feature-map memory counts the maps held between layers at their storage width (the working
buffers inside a layer, im2col columns or Winograd tiles, are left out for both networks):
engine: uint8 image, 2-bit codes packed four per byte (`runtime.run(..., packed=True)`),
int32 head; float network: float32 image and maps. The peak is the largest input + output
pair of one layer. numpy only: no torch needed.
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from .. import netdef
from ..boxes import anchors_fixed
from ..engine import modelfile as fmt
from ..engine import runtime
from ..engine.layers import CODES_PER_BYTE
from ..engine.model import N_THRESHOLDS, IntegerModel, IntLayer
from ..errors import ModelFileError
from ..netdef import LayerSpec

FLOAT_BYTES = 4
INT32_BYTES = 4
BN_PARAMS = 4             # gamma, beta, running mean, running var per channel of the float network
# darknet yolov2-tiny-voc (PAPER.md): 3x3 convs 16..1024 with BN, 1x1 conv to 125 with bias
TINY_YOLO_CONVS = ((3, 16, 3), (16, 32, 3), (32, 64, 3), (64, 128, 3), (128, 256, 3), (256, 512, 3),
                   (512, 1024, 3), (1024, 1024, 3))
TINY_YOLO_HEAD = (1024, 125)


def tiny_yolo_bytes() -> int:
    """float32 parameter bytes of Tiny-YOLO (yolov2-tiny-voc): 15,867,885 parameters, the paper's 63 MB."""
    convs = sum(i * o * k * k + BN_PARAMS * o for i, o, k in TINY_YOLO_CONVS)
    i, o = TINY_YOLO_HEAD
    return FLOAT_BYTES * (convs + i * o + o)


def float_param_bytes(specs: tuple[LayerSpec, ...]) -> int:
    """float32 parameter bytes of the same network in float: weights, BatchNorm, head bias."""
    n = 0
    for spec, c in zip(specs, netdef.in_channels(specs)):
        if not spec.info.has_weights:   # an upsample has no parameters
            continue
        n += spec.out_ch * c * spec.kernel * spec.kernel
        n += spec.out_ch if spec.info.is_head else BN_PARAMS * spec.out_ch
    return FLOAT_BYTES * n


def map_shapes(specs: tuple[LayerSpec, ...], size: int) -> list[tuple[int, int, int]]:
    """(C, H, W) of the input image and of every layer's output at a square input of `size`."""
    shapes = [(netdef.IN_CHANNELS, size, size)]
    for spec, src in zip(specs, netdef.sources(specs)):
        h = shapes[src[0] + 1][1] if src else size
        if spec.info.upsamples:
            h *= netdef.UPSAMPLE
        else:
            h = (h - 1) // spec.stride + 1              # 'same' padding
            h = h // 2 if spec.pool else h
        shapes.append((spec.out_ch, h, h))
    return shapes


def feature_memory(specs: tuple[LayerSpec, ...], size: int) -> dict[str, tuple[int, str]]:
    """Peak bytes of the maps alive while a layer runs (its inputs, its output, and maps kept for
    later layers) -> {'packed', 'uint8', 'float'}: (bytes, layer)."""
    shapes = map_shapes(specs, size)
    n = [int(np.prod(s)) for s in shapes]              # index 0: the image, i + 1: layer i
    head = [False] + [s.info.is_head for s in specs]
    widths = {
        'packed': [n[0]] + [INT32_BYTES * k if hd else -(-c // CODES_PER_BYTE) * h * w
                            for k, hd, (c, h, w) in zip(n[1:], head[1:], shapes[1:])],
        'uint8': [n[0]] + [INT32_BYTES * k if hd else k for k, hd in zip(n[1:], head[1:])],
        'float': [FLOAT_BYTES * k for k in n],
    }
    src = [tuple(j + 1 for j in s) or (0,) for s in netdef.sources(specs)]
    last_use = {j: i for i, s in enumerate(src) for j in s}
    live = [[j for j in range(i + 2) if j == i + 1 or last_use.get(j, -1) >= i] for i in range(len(specs))]
    out = {}
    for key, b in widths.items():
        totals = [sum(b[j] for j in maps) for maps in live]
        i = int(np.argmax(totals))
        out[key] = (totals[i], specs[i].name)
    return out


def placeholder_model(specs: tuple[LayerSpec, ...] = netdef.LAYERS, size: int = netdef.INPUT_SIZE) -> IntegerModel:
    """A valid model of the table (heads with their anchors) with placeholder parameters (sizes only)."""
    layers = []
    for spec, c in zip(specs, netdef.in_channels(specs)):
        bare = replace(spec, anchors=())
        if not spec.info.has_weights:
            layers.append(IntLayer(bare, c, None))
            continue
        w = np.ones((spec.out_ch, c, spec.kernel, spec.kernel), dtype=np.int8)
        if spec.info.is_head:
            a = anchors_fixed(spec.anchors)
            layers.append(IntLayer(bare, c, w, bias=np.zeros(spec.out_ch, dtype=np.int32), anchors_q16=a,
                                   out_multiplier=1 << 30, out_shift=40))
        else:
            narrowest = np.dtype(f'int{8 * spec.info.threshold_bytes[0]}')   # int32 first layer, int16 hidden
            t = np.zeros((spec.out_ch, N_THRESHOLDS), dtype=narrowest)
            layers.append(IntLayer(bare, c, w, t, np.ones(spec.out_ch, dtype=np.int8)))
    return IntegerModel(tuple(layers), size)


def table_lines(model: IntegerModel, size: int) -> list[str]:
    """The per-layer table: kind, input and output maps, weight / threshold bits, file bytes."""
    shapes = map_shapes(model.specs, size)
    rows = [('layer', 'kind', 'input', 'output', 'w bits', 'thr bits', 'weights', 'bytes')]
    for i, (layer, src) in enumerate(zip(model.layers, netdef.sources(model.specs))):
        s = layer.spec
        thr = 'int32 bias' if s.info.is_head else f'{8 * layer.thresholds.dtype.itemsize}' \
            if layer.thresholds is not None else '-'
        c_in = sum(shapes[j + 1][0] for j in src) if src else netdef.IN_CHANNELS
        _, h, w = shapes[src[0] + 1] if src else shapes[0]
        weights = layer.weights.size if layer.weights is not None else 0
        rows.append((s.name, s.kind, f'{c_in}x{h}x{w}', 'x'.join(map(str, shapes[i + 1])),
                     str(s.weight_bits), thr, f'{weights:,}', f'{fmt.section_bytes(layer):,}'))
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    return ['  '.join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]


def report_lines(model: IntegerModel, size: int) -> list[str]:
    """All report lines (stable, parseable)."""
    data = fmt.to_bytes(model)
    n_bytes = len(data)
    fl = float_param_bytes(model.specs)
    tiny = tiny_yolo_bytes()
    mem = feature_memory(model.specs, size)
    lines = table_lines(model, size)
    for head, stride in zip(model.heads, model.head_strides):
        anchors = ', '.join(f'{w:.3f}x{h:.3f}' for w, h in head.anchors)
        lines.append(f'head {head.spec.name}: stride {stride}, grid {size // stride}x{size // stride}, '
                     f'anchors (cells) {anchors}, output scale {head.out_multiplier} * 2**-{head.out_shift}')
    lines += [f'conversion {"separated" if model.separated else "integrated"}',
              f'model bytes {n_bytes}',
              f'float32 parameter bytes of the same network {fl} ({fl / n_bytes:.1f}x the model)',
              f'Tiny-YOLO float32 bytes {tiny} ({tiny / n_bytes:.0f}x the model)',
              f'input {size}x{size}',
              f'engine feature-map peak bytes {mem["packed"][0]} at {mem["packed"][1]} (uint8 image, '
              f'2-bit codes packed 4 per byte, int32 head; {mem["uint8"][0]} with uint8 codes)',
              f'float feature-map peak bytes {mem["float"][0]} at {mem["float"][1]} (float32 maps)',
              f'feature memory ratio {mem["float"][0] / mem["packed"][0]:.2f}',
              native_memory_line(data, size)]
    return lines


def native_memory_line(model_bytes: bytes, size: int) -> str:
    """The native runtime's measured peak feature memory (line buffers, code sums, int32 heads,
    the canvas streamed row by row) and its ratio to the float network's peak."""
    from ..native import NativeUnavailable, feature_memory   # builds the library on first use
    try:
        m = feature_memory(model_bytes, size)
    except NativeUnavailable as e:
        return f'native feature memory ratio unavailable ({str(e).splitlines()[0]})'
    return f'native feature memory ratio {m.ratio:.1f} ({m.native_bytes} bytes: line buffers, code sums, int32 heads)'


def cli_report(args: argparse.Namespace) -> int:
    """`report [--model M.ifq] [--img-size S] [--table]`: prints the table and the size lines."""
    if getattr(args, 'table', False):
        model = placeholder_model()
    elif not args.model.is_file():
        raise ModelFileError(f'{args.model}: no such model file (convert a checkpoint first, or use '
                             f'report --table for the netdef layer table)')
    else:
        model = runtime.load_model(args.model)
    size = args.img_size or model.input_size
    netdef.check_input_size(size, model.specs)
    print('\n'.join(report_lines(model, size)))
    return 0
