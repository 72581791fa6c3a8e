"""The `.ifq` model file: IntegerModel <-> bytes (numpy + zlib only, no pickle).

docs/MODEL_FORMAT.md is the specification; this module is its one implementation. Layout,
all integers little-endian:

    header  16 B   magic 'IFQTYOLO', u16 version, u16 flags, u32 payload length P
    payload P  B   description, layer table, one section per layer, metadata (JSON)
    crc     4 B    u32 CRC-32 (zlib / IEEE 802.3) of header + payload

Version 2 holds a layer graph: rows name their inputs, heads carry their anchors and output scale
in their sections. Version 3 is version 2 plus one layer kind, 'fixed' (int8 weights on codes,
with thresholds). A model is written in the lowest of the two that holds its kinds, so that older
readers still load it where they can. Version 1 (a chain with one head, whose anchors and scale
sit in the description) is still read.

Every length and shape is checked on reading; any defect raises ModelFileError with a
one-line message naming the file.
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..fileio import read_bytes
from ..netdef import BINARY_WEIGHT_BITS, VALUES_PER_ANCHOR, LayerSpec
from .decode import MAX_ANCHOR_CELLS, MAX_STRIDE
from .model import ANCHOR_FRAC_BITS, N_THRESHOLDS, IntegerModel, IntLayer

MAGIC = b'IFQTYOLO'
VERSION = 3                           # the newest version written and read
READ_VERSIONS = (1, 2, 3)
FLAG_SEPARATED = 1                    # bit 0: made by the separated conversion
KNOWN_FLAGS = FLAG_SEPARATED
HEADER = struct.Struct('<8sHHI')      # magic, version, flags, payload length
DESCRIPTION_V1 = struct.Struct('<HHHHiB3x')   # input size, layers, anchors, anchor frac bits, multiplier, shift
DESCRIPTION = struct.Struct('<HHHH')  # input size, layers, anchor frac bits, 0
LAYER_ROW_V1 = struct.Struct('<16sBBBBHH')    # name, kind, kernel, stride, pool, in_ch, out_ch
LAYER_ROW = struct.Struct('<16sBBBBHHB4s3x')  # ... then number of inputs (0: the row above), input rows
MAX_INPUTS = 4
SECTION = struct.Struct('<IBBH')      # section bytes after this field, weight bits, threshold bytes, 0
HEAD_SCALE = struct.Struct('<iB3x')   # head sections: out_multiplier, out_shift
CRC = struct.Struct('<I')
KINDS = ('first', 'hidden', 'head', 'upsample', 'fixed')   # kind code = index
VERSION_KINDS = {1: 3, 2: 4, 3: 5}    # version -> how many of KINDS (from the first) it allows
NAME_BYTES = 16                       # layer names: ASCII, at most 15 characters, NUL padded
MAX_LAYERS, MAX_ANCHORS, MAX_CHANNELS = 64, 64, 1 << 15
MAX_INPUT_SIZE = 4096                 # default input side in pixels (the canvas alone is 48 MiB)
ALIGN = 4                             # sections are padded to multiples of 4 bytes
MAX_METADATA = 1 << 16                # bytes of UTF-8 JSON provenance


def _padding(n: int) -> int:
    """Zero bytes that bring n up to a multiple of ALIGN."""
    return -n % ALIGN


def _pack_bits(bits: np.ndarray) -> bytes:
    """bool array -> bytes, row-major, most significant bit first, unused low bits zero."""
    return np.packbits(bits.reshape(-1).astype(np.uint8), bitorder='big').tobytes()


def _weight_bytes(layer: IntLayer) -> bytes:
    """The weights as the file holds them: one sign bit each (1: +1) for binary layers, else int8 bytes."""
    if layer.spec.weight_bits == BINARY_WEIGHT_BITS:
        return _pack_bits(layer.weights > 0)
    return layer.weights.tobytes()


def _section(layer: IntLayer) -> bytes:
    """One layer section, its length field included."""
    s = layer.spec
    if not s.info.has_weights:
        body, head = b'', (0, 0)
    elif s.info.is_head:
        body = (HEAD_SCALE.pack(layer.out_multiplier, layer.out_shift) + layer.anchors_q16.astype('<i4').tobytes()
                + layer.bias.astype('<i4').tobytes() + _weight_bytes(layer))
        head = (s.weight_bits, 0)
    else:
        t_bytes = layer.thresholds.dtype.itemsize
        body = (layer.thresholds.astype(f'<i{t_bytes}').tobytes() + _weight_bytes(layer)
                + _pack_bits(layer.signs < 0))
        head = (s.weight_bits, t_bytes)
    body += bytes(_padding(len(body)))
    return SECTION.pack(SECTION.size - 4 + len(body), *head, 0) + body


def written_version(specs: tuple[LayerSpec, ...]) -> int:
    """The format version a model of this table is written in: 2, or 3 where it has a 'fixed' layer."""
    need = max(KINDS.index(s.kind) for s in specs) + 1
    return min(v for v, n in VERSION_KINDS.items() if v > 1 and n >= need)


def section_bytes(layer: IntLayer) -> int:
    """Size in the file of one layer's section (length field, header, arrays, padding)."""
    return len(_section(layer))


