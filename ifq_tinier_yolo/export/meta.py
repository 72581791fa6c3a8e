"""What an exported graph carries besides its nodes: the layer table and each head's anchors and
output scale.

Stored as ONNX metadata_props (string key -> string value), so that the `.onnx` file alone is
enough to letterbox, run and decode: `backend.load` reads them back. numpy only (no onnx).

Version 2 (written) describes every head under `ifq.heads`; version 1 (single-head exports
written before layer graphs) kept the one head's parameters in `ifq.anchors_q16`,
`ifq.out_multiplier` and `ifq.out_shift`, and is still read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np

from .. import netdef
from ..engine.decode import MAX_ANCHOR_CELLS, MAX_STRIDE, HeadDecoder
from ..engine.model import ANCHOR_FRAC_BITS, MAX_OUT_SHIFT, MIN_OUT_SHIFT, MULTIPLIER_BITS, IntegerModel
from ..netdef import LayerSpec

FORMAT = 'ifq-tinier-yolo-onnx'   # value of the 'ifq.format' key: marks our exports
VERSION = 2                       # value of 'ifq.version' written
READS = ('1', '2')                # versions a reader accepts; others are refused
PREFIX = 'ifq.'
INPUT = 'image'                   # the standard graph's input: uint8 (N, H, W, 3) BGR canvases


@dataclass(frozen=True)
class ExportParams:
    """Everything besides the graph that running and decoding an export needs."""
    specs: tuple[LayerSpec, ...]        # the layer table, as IntegerModel.specs
    input_size: int                     # default square input side in pixels
    heads: tuple[str, ...]              # head layer names, table order: the graph's output names
    decoders: tuple[HeadDecoder, ...]   # each head's anchors, output scale and stride, table order


def to_props(model: IntegerModel, graph_kind: str) -> dict[str, str]:
    """metadata_props of an export of `model`; graph_kind 'onnx' or 'qonnx'."""
    heads = [{'name': h.spec.name, 'anchors_q16': h.anchors_q16.tolist(),
              'out_multiplier': h.out_multiplier, 'out_shift': h.out_shift} for h in model.heads]
    props = {
        'format': FORMAT,
        'version': str(VERSION),
        'graph': graph_kind,
        'layers': json.dumps(netdef.layers_to_list(model.specs)),
        'heads': json.dumps(heads),
        'anchor_frac_bits': str(ANCHOR_FRAC_BITS),
        'input_size': str(model.input_size),
        'separated': str(int(model.separated)),
        'source': model.metadata,   # the .ifq's provenance JSON, unchanged
    }
    return {PREFIX + k: v for k, v in props.items()}


def from_props(props: dict[str, str], source: str) -> ExportParams:
    """Parse and check metadata_props written by `to_props` (or a version-1 export); ValueError
    with a one-line message otherwise."""
    if props.get(PREFIX + 'format') != FORMAT:
        raise ValueError(f'{source}: not an ifq-tinier-yolo export (no {PREFIX}format metadata); '
                         f'make one with `python -m ifq_tinier_yolo export MODEL.ifq --format onnx`')
    version = props.get(PREFIX + 'version')
    if version not in READS:
        raise ValueError(f'{source}: export version {version!r}, this program reads {" and ".join(READS)}; '
                         f'export the .ifq again with this program')
    try:
        specs = netdef.layers_from_list(json.loads(props[PREFIX + 'layers']))
        rows = json.loads(props[PREFIX + 'heads']) if version != '1' else [
            {'name': specs[i].name, 'anchors_q16': json.loads(props[PREFIX + 'anchors_q16']),
             'out_multiplier': props[PREFIX + 'out_multiplier'], 'out_shift': props[PREFIX + 'out_shift']}
            for i in netdef.heads(specs)]
        frac = int(props[PREFIX + 'anchor_frac_bits'])
        size = int(props[PREFIX + 'input_size'])
        names = tuple(str(r['name']) for r in rows)
        anchors = [np.array(r['anchors_q16'], dtype=np.int64) for r in rows]
        scales = [(int(r['out_multiplier']), int(r['out_shift'])) for r in rows]
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ValueError(f'{source}: malformed export metadata ({type(e).__name__}: {e})') from None
    _check(specs, size, names, anchors, scales, frac, source)
    strides = netdef.head_strides(specs)
    decoders = tuple(HeadDecoder(a, m, n, s) for a, (m, n), s in zip(anchors, scales, strides))
    return ExportParams(specs, size, names, decoders)


def _check(specs: tuple[LayerSpec, ...], size: int, names: tuple[str, ...], anchors: list[np.ndarray],
           scales: list[tuple[int, int]], frac: int, source: str) -> None:
    """The checks IntegerModel.check and the .ifq reader make on these fields (ValueError)."""
    table_heads = [specs[i].name for i in netdef.heads(specs)]
    if list(names) != table_heads:
        raise ValueError(f'{source}: export metadata describes heads {list(names)}, the layer table has {table_heads}')
    for name, a, (mult, shift) in zip(names, anchors, scales):
        if frac != ANCHOR_FRAC_BITS or a.ndim != 2 or a.shape[1] != 2 or (a <= 0).any() \
                or (a >= MAX_ANCHOR_CELLS << ANCHOR_FRAC_BITS).any():
            raise ValueError(f'{source}: malformed anchors of head {name} in the export metadata')
        if not (1 << (MULTIPLIER_BITS - 1)) <= mult < (1 << MULTIPLIER_BITS) \
                or not MIN_OUT_SHIFT <= shift <= MAX_OUT_SHIFT:
            raise ValueError(f'{source}: output scale {mult} * 2**-{shift} of head {name} out of range')
    float_anchors = iter([tuple(map(tuple, a.astype(np.float64) / (1 << frac))) for a in anchors])
    with_anchors = tuple(replace(s, anchors=next(float_anchors)) if s.info.is_head else s for s in specs)
    try:
        netdef.check_layers(with_anchors)
        netdef.check_input_size(size, specs)
    except ValueError as e:
        raise ValueError(f'{source}: export metadata: {e}') from None
    if max(netdef.head_strides(specs)) > MAX_STRIDE:
        raise ValueError(f'{source}: export metadata: a head stride above {MAX_STRIDE}')
