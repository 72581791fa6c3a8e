"""Property tests (hypothesis) of the `.ifq` model loader: random bytes, mutated files, mutated
payloads with a valid CRC, field values; any model it accepts is run by the engine. Only the
project's own errors may come out, one line naming the file (test_fuzz.py: the text readers)."""
from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ifq_tinier_yolo import netdef
from ifq_tinier_yolo.engine import modelfile as fmt
from ifq_tinier_yolo.engine import runtime
from ifq_tinier_yolo.errors import IfqError

from fuzz_helpers import EXAMPLES, FUZZ, check_error, mutated_bytes, report

# --- the .ifq loader -------------------------------------------------------------------------

SOURCE = 'fuzz.ifq'
MAX_RUN_SIZE = 256   # run mutated models at their input size up to this side (seconds otherwise)
CANVAS = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)   # a small BGR image


def load(data: bytes, loaded: list[int]) -> None:
    """Parse; for a file that loads, prepare it and run the engine once (what `detect --model` does)."""
    try:
        model = fmt.from_bytes(data, SOURCE)
    except IfqError as e:
        check_error(e, f'{SOURCE}: ')
        return
    loaded[0] += 1
    runtime.prepare(model)
    # the model's own input size, as `detect --model` uses it; a small one where the file names a large one
    size = model.input_size if model.input_size <= MAX_RUN_SIZE else netdef.total_stride(model.specs)
    boxes = runtime.detect(model, CANVAS, 0.1, 0.5, img_size=size)
    assert boxes.dtype == np.float64 and boxes.shape[1] == 5


def with_fresh_crc(data: bytes) -> bytes:
    """Header payload length and CRC made to fit `data` (from byte 16 up to the CRC), so only the
    structural checks stand between a mutated payload and the engine."""
    if len(data) < fmt.HEADER.size:
        return data
    payload = data[fmt.HEADER.size:-fmt.CRC.size] if len(data) >= fmt.HEADER.size + fmt.CRC.size else b''
    magic, version, flags, _ = fmt.HEADER.unpack_from(data)
    body = fmt.HEADER.pack(magic, version, flags, len(payload)) + payload
    return body + fmt.CRC.pack(zlib.crc32(body))


def fuzz_loader(strategy, name: str, record_property) -> None:
    """Load every file `strategy` draws (at least EXAMPLES of them) and report how many."""
    counter, loaded = [0], [0]

    @FUZZ
    @given(data=strategy)
    def prop(data: bytes) -> None:
        counter[0] += 1
        load(data, loaded)

    prop()
    report(name, counter[0], record_property)
    assert counter[0] >= EXAMPLES


def test_model_loader_random_bytes(record_property):
    fuzz_loader(st.binary(max_size=2048) | st.binary(max_size=600).map(lambda b: fmt.MAGIC + b),
                '.ifq loader, random bytes', record_property)


def test_model_loader_mutated_files(tiny_ifq_bytes: bytes, record_property):
    fmt.from_bytes(tiny_ifq_bytes)   # the seed itself is valid
    fuzz_loader(mutated_bytes(tiny_ifq_bytes), '.ifq loader, mutated files', record_property)


def test_model_loader_mutated_payloads_with_valid_crc(tiny_ifq_bytes: bytes, record_property):
    """Mutations past the CRC: every length, shape, kind and value field meets the structural checks."""
    counter, loaded = [0], [0]
    header, payload = tiny_ifq_bytes[:fmt.HEADER.size], tiny_ifq_bytes[fmt.HEADER.size:-fmt.CRC.size]

    @FUZZ
    @given(payload=mutated_bytes(payload, max_ops=3),
           header=st.just(header) | mutated_bytes(header, max_ops=1).filter(lambda h: len(h) == len(header)))
    def prop(payload: bytes, header: bytes) -> None:
        counter[0] += 1
        load(with_fresh_crc(header + payload + bytes(fmt.CRC.size)), loaded)

    prop()
    report(f'.ifq loader, mutated payloads with a valid CRC ({loaded[0]} loaded and ran)', counter[0],
           record_property)
    assert counter[0] >= EXAMPLES


def test_model_loader_field_values(tiny_ifq_bytes: bytes, record_property):
    """Every 16-bit field of the description and layer table set to extreme values, CRC fixed."""
    counter, loaded = [0], [0]
    table_end = fmt.HEADER.size + fmt.DESCRIPTION.size + 8 * 2 + fmt.LAYER_ROW.size * 4   # 2 anchors, 4 layers

    @FUZZ
    @given(at=st.integers(fmt.HEADER.size, table_end - 2),
           value=st.sampled_from((0, 1, 2, 3, 15, 16, 255, 256, 0x7FFF, 0x8000, 0xFFFF)) | st.integers(0, 0xFFFF))
    def prop(at: int, value: int) -> None:
        counter[0] += 1
        data = bytearray(tiny_ifq_bytes)
        struct.pack_into('<H', data, at, value)
        load(with_fresh_crc(bytes(data)), loaded)

    prop()
    report(f'.ifq loader, extreme header/table fields with a valid CRC ({loaded[0]} loaded and ran)',
           counter[0], record_property)
    assert counter[0] >= EXAMPLES


def test_model_loader_deeply_nested_metadata(tiny_ifq_bytes: bytes):
    """Regression: metadata JSON nested 60000 deep made json.loads raise RecursionError, not ModelFileError."""
    model = dataclasses.replace(fmt.from_bytes(tiny_ifq_bytes), metadata='{}')
    body = fmt.to_bytes(model)[:-fmt.CRC.size]
    block = struct.pack('<I', 2) + b'{}' + bytes(2)   # the metadata block closes the payload
    assert body.endswith(block)
    nested = b'[' * 60000
    payload = body[fmt.HEADER.size:-len(block)] + struct.pack('<I', len(nested)) + nested
    header = fmt.HEADER.pack(fmt.MAGIC, fmt.VERSION, 0, len(payload))
    data = header + payload + fmt.CRC.pack(zlib.crc32(header + payload))
    with pytest.raises(IfqError) as e:
        fmt.from_bytes(data, SOURCE)
    check_error(e.value, f'{SOURCE}: ')
