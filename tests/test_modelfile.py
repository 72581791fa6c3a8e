"""The .ifq file: round trip, size budget, atomic writes, and rejection of damaged files."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from ifq_tinier_yolo import netdef
from ifq_tinier_yolo.engine import modelfile as fmt
from ifq_tinier_yolo.engine.model import IntegerModel
from ifq_tinier_yolo.errors import ConversionError, ModelFileError
from ifq_tinier_yolo.integrate.modelfile import file_bytes, save
from ifq_tinier_yolo.integrate.report import placeholder_model
from ifq_tinier_yolo.netdef import LayerSpec

SIZE_BUDGET = 246_000      # the paper's 246 KB
TINY = (LayerSpec('c1', 'first', 4, 3, 2), LayerSpec('c2', 'hidden', 6, 3, 1, pool=2),
        LayerSpec('c3', 'hidden', 5, 3, 1), LayerSpec('head', 'head', 10, 1, 1))
ANCHORS = ((0.5, 0.75), (2.0, 3.0))


@pytest.fixture(scope='module')
def model() -> IntegerModel:
    """A converted random network of the tiny table."""
    import torch
    from ifq_tinier_yolo.integrate.convert import convert_model
    from quant_nets import random_quant_network
    torch.set_num_threads(1)
    return convert_model(random_quant_network(TINY, ANCHORS, seed=5, calib_size=16), 32)


@pytest.fixture(scope='module')
def data(model) -> bytes:
    return fmt.to_bytes(model)


def assert_same(a: IntegerModel, b: IntegerModel) -> None:
    assert a.specs == b.specs and a.input_size == b.input_size and a.separated == b.separated
    assert a.metadata == b.metadata
    for la, lb in zip(a.layers, b.layers):
        assert la.in_ch == lb.in_ch
        assert (la.out_multiplier, la.out_shift) == (lb.out_multiplier, lb.out_shift)
        for name in ('weights', 'thresholds', 'signs', 'bias', 'anchors_q16'):
            x, y = getattr(la, name), getattr(lb, name)
            assert (x is None) == (y is None), name
            if x is not None:
                assert x.dtype == y.dtype and np.array_equal(x, y), (la.spec.name, name)


def load_error(data: bytes, tmp_path: Path) -> str:
    """Write data, load it, return the one-line ModelFileError message (fails if it loads)."""
    path = tmp_path / 'm.ifq'
    path.write_bytes(data)
    with pytest.raises(ModelFileError) as e:
        fmt.read(path)
    msg = str(e.value)
    assert '\n' not in msg and str(path) in msg
    return msg


def with_crc(body: bytes) -> bytes:
    """Header + payload with a fresh CRC, for crafting files that pass the CRC."""
    return body + struct.pack('<I', zlib.crc32(body))


def test_round_trip(model, tmp_path):
    from dataclasses import replace
    model = replace(model, metadata='{"config":{"lr":0.002},"conversion":"integrated","note":"f\u00fcr"}')
    path = tmp_path / 'sub' / 'model.ifq'
    n = save(model, path)
    assert n == path.stat().st_size == file_bytes(model)
    assert_same(model, fmt.read(path))
    assert [p.name for p in path.parent.iterdir()] == ['model.ifq']     # no temp file left


def test_round_trip_separated_and_full_table(model, tmp_path):
    from dataclasses import replace
    sep = replace(model, separated=True)
    assert_same(sep, fmt.from_bytes(fmt.to_bytes(sep)))
    for table in netdef.NETWORKS.values():
        full = placeholder_model(table)
        assert_same(full, fmt.from_bytes(fmt.to_bytes(full)))


@pytest.mark.parametrize('table', netdef.NETWORKS)
def test_netdef_tables_fit_the_budget(table):
    layers = netdef.NETWORKS[table]
    n = file_bytes(placeholder_model(layers))
    hidden_bits = sum(s.out_ch * c * s.kernel ** 2 for s, c in zip(layers, netdef.in_channels(layers))
                      if s.kind == 'hidden')
    assert hidden_bits // 8 < n <= SIZE_BUDGET


def test_version_1_files_are_read():
    """The version-1 file of the hwgq4 model (one head, anchors and scale in the description)."""
    v1 = fmt.read(Path(__file__).parent / 'fixtures' / 'v1_model.ifq')
    assert [l.spec.kind for l in v1.layers] == [s.kind for s in netdef.LAYERS] and len(v1.heads) == 1
    assert v1.anchors_q16.shape == (5, 2) and (v1.out_multiplier, v1.out_shift) == (1281015552, 39)
    again = fmt.from_bytes(fmt.to_bytes(v1))          # written as version 2, read back the same
    assert_same(v1, again)
    assert struct.unpack_from('<H', fmt.to_bytes(v1), 8)[0] == 2


def test_written_version_is_the_lowest_that_holds_the_kinds():
    """Version 2 unless a 'fixed' layer needs version 3, so that older readers load what they can."""
    versions = {name: struct.unpack_from('<H', fmt.to_bytes(placeholder_model(t)), 8)[0]
                for name, t in netdef.NETWORKS.items()}
    assert versions == {name: 3 if any(s.kind == 'fixed' for s in t) else 2 for name, t in netdef.NETWORKS.items()}
    assert versions['v2'] == 2 and versions['v4'] == 3


def test_layout_matches_the_spec(model, data):
    """The header and trailer as docs/MODEL_FORMAT.md describes them."""
    magic, version, flags, payload = struct.unpack_from('<8sHHI', data)
    assert (magic, version, flags) == (b'IFQTYOLO', 2, 0)
    assert len(data) == 16 + payload + 4
    assert struct.unpack_from('<I', data, 16 + payload)[0] == zlib.crc32(data[:16 + payload])
    assert struct.unpack_from('<HHHH', data, 16) == (32, 4, 16, 0)
    rows = [struct.unpack_from('<16sBBBBHHB4s3x', data, 24 + 32 * i) for i in range(4)]
    assert [r[0].rstrip(b'\0') for r in rows] == [b'c1', b'c2', b'c3', b'head']
    assert [r[1] for r in rows] == [0, 1, 1, 2] and all(r[7] == 0 for r in rows)   # a chain: no named inputs
    head = 24 + 32 * 4 + sum(fmt.section_bytes(layer) for layer in model.layers[:-1])
    n, w_bits, t_bytes, _, mult, shift = struct.unpack_from('<IBBHiB', data, head)
    assert (w_bits, t_bytes, mult, shift) == (8, 0, model.out_multiplier, model.out_shift)
    anchors = np.frombuffer(data, '<i4', 2 * len(ANCHORS), head + 16).reshape(-1, 2)
    assert np.array_equal(anchors, model.anchors_q16)


def test_empty_file(tmp_path):
    assert 'empty' in load_error(b'', tmp_path)


@pytest.mark.parametrize('junk', [b'\x89PNG\r\n\x1a\n' + bytes(100), b'GIF89a', b'PK\x03\x04' + bytes(40),
                                  b'\x00' * 64, b'IFQTYOLX' + bytes(40)])
def test_foreign_file(junk, tmp_path):
    assert 'not an .ifq model' in load_error(junk, tmp_path)


def test_truncated_file(data, tmp_path):
    cuts = [1, 7, 8, 12, 16, 19, 20, 40, len(data) // 2, len(data) - 5, len(data) - 1]
    for n in cuts:
        msg = load_error(data[:n], tmp_path)
        assert 'truncated' in msg, (n, msg)


def test_trailing_bytes(data, tmp_path):
    assert 'unexpected bytes' in load_error(data + b'\0', tmp_path)


def test_newer_and_unknown_version(data, tmp_path):
    newer = data[:8] + struct.pack('<H', 3) + data[10:]
    assert 'newer' in load_error(newer, tmp_path)
    assert 'unknown format version 0' in load_error(data[:8] + struct.pack('<H', 0) + data[10:], tmp_path)


def test_every_single_bit_flip_is_rejected(data, tmp_path):
    """One flipped bit anywhere (every bit of the first 96 bytes and of the CRC, and 400 more) fails."""
    rng = np.random.default_rng(0)
    positions = list(range(96 * 8)) + list(range((len(data) - 4) * 8, len(data) * 8)) + \
        rng.integers(0, len(data) * 8, 400).tolist()
    for bit in positions:
        bad = bytearray(data)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ModelFileError) as e:
            fmt.from_bytes(bytes(bad), 'm.ifq')
        assert '\n' not in str(e.value)


def test_crafted_invalid_contents_with_valid_crc(model, data, tmp_path):
    """Files that pass the CRC but break a rule: bad kind, thresholds out of order, bad padding."""
    body = bytearray(data[:-4])
    table = 16 + 8
    bad = bytearray(body)
    bad[table + 16] = 7                                            # kind code of layer c1
    assert 'malformed table row' in load_error(with_crc(bytes(bad)), tmp_path)
    sec2 = table + 32 * len(TINY) + fmt.section_bytes(model.layers[0])
    t = np.frombuffer(bytes(body[sec2 + 8:sec2 + 14]), dtype='<i2').copy()     # c2 channel 0: 3 x int16
    bad = bytearray(body)
    bad[sec2 + 8:sec2 + 14] = t[::-1].tobytes() if t[0] != t[2] else np.array([5, 4, 3], '<i2').tobytes()
    assert 'non-decreasing' in load_error(with_crc(bytes(bad)), tmp_path)
    bad = bytearray(body)
    bad[sec2 + 4] = 8                                              # c2 claims 8-bit weights
    assert 'not valid for a hidden layer' in load_error(with_crc(bytes(bad)), tmp_path)
    bad = bytearray(body)
    bad[sec2:sec2 + 4] = struct.pack('<I', 10 ** 6)                # section length past the end
    assert 'malformed section header' in load_error(with_crc(bytes(bad)), tmp_path)
    assert body.endswith(struct.pack('<I', 2) + b'{}\0\0')        # the metadata ends the payload
    bad = body[:-8] + struct.pack('<I', 3) + b'[1]\0'              # valid JSON, not an object
    assert 'JSON object' in load_error(with_crc(bytes(bad)), tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match='no such model file'):
        fmt.read(tmp_path / 'absent.ifq')


def test_atomic_save_keeps_old_file_on_failure(model, tmp_path):
    from dataclasses import replace
    path = tmp_path / 'model.ifq'
    save(model, path)
    before = path.read_bytes()
    broken = replace(model, layers=(*model.layers[:-1], replace(model.layers[-1], out_shift=99)))   # fails the check
    with pytest.raises(ConversionError):
        save(broken, path)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1
