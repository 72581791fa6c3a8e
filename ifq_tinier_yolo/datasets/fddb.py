"""FDDB readers: fold lists, ellipse annotations and detection files, with line-precise errors.

Formats (PAPER.md, "FDDB evaluation"):
- `FDDB-fold-XX.txt`: one image name per line (no extension, no spaces).
- `FDDB-fold-XX-ellipseList.txt`: per image its name, a face count, then one line per face
  `ra rb angle cx cy 1` (radii and centre in pixels, angle in radians; the official file has
  double and trailing spaces).
- detection files: per image its name, a count, then one line per detection,
  `left top width height score` (rectangles) or `ra rb angle cx cy score` (ellipses).
Blank lines are accepted between blocks only; CRLF and CR line endings are accepted.
Every error is a DataError `FILE:LINE: expected ..., found ...`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from ..errors import DataError
from ..textio import quote, read_lines

ELLIPSE_COLUMNS = ('ra', 'rb', 'angle', 'cx', 'cy')
RECT_DETECTION_COLUMNS = ('left', 'top', 'width', 'height', 'score')
ELLIPSE_DETECTION_COLUMNS = ELLIPSE_COLUMNS + ('score',)


class ListEntry(NamedTuple):
    """One image name of a fold list and where it was read."""
    name: str
    path: Path
    line: int


class Block(NamedTuple):
    """One image's block of an ellipse or detection file and where its name line was read."""
    name: str
    regions: np.ndarray   # float64 (N, C): the numeric columns of the block's region lines
    path: Path
    line: int


def _error(path: Path, line: int, expected: str, found: str) -> DataError:
    return DataError(f'{path}:{line}: expected {expected}, found {found}')


def _is_number_row(text: str) -> bool:
    """True when every field parses as a number (a region line, never an image name)."""
    try:
        [float(v) for v in text.split()]
    except ValueError:
        return False
    return True


def list_entries(path: str | Path) -> list[ListEntry]:
    """The non-blank lines of a fold list as ListEntry(name, path, line)."""
    path = Path(path)
    entries = []
    for number, text in enumerate(read_lines(path, 'file'), start=1):
        if not text:
            continue
        if len(text.split()) != 1:
            raise _error(path, number, 'one image name per line (names have no spaces)', quote(text))
        entries.append(ListEntry(text, path, number))
    return entries


def read_fold_list(path: str | Path) -> list[str]:
    """Image names of `FDDB-fold-XX.txt` in file order."""
    return [entry.name for entry in list_entries(path)]


def _parse_region(path: Path, number: int, text: str, columns: Sequence[str],
                  annotation: bool, what: str) -> list[float]:
    """One region line as len(columns) finite floats; annotations may carry the trailing '1'."""
    fields = text.split()
    if annotation and len(fields) == len(columns) + 1:
        fields = fields[:-1]
    expected = f'{len(columns)} numbers `{" ".join(columns)}`' + (' [1]' if annotation else '') + f' ({what})'
    if len(fields) != len(columns):
        hint = ''
        if not annotation and len(fields) in (len(RECT_DETECTION_COLUMNS), len(ELLIPSE_DETECTION_COLUMNS)):
            hint = ' (rectangles have 5 numbers, ellipses 6: check --ellipse)'
        elif len(fields) == 1:
            hint = ' (is the count above too large?)'
        raise _error(path, number, expected, f'{len(fields)} fields {quote(text)}{hint}')
    values = []
    for column, field in zip(columns, fields):
        try:
            value = float(field)
        except ValueError:
            raise _error(path, number, f'a number for {column} ({what})', quote(field)) from None
        if not math.isfinite(value):
            raise _error(path, number, f'a finite number for {column} ({what})', quote(field))
        values.append(value)
    for column, field, value in zip(columns, fields, values):
        if column in ('ra', 'rb', 'width', 'height') and value < 0:
            raise _error(path, number, f'{column} >= 0 ({what})', quote(field))
    return values


def iter_blocks(path: str | Path, columns: Sequence[str], annotation: bool = False) -> Iterator[Block]:
    """Blocks (name, count, `count` region lines) of an ellipse or detection file, in file order.

    `columns` names the numbers of a region line; annotation lines may end with an extra '1'.
    """
    path = Path(path)
    lines = read_lines(path, 'file')
    i = 0
    while True:
        while i < len(lines) and not lines[i]:
            i += 1
        if i == len(lines):
            return
        name_line, name = i + 1, lines[i]
        if len(name.split()) != 1:
            hint = ' (the count of the previous image is too small)' if _is_number_row(name) else ''
            raise _error(path, name_line, 'an image name (names have no spaces)', f'{quote(name)}{hint}')
        i += 1
        if i == len(lines) or not lines[i]:
            raise _error(path, min(i + 1, len(lines)), f'the region count of image {quote(name)}',
                         'end of file' if i == len(lines) else 'a blank line')
        text = lines[i]
        try:
            count = int(text) if text.isascii() and text.isdigit() else -1
        except ValueError:   # more digits than int() converts (4300)
            count = -1
        if count < 0:
            raise _error(path, i + 1, f'the region count of image {quote(name)} (an integer >= 0)', quote(text))
        i += 1
        rows = []
        for k in range(count):
            what = f'region {k + 1} of {count} of image {quote(name)}'
            if i == len(lines) or not lines[i]:
                raise _error(path, min(i + 1, len(lines)),
                             f'{len(columns)} numbers `{" ".join(columns)}` ({what})',
                             'end of file' if i == len(lines) else 'a blank line')
            rows.append(_parse_region(path, i + 1, lines[i], columns, annotation, what))
            i += 1
        regions = np.array(rows, dtype=np.float64).reshape(count, len(columns))   # (N, C)
        yield Block(name, regions, path, name_line)


def detection_columns(ellipse: bool) -> tuple[str, ...]:
    """Column names of a detection line: 6 for ellipses, 5 for rectangles."""
    return ELLIPSE_DETECTION_COLUMNS if ellipse else RECT_DETECTION_COLUMNS


def align_blocks(entries: Sequence[ListEntry], blocks: Iterable[Block], what: str, files: Sequence[Path],
                 suffix: str = '') -> list[np.ndarray]:
    """Regions of `blocks` (read from `files`) in list order; raise DataError unless block k names entry k.

    A block name may also be the list name + `suffix` (detection files often keep '.jpg').
    """
    regions = []
    last: Block | None = None
    for k, block in enumerate(blocks):
        if k == len(entries):
            raise _error(block.path, block.line,
                         f'the end of the {what} (the lists name {len(entries)} images)', f'image {quote(block.name)}')
        entry = entries[k]
        if block.name != entry.name and block.name != entry.name + suffix:
            raise _error(block.path, block.line,
                         f'image {quote(entry.name)} ({entry.path}:{entry.line}; blocks must follow the list order)',
                         quote(block.name))
        regions.append(block.regions)
        last = block
    if len(regions) < len(entries):
        entry = entries[len(regions)]
        expected = f'expected a block for image {quote(entry.name)} ({entry.path}:{entry.line})'
        if last is None:
            raise DataError(f'{", ".join(map(str, files))}:1: {expected}, found no image block in the {what}')
        raise DataError(f'{last.path}:{last.line}: {expected} after this one, found the end of the {what} '
                        f'({len(regions)} of {len(entries)} images)')
    return regions
