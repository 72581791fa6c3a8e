"""Hypothesis settings and mutation strategies shared by the property tests (test_fuzz*.py)."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from ifq_tinier_yolo.errors import IfqError

# cases per property: ~1 s each by default; IFQ_FUZZ_EXAMPLES=5000 for a longer campaign
EXAMPLES = int(os.environ.get('IFQ_FUZZ_EXAMPLES', '150'))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# tokens that break parsers: numbers at and over the limits, non-ASCII digits, paths, controls
TOKENS = ('0', '1', '-1', '4', '10', '3.5', '-0', '1e400', '1e-400', 'nan', 'inf', '-inf', '1_000', '0x10',
          '99999999999999999999', '9' * 5000, '\u0663', '\u00b2', '', ' ', '\t', 'x', '..', '../x.jpg',
          '/etc/passwd', 'C:\\x.jpg', 'a b', '\x00', '\x1b[1m', '\ufeff', '\u00e9', '13--Interview/x.jpg')


def report(name: str, cases: int, record_property) -> None:
    record_property('fuzz_cases', cases)
    print(f'\nfuzz {name}: {cases} cases')


def check_error(e: IfqError, names: str) -> None:
    """A project error: one line, naming the file."""
    message = str(e)
    assert '\n' not in message and '\r' not in message, message
    assert names in message, message


# --- mutations ------------------------------------------------------------------------------

@st.composite
def mutated_text(draw, base: str, max_ops: int = 4) -> str:
    """`base` after 1..max_ops line- and token-level edits (delete, duplicate, swap, replace, insert, cut)."""
    lines = base.split('\n')
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(('delete', 'duplicate', 'swap', 'token', 'insert', 'cut', 'char', 'blank')))
        k = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if not lines:
            lines = ['']
        if op == 'delete':
            del lines[k]
        elif op == 'duplicate':
            lines.insert(k, lines[k])
        elif op == 'swap':
            j = draw(st.integers(0, len(lines) - 1))
            lines[k], lines[j] = lines[j], lines[k]
        elif op == 'token':
            fields = lines[k].split(' ')
            i = draw(st.integers(0, len(fields) - 1))
            fields[i] = draw(st.sampled_from(TOKENS) | st.text(max_size=12))
            lines[k] = ' '.join(fields)
        elif op == 'insert':
            lines.insert(k, draw(st.sampled_from(TOKENS) | st.text(max_size=30)))
        elif op == 'cut':
            lines = lines[:k] + [lines[k][:draw(st.integers(0, len(lines[k])))]]
        elif op == 'char':
            if lines[k]:
                i = draw(st.integers(0, len(lines[k]) - 1))
                lines[k] = lines[k][:i] + draw(st.characters()) + lines[k][i + 1:]
        else:
            lines.insert(k, '')
    text = '\n'.join(lines)
    ending = draw(st.sampled_from(('\n', '\r\n', '\r')))
    return draw(st.sampled_from(('', '\ufeff'))) + text.replace('\n', ending)


def encode(text: str) -> bytes:
    return text.encode('utf-8', 'surrogatepass')


@st.composite
def mutated_bytes(draw, base: bytes, max_ops: int = 4) -> bytes:
    """`base` after 1..max_ops byte edits: bit flips, byte sets, cuts, insertions, deletions."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(('flip', 'set', 'cut', 'insert', 'delete')))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == 'flip' and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 'set' and data:
            data[i] = draw(st.sampled_from((0, 1, 2, 0x7F, 0x80, 0xFF)) | st.integers(0, 255))
        elif op == 'cut':
            del data[i:]
        elif op == 'insert':
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif data:
            del data[i:i + draw(st.integers(1, 16))]
    return bytes(data)