def to_bytes(model: IntegerModel) -> bytes:
    """Serialise a checked model (ValueError if it is not valid), as format version 2 or 3."""
    model.check()
    index = {layer.spec.name: i for i, layer in enumerate(model.layers)}
    parts = [DESCRIPTION.pack(model.input_size, len(model.layers), ANCHOR_FRAC_BITS, 0)]
    for layer in model.layers:
        s = layer.spec
        name = s.name.encode('ascii')
        if len(name) >= NAME_BYTES:
            raise ValueError(f'layer {s.name}: name longer than {NAME_BYTES - 1} characters')
        if len(s.inputs) > MAX_INPUTS:
            raise ValueError(f'layer {s.name}: more than {MAX_INPUTS} inputs')
        parts.append(LAYER_ROW.pack(name, KINDS.index(s.kind), s.kernel, s.stride, s.pool, layer.in_ch, s.out_ch,
                                    len(s.inputs), bytes(index[n] for n in s.inputs)))
    parts += [_section(layer) for layer in model.layers]
    meta = model.metadata.encode('utf-8')
    if len(meta) > MAX_METADATA or not isinstance(json.loads(meta), dict):
        raise ValueError(f'metadata must be a JSON object of at most {MAX_METADATA} bytes')
    parts += [struct.pack('<I', len(meta)), meta, bytes(_padding(len(meta)))]
    payload = b''.join(parts)
    header = HEADER.pack(MAGIC, written_version(model.specs), FLAG_SEPARATED if model.separated else 0, len(payload))
    return header + payload + CRC.pack(zlib.crc32(header + payload))


