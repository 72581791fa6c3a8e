"""The C loader on hostile files: it refuses exactly what the Python reader refuses (with the
same one-line message for the header-level defects of the error table), chains and layer graphs
alike, and, built with AddressSanitizer + UndefinedBehaviorSanitizer, survives a campaign of
truncations, bit flips and payload mutations of both with no crash, no undefined behaviour and
no leak (the files it accepts it also runs and decodes)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ifq_tinier_yolo.engine import modelfile as fmt
from ifq_tinier_yolo.errors import ModelFileError

from fuzz_helpers import FUZZ, mutated_bytes
from sanitized import run_sanitized, sanitized_tool
from test_native_graph import small_graph_bytes

SOURCE = 'm.ifq'
# header-level refusals: the C message must equal the Python one word for word
HEADER_MESSAGES = ('empty file', 'not an .ifq model file', 'truncated (', 'format version', 'unknown format version',
                   'unexpected bytes after', 'corrupted (CRC-32', 'unknown flags')


pytestmark = pytest.mark.usefixtures('native_built')


def python_verdict(data: bytes) -> str | None:
    """None if the Python reader accepts `data`, else its message without the source prefix."""
    try:
        fmt.from_bytes(data, SOURCE)
    except ModelFileError as e:
        return str(e).removeprefix(f'{SOURCE}: ')
    return None


def c_verdict(data: bytes) -> str | None:
    """None if the C loader accepts `data`, else its message."""
    from ifq_tinier_yolo.native import binding
    try:
        binding.Model(data)
    except ValueError as e:
        return str(e)
    return None


def check_same_verdict(data: bytes) -> None:
    want, got = python_verdict(data), c_verdict(data)
    assert (want is None) == (got is None), (want, got)
    if want is not None and want.startswith(HEADER_MESSAGES):
        assert got == want
    assert got is None or '\n' not in got


def with_fresh_crc(data: bytes) -> bytes:
    """Payload length and CRC made to fit, so only the structural checks can refuse `data`."""
    if len(data) < fmt.HEADER.size:
        return data
    magic, version, flags, _ = fmt.HEADER.unpack_from(data)
    payload = data[fmt.HEADER.size:]
    body = fmt.HEADER.pack(magic, version, flags, len(payload)) + payload
    return body + fmt.CRC.pack(zlib.crc32(body))


@st.composite
def mutated(draw, base: bytes) -> bytes:
    """`base` (a whole file) after 1..3 edits: bit flips, byte sets, cuts, insertions, deletions;
    half the time with the CRC and length made valid again."""
    data = draw(mutated_bytes(base[:-fmt.CRC.size], max_ops=3))
    if draw(st.booleans()):
        return with_fresh_crc(data)
    return data + base[-fmt.CRC.size:]


def error_table(data: bytes) -> dict[str, bytes]:
    """The damaged model files of tests/test_robust.py's error table, made from `data`."""
    n_anchors = struct.unpack_from('<H', data, fmt.HEADER.size + 4)[0]
    kind_at = fmt.HEADER.size + fmt.DESCRIPTION.size + 8 * n_anchors + fmt.NAME_BYTES
    bad_kind = bytearray(data[:-fmt.CRC.size])
    bad_kind[kind_at] = 9
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    return {
        'truncated': data[:len(data) // 2],
        'one bit flipped': bytes(flipped),
        'wrong magic': b'NOTAMODL' + data[8:],
        'newer version': data[:8] + struct.pack('<H', fmt.VERSION + 1) + data[10:],
        'zero bytes': b'',
        'bad layer table, valid CRC': bytes(bad_kind) + fmt.CRC.pack(zlib.crc32(bytes(bad_kind))),
        'trailing bytes': data + b'\0',
        'zip archive (a torch checkpoint)': b'PK\x03\x04' + bytes(60),
    }


def parameter_flips(data: bytes, n_files: int = 40, flips: int = 6, size: int = 64) -> list[bytes]:
    """Copies of a full-size model that mostly still load: input side set to `size` (so the engine
    runs on them quickly), bytes flipped in the second half of the file (binary weights, the
    head), CRC refitted."""
    rng = np.random.default_rng(7)
    body = bytearray(data[:-fmt.CRC.size])
    struct.pack_into('<H', body, fmt.HEADER.size, size)
    out = []
    for _ in range(n_files):
        copy = bytearray(body)
        for i in rng.integers(len(body) // 2, len(body) - 64, flips):
            copy[i] ^= int(rng.integers(1, 256))
        out.append(with_fresh_crc(bytes(copy)))
    return out


def test_error_table_same_messages(random_ifq: Path):
    for name, data in error_table(random_ifq.read_bytes()).items():
        want, got = python_verdict(data), c_verdict(data)
        assert want is not None and got == want, name


def test_valid_files_load(random_ifq: Path, tiny_ifq_bytes: bytes):
    for data in (random_ifq.read_bytes(), tiny_ifq_bytes, small_graph_bytes(),
                 (Path(__file__).resolve().parents[1] / 'weights' / 'ifq_tinier_yolo.ifq').read_bytes()):
        assert c_verdict(data) is None


def test_fixed_layer_in_a_version_2_file_is_refused_alike():
    """The 'fixed' kind (code 4) came with format version 3: a version-2 header makes its row malformed."""
    data = small_graph_bytes()
    assert struct.unpack_from('<H', data, 8)[0] == 3
    downgraded = with_fresh_crc(data[:8] + struct.pack('<H', 2) + data[10:-fmt.CRC.size])
    want, got = python_verdict(downgraded), c_verdict(downgraded)
    assert want == got and want.startswith('layer c5: malformed table row (kind 4')


@pytest.mark.parametrize('seed', ['chain', 'graph'])
def test_same_refusals_on_mutated_files(tiny_ifq_bytes: bytes, seed: str):
    base = tiny_ifq_bytes if seed == 'chain' else small_graph_bytes()

    @FUZZ
    @given(data=mutated(base))
    def prop(data: bytes) -> None:
        check_same_verdict(data)
    prop()


@pytest.mark.parametrize('seed', ['chain', 'graph'])
def test_same_refusals_on_truncations_and_bit_flips(tiny_ifq_bytes: bytes, seed: str):
    """Every truncation (CRC refitted) and one bit flip per byte (CRC refitted): the structural
    checks; on the graph, the table's wiring (inputs, kinds, channels) too."""
    body = (tiny_ifq_bytes if seed == 'chain' else small_graph_bytes())[:-fmt.CRC.size]
    for n in range(len(body)):
        check_same_verdict(with_fresh_crc(body[:n]))
    for i in range(fmt.HEADER.size, len(body)):
        flipped = bytearray(body)
        flipped[i] ^= 1 << (i % 8)
        check_same_verdict(with_fresh_crc(bytes(flipped)))


def test_sanitized_loader_campaign(tiny_ifq_bytes: bytes, random_ifq: Path, tmp_path: Path, capsys):
    """ASan + UBSan build of the loader (tools/ifq_check.c): damaged files in one run, no report."""
    exe = sanitized_tool('ifq_check')
    files: list[bytes] = list(error_table(random_ifq.read_bytes()).values()) + [tiny_ifq_bytes]
    body = tiny_ifq_bytes[:-fmt.CRC.size]
    files += [body[:n] + tiny_ifq_bytes[-fmt.CRC.size:] for n in range(0, len(body), 7)]   # plain truncations
    files += [with_fresh_crc(body[:n]) for n in range(fmt.HEADER.size, len(body), 3)]

    files += parameter_flips(random_ifq.read_bytes())
    graph = small_graph_bytes()
    files += [with_fresh_crc(graph[:-fmt.CRC.size][:n]) for n in range(fmt.HEADER.size, len(graph), 5)]
    files += [with_fresh_crc(bytes(b ^ (1 << (i % 8)) if i == j else b for i, b in enumerate(graph[:-fmt.CRC.size])))
              for j in range(fmt.HEADER.size, len(graph) - fmt.CRC.size, 3)]

    @FUZZ
    @given(data=mutated(tiny_ifq_bytes))
    def collect(data: bytes) -> None:
        files.append(data)
    collect()

    @FUZZ
    @given(data=mutated(graph))
    def collect_graph(data: bytes) -> None:
        files.append(data)
    collect_graph()

    paths = []
    for i, data in enumerate(files):
        paths.append(tmp_path / f'{i}.ifq')
        paths[-1].write_bytes(data)
    lines = run_sanitized(exe, paths)
    assert len(lines) == len(files)
    for data, line in zip(files, lines):
        status, _, message = line.split(' ', 2)
        assert (status == '0') == (python_verdict(data) is None), line
        assert not line.startswith('0 -1'), line   # a file that loads also runs and decodes
        check_same_verdict(data)
    loaded = sum(line.startswith('0 ') for line in lines)
    with capsys.disabled():
        print(f'\nsanitized loader: {len(files)} files, {loaded} loaded and ran, no sanitizer report')
