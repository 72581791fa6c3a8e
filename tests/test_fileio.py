"""Output files (fileio.py): atomic writes, and write failures as OutputError (one line, also an OSError)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ifq_tinier_yolo.apps.draw import AtomicVideoWriter
from ifq_tinier_yolo.errors import IfqError, OutputError
from ifq_tinier_yolo.fileio import atomic_write_text, output_errors


def test_atomic_write_text_writes_the_whole_file(tmp_path: Path):
    atomic_write_text(tmp_path / 'a' / 'b.txt', 'x\r\ny\n')
    assert (tmp_path / 'a' / 'b.txt').read_bytes() == b'x\r\ny\n'
    assert [p.name for p in (tmp_path / 'a').iterdir()] == ['b.txt']   # no temp file left


def test_a_failed_write_is_an_output_error_naming_the_file(tmp_path: Path):
    (tmp_path / 'file').write_text('in the way')
    target = tmp_path / 'file' / 'out.txt'
    with pytest.raises(OutputError) as e:
        with output_errors(target):
            atomic_write_text(target, 'x')
    assert isinstance(e.value, OSError) and isinstance(e.value, IfqError)
    assert str(e.value).startswith(f'{target}: cannot write (') and '\n' not in str(e.value)


def test_output_errors_leaves_other_errors_and_output_errors_alone(tmp_path: Path):
    with pytest.raises(ValueError):
        with output_errors(tmp_path / 'x'):
            raise ValueError('not an I/O problem')
    with pytest.raises(OutputError, match='^inner$'):
        with output_errors(tmp_path / 'x'):
            raise OutputError('inner')


def test_a_video_under_a_file_is_an_output_error(tmp_path: Path):
    (tmp_path / 'file').write_text('in the way')
    writer = AtomicVideoWriter(tmp_path / 'file' / 'out.mp4', fps=10)
    with pytest.raises(OutputError, match='out.mp4: cannot write'):
        writer.write(np.zeros((16, 16, 3), dtype=np.uint8))
