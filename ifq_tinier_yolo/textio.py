"""Reading the annotation and prediction text files: one rule for encodings, line endings and
quoting a piece of a file in an error message (WIDER, FDDB and WIDER-submission readers)."""
from __future__ import annotations

from pathlib import Path

from .errors import DataError

FOUND_CHARS = 80   # longest piece of a file quoted in an error


def read_lines(path: str | Path, what: str) -> list[str]:
    """The file's lines, stripped, without trailing blank ones; DataError naming `what` if unreadable.

    UTF-8 with or without a byte-order mark; LF, CRLF and CR all end a line (universal newlines,
    as `open(newline=None)`; decoded whole so a decoding error gives the byte offset in the file).
    """
    try:
        text = Path(path).read_bytes().decode('utf-8-sig')
    except UnicodeDecodeError as e:
        raise DataError(f'{path}: not a text {what} ({e.reason} at byte {e.start})') from None
    except OSError as e:
        raise DataError(f'{path}: cannot read {what} ({e.strerror or e})') from None
    lines = [line.strip() for line in text.replace('\r\n', '\n').replace('\r', '\n').split('\n')]
    while lines and not lines[-1]:   # trailing blank lines are the end of the file
        lines.pop()
    return lines


def quote(text: str) -> str:
    """repr of a piece of a file for an error message, cut to FOUND_CHARS characters."""
    return repr(text if len(text) <= FOUND_CHARS else text[:FOUND_CHARS] + '...')
