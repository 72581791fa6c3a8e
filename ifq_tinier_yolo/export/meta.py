"""What an exported graph carries besides its nodes: the layer table, anchors and output scale.

Stored as ONNX metadata_props (string key -> string value), so that the `.onnx` file alone is
enough to letterbox, run and decode: `backend.load` reads them back. numpy only (no onnx).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from .. import netdef
from ..engine.decode import MAX_ANCHOR_CELLS
from ..engine.model import ANCHOR_FRAC_BITS, MAX_OUT_SHIFT, MIN_OUT_SHIFT, MULTIPLIER_BITS, IntegerModel
from ..netdef import LayerSpec

FORMAT = 'ifq-tinier-yolo-onnx'   # value of the 'ifq.format' key: marks our exports
VERSION = 1                       # value of 'ifq.version'; a reader refuses other versions
PREFIX = 'ifq.'
INPUT = 'image'                   # the standard graph's input: uint8 (N, H, W, 3) BGR canvases


@dataclass(frozen=True)
class HeadParams:
    """Everything the fixed-point decoder needs besides the head integers (as IntegerModel names them)."""
    specs: tuple[LayerSpec, ...]
    anchors_q16: np.ndarray   # int64 (A, 2) anchor w, h in 2**-16 grid cells
    input_size: int           # default square input side in pixels
    out_multiplier: int       # head value = (acc + bias) * out_multiplier * 2**-out_shift
    out_shift: int

    @property
    def stride(self) -> int:
        """Input pixels per grid cell."""
        return netdef.total_stride(self.specs)


def to_props(model: IntegerModel, graph_kind: str) -> dict[str, str]:
    """metadata_props of an export of `model`; graph_kind 'onnx' or 'qonnx'."""
    props = {
        'format': FORMAT,
        'version': str(VERSION),
        'graph': graph_kind,
        'layers': json.dumps([asdict(s) for s in model.specs]),
        'anchors_q16': json.dumps(model.anchors_q16.tolist()),
        'anchor_frac_bits': str(ANCHOR_FRAC_BITS),
        'input_size': str(model.input_size),
        'out_multiplier': str(model.out_multiplier),
        'out_shift': str(model.out_shift),
        'separated': str(int(model.separated)),
        'source': model.metadata,   # the .ifq's provenance JSON, unchanged
    }
    return {PREFIX + k: v for k, v in props.items()}


def from_props(props: dict[str, str], source: str) -> HeadParams:
    """Parse and check metadata_props written by `to_props`; ValueError with a one-line message otherwise."""
    if props.get(PREFIX + 'format') != FORMAT:
        raise ValueError(f'{source}: not an ifq-tinier-yolo export (no {PREFIX}format metadata); '
                         f'make one with `python -m ifq_tinier_yolo export MODEL.ifq --format onnx`')
    if props.get(PREFIX + 'version') != str(VERSION):
        raise ValueError(f'{source}: export version {props.get(PREFIX + "version")!r}, '
                         f'this program reads {VERSION}')
    try:
        specs = tuple(LayerSpec(**{k: _tuples(v) for k, v in row.items()})
                      for row in json.loads(props[PREFIX + 'layers']))
        anchors = np.array(json.loads(props[PREFIX + 'anchors_q16']), dtype=np.int64)
        frac = int(props[PREFIX + 'anchor_frac_bits'])
        params = HeadParams(specs, anchors, int(props[PREFIX + 'input_size']),
                            int(props[PREFIX + 'out_multiplier']), int(props[PREFIX + 'out_shift']))
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ValueError(f'{source}: malformed export metadata ({type(e).__name__}: {e})') from None
    _check(params, frac, source)
    return params


def _tuples(value):
    """JSON lists back to the tuples LayerSpec holds (asdict wrote tuples as lists)."""
    return tuple(map(_tuples, value)) if isinstance(value, list) else value


def _check(p: HeadParams, frac: int, source: str) -> None:
    """The checks IntegerModel.check and the .ifq reader make on these fields (ValueError)."""
    a = p.anchors_q16
    if frac != ANCHOR_FRAC_BITS or a.ndim != 2 or a.shape[1] != 2 or (a <= 0).any() \
            or (a >= MAX_ANCHOR_CELLS << ANCHOR_FRAC_BITS).any():
        raise ValueError(f'{source}: malformed anchors in the export metadata')
    if not (1 << (MULTIPLIER_BITS - 1)) <= p.out_multiplier < (1 << MULTIPLIER_BITS) \
            or not MIN_OUT_SHIFT <= p.out_shift <= MAX_OUT_SHIFT:
        raise ValueError(f'{source}: output scale {p.out_multiplier} * 2**-{p.out_shift} out of range')
    try:
        netdef.check_layers(p.specs, tuple(map(tuple, a.astype(np.float64) / (1 << frac))))
        netdef.check_input_size(p.input_size, p.specs)
    except ValueError as e:
        raise ValueError(f'{source}: export metadata: {e}') from None
