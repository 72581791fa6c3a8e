"""The annotation/prediction text reader (textio.py): line endings, BOM, trailing blanks, errors, quoting."""
from __future__ import annotations

from pathlib import Path

import pytest

from ifq_tinier_yolo.errors import DataError
from ifq_tinier_yolo.textio import FOUND_CHARS, quote, read_lines


@pytest.mark.parametrize('newline', ['\n', '\r\n', '\r'], ids=['LF', 'CRLF', 'CR'])
def test_any_line_ending_gives_the_same_lines(tmp_path: Path, newline: str):
    path = tmp_path / 'a.txt'
    path.write_bytes(newline.join(['\ufeffname', ' 1 2 ', '', 'last', '', '']).encode('utf-8'))
    assert read_lines(path, 'file') == ['name', '1 2', '', 'last']   # stripped, BOM and trailing blanks gone


def test_mixed_line_endings_keep_their_line_numbers(tmp_path: Path):
    path = tmp_path / 'a.txt'
    path.write_bytes(b'a\r\nb\rc\nd')
    assert read_lines(path, 'file') == ['a', 'b', 'c', 'd']


def test_errors_name_the_file_and_what_it_is(tmp_path: Path):
    path = tmp_path / 'bin.txt'
    path.write_bytes(b'ok\n\xff\xfe')
    with pytest.raises(DataError, match=r'bin.txt: not a text annotation file \(invalid start byte at byte 3\)'):
        read_lines(path, 'annotation file')
    with pytest.raises(DataError, match=r'absent.txt: cannot read prediction file \(No such file'):
        read_lines(tmp_path / 'absent.txt', 'prediction file')


def test_quote_cuts_long_text():
    assert quote('a b') == "'a b'"
    long = 'x' * (FOUND_CHARS + 10)
    assert quote(long) == repr('x' * FOUND_CHARS + '...')