class _Reader:
    """A cursor over the payload; every read is bounds-checked."""

    def __init__(self, data: bytes, start: int, end: int, source: str):
        self.data, self.pos, self.end, self.source = data, start, end, source

    def fail(self, msg: str) -> ModelFileError:
        return ModelFileError(f'{self.source}: {msg}')

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise self.fail(f'{what} runs past the end of the payload')
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, st: struct.Struct, what: str) -> tuple:
        return st.unpack(self.take(st.size, what))

    def array(self, dtype: str, shape: tuple[int, ...], what: str) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64))
        raw = self.take(n * np.dtype(dtype).itemsize, what)
        return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(np.dtype(dtype).newbyteorder('='))

    def bits(self, n: int, what: str) -> np.ndarray:
        raw = np.frombuffer(self.take((n + 7) // 8, what), dtype=np.uint8)
        bits = np.unpackbits(raw, bitorder='big')
        if bits[n:].any():
            raise self.fail(f'{what}: unused padding bits are not zero')
        return bits[:n].astype(bool)


def _read_table(r: _Reader, n_layers: int, version: int) -> list[tuple[LayerSpec, int]]:
    """The layer table rows -> (spec, in_ch) per layer."""
    rows, names = [], []
    for i in range(n_layers):
        if version == 1:
            raw, kind, kernel, stride, pool, in_ch, out_ch = r.unpack(LAYER_ROW_V1, f'layer table row {i}')
            n_in, inputs = 0, b''
        else:
            raw, kind, kernel, stride, pool, in_ch, out_ch, n_in, inputs = r.unpack(LAYER_ROW, f'layer table row {i}')
        kinds = KINDS[:VERSION_KINDS[version]]
        name = raw.rstrip(b'\0')
        if b'\0' in name or not name or not name.isascii() or not name.decode().isprintable():
            raise r.fail(f'layer table row {i}: malformed name {raw!r}')
        if kind >= len(kinds) or not (0 < in_ch < MAX_CHANNELS and 0 < out_ch < MAX_CHANNELS) \
                or kernel == 0 or stride == 0:
            raise r.fail(f'layer {name.decode()}: malformed table row (kind {kind}, kernel {kernel}, '
                         f'stride {stride}, channels {in_ch} -> {out_ch})')
        if n_in > MAX_INPUTS or any(j >= i for j in inputs[:n_in]) or any(inputs[n_in:]):
            raise r.fail(f'layer {name.decode()}: malformed inputs (each must be an earlier row)')
        src = tuple(names[j] for j in inputs[:n_in])
        names.append(name.decode())
        rows.append((LayerSpec(name.decode(), kinds[kind], out_ch, kernel, stride, pool, src), in_ch))
    return rows


def _read_weights(r: _Reader, spec: LayerSpec, shape: tuple[int, ...]) -> np.ndarray:
    """int8 weights of `shape` from the file: sign bits (1: +1) for binary layers, else int8 bytes."""
    what = f'layer {spec.name} weights'
    if spec.weight_bits == BINARY_WEIGHT_BITS:
        return np.where(r.bits(int(np.prod(shape)), what), 1, -1).astype(np.int8).reshape(shape)
    return r.array('<i1', shape, what)


def _read_section(r: _Reader, spec: LayerSpec, in_ch: int, head_scale: tuple | None) -> IntLayer:
    """One layer section -> IntLayer (shapes from the table; lengths checked). head_scale:
    (multiplier, shift, anchors) of a version-1 head, which its section does not hold."""
    start = r.pos
    size, w_bits, t_bytes, zero = r.unpack(SECTION, f'layer {spec.name} section header')
    end = start + 4 + size                                             # the length field is 4 bytes
    if size % ALIGN or size < SECTION.size - 4 or end > r.end or zero:
        raise r.fail(f'layer {spec.name}: malformed section header (length {size})')
    o, shape = spec.out_ch, (spec.out_ch, in_ch, spec.kernel, spec.kernel)
    if not spec.info.has_weights:
        if (w_bits, t_bytes) != (0, 0):
            raise r.fail(f'layer {spec.name}: a {spec.kind} section holds no arrays')
        layer = IntLayer(spec, in_ch, None)
    elif spec.info.is_head:
        if (w_bits, t_bytes) != (spec.weight_bits, 0):
            raise r.fail(f'layer {spec.name}: head section must hold {spec.weight_bits}-bit weights '
                         f'and no thresholds')
        scale = head_scale if head_scale is not None else \
            (*r.unpack(HEAD_SCALE, f'layer {spec.name} output scale'),
             r.array('<i4', (o // VALUES_PER_ANCHOR, 2), f'layer {spec.name} anchors').astype(np.int64))
        layer = IntLayer(spec, in_ch, bias=r.array('<i4', (o,), f'layer {spec.name} bias'),
                         weights=_read_weights(r, spec, shape),
                         out_multiplier=scale[0], out_shift=scale[1], anchors_q16=scale[2])
    else:
        if w_bits != spec.weight_bits or t_bytes not in spec.info.threshold_bytes:
            raise r.fail(f'layer {spec.name}: {w_bits}-bit weights / {t_bytes}-byte thresholds '
                         f'are not valid for a {spec.kind} layer')
        thresholds = r.array(f'<i{t_bytes}', (o, N_THRESHOLDS), f'layer {spec.name} thresholds')
        weights = _read_weights(r, spec, shape)
        signs = np.where(r.bits(o, f'layer {spec.name} signs'), -1, 1).astype(np.int8)
        layer = IntLayer(spec, in_ch, weights, thresholds, signs)
    pad = r.take(end - r.pos, f'layer {spec.name} padding')
    if len(pad) >= ALIGN or any(pad) or (r.pos - start) % ALIGN:
        raise r.fail(f'layer {spec.name}: section length {size} does not match its contents')
    return layer


def _read_metadata(r: _Reader) -> str:
    """The metadata block: u32 length, UTF-8 JSON object, zero padding to 4 bytes."""
    (n,) = r.unpack(struct.Struct('<I'), 'metadata length')
    if n > MAX_METADATA:
        raise r.fail(f'metadata of {n} bytes exceeds {MAX_METADATA}')
    raw = r.take(n, 'metadata')
    if any(r.take(_padding(n), 'metadata padding')):
        raise r.fail('metadata padding is not zero')
    try:
        text = raw.decode('utf-8')
        ok = isinstance(json.loads(text), dict)
    except (UnicodeDecodeError, ValueError, RecursionError):   # RecursionError: JSON nested too deep
        ok = False
    if not ok:
        raise r.fail('metadata is not a UTF-8 JSON object')
    return text


def from_bytes(data: bytes, source: str = '<bytes>') -> IntegerModel:
    """Parse and check a whole `.ifq` file image; ModelFileError with a one-line message otherwise."""
    if not data:
        raise ModelFileError(f'{source}: empty file (0 bytes), not an .ifq model')
    if data[:len(MAGIC)] != MAGIC[:len(data)]:
        raise ModelFileError(f'{source}: not an .ifq model file (wrong magic bytes)')
    if len(data) < HEADER.size + CRC.size:
        raise ModelFileError(f'{source}: truncated ({len(data)} bytes, shorter than the header)')
    _, version, flags, payload_len = HEADER.unpack_from(data)
    if version > VERSION:
        raise ModelFileError(f'{source}: format version {version} is newer than this program reads '
                             f'({", ".join(map(str, READ_VERSIONS))}); update ifq-tinier-yolo')
    if version not in READ_VERSIONS:
        raise ModelFileError(f'{source}: unknown format version {version} (this program reads '
                             f'{", ".join(map(str, READ_VERSIONS))})')
    expected = HEADER.size + payload_len + CRC.size
    if len(data) < expected:
        raise ModelFileError(f'{source}: truncated ({len(data)} bytes, the header announces {expected})')
    if len(data) > expected:
        raise ModelFileError(f'{source}: {len(data) - expected} unexpected bytes after the end of the model')
    body_end = HEADER.size + payload_len
    (crc,) = CRC.unpack_from(data, body_end)
    if zlib.crc32(data[:body_end]) != crc:
        raise ModelFileError(f'{source}: corrupted (CRC-32 mismatch)')
    if flags & ~KNOWN_FLAGS:
        raise ModelFileError(f'{source}: unknown flags {flags:#x}')
    r = _Reader(data, HEADER.size, body_end, source)
    head_scale = None
    if version == 1:
        size, n_layers, n_anchors, frac, mult, shift = r.unpack(DESCRIPTION_V1, 'description')
        if not (2 <= n_layers <= MAX_LAYERS and 1 <= n_anchors <= MAX_ANCHORS) or frac != ANCHOR_FRAC_BITS:
            raise r.fail(f'malformed description ({n_layers} layers, {n_anchors} anchors, '
                         f'{frac} anchor fraction bits)')
        head_scale = (mult, shift, r.array('<i4', (n_anchors, 2), 'anchors').astype(np.int64))
    else:
        size, n_layers, frac, zero = r.unpack(DESCRIPTION, 'description')
        if not 2 <= n_layers <= MAX_LAYERS or frac != ANCHOR_FRAC_BITS or zero:
            raise r.fail(f'malformed description ({n_layers} layers, {frac} anchor fraction bits)')
    rows = _read_table(r, n_layers, version)
    layers = tuple(_read_section(r, spec, in_ch, head_scale) for spec, in_ch in rows)
    metadata = _read_metadata(r)
    if r.pos != body_end:
        raise r.fail(f'{body_end - r.pos} bytes of payload after the metadata')
    model = IntegerModel(layers, size, separated=bool(flags & FLAG_SEPARATED), metadata=metadata)
    try:
        model.check()
    except ValueError as e:
        raise r.fail(f'invalid model: {e}') from None
    # limits of the engine beyond model.check: the decoder's fixed-point range, and a canvas that fits memory
    for head, stride in zip(model.heads, model.head_strides):
        if int(head.anchors_q16.max()) >= MAX_ANCHOR_CELLS << ANCHOR_FRAC_BITS or stride > MAX_STRIDE:
            raise r.fail(f'invalid model: anchors must be below {MAX_ANCHOR_CELLS} grid cells and the stride '
                         f'at most {MAX_STRIDE} (layer {head.spec.name}: {head.anchors.max():g} cells, '
                         f'stride {stride})')
    if size > MAX_INPUT_SIZE:
        raise r.fail(f'invalid model: input size {size} is over {MAX_INPUT_SIZE} pixels')
    return model


def read(path: str | Path) -> IntegerModel:
    """Load an `.ifq` file (ModelFileError if missing, unreadable or invalid)."""
    return from_bytes(read_bytes(path, ModelFileError, 'model file'), str(path))
