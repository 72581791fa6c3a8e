"""WIDER FACE reader: `wider_face_{split}_bbx_gt.txt` + `WIDER_{split}/images/`, line-precise errors.

File format (PAPER.md): an image path `<event>/<file>.jpg`, a face count, then one row per face
`x y w h blur expression illumination invalid occlusion pose` (integers, pixels). An image with
0 faces is followed by one all-zero row.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DataError
from ..textio import quote, read_lines

SPLITS = ('train', 'val')
ATTRIBUTES = ('blur', 'expression', 'illumination', 'invalid', 'occlusion', 'pose')
FIELDS_PER_FACE = 4 + len(ATTRIBUTES)   # x y w h + the attribute columns
INVALID = ATTRIBUTES.index('invalid')   # column of `invalid` in WiderImage.attrs
WIDTH_PERCENTILES = (5, 25, 50, 75, 95)
VALUE_LIMIT = 1 << 31                   # every number of a face row must fit an int32


@dataclass(frozen=True)
class WiderImage:
    """One annotated image: boxes float32 (N, 4) x, y, w, h in pixels; attrs int32 (N, 6) in ATTRIBUTES order."""
    path: Path          # absolute image path
    name: str           # '<event>/<file>.jpg' as written in the annotation file
    boxes: np.ndarray   # float32 (N, 4): x, y, w, h, pixels of the image file
    attrs: np.ndarray   # int32 (N, 6): blur expression illumination invalid occlusion pose


def annotation_path(root: Path, split: str) -> Path:
    """root/wider_face_split/wider_face_{split}_bbx_gt.txt."""
    return Path(root) / 'wider_face_split' / f'wider_face_{split}_bbx_gt.txt'


def images_dir(root: Path, split: str) -> Path:
    """root/WIDER_{split}/images."""
    return Path(root) / f'WIDER_{split}' / 'images'


class _Lines:
    """Stripped lines of a file with 1-based numbers; blank lines are skipped (trailing ones are common)."""

    def __init__(self, path: Path):
        self.path = path
        self.lines = read_lines(path, 'annotation file')
        self.pos = 0

    def next(self) -> tuple[int, str] | None:
        """(line number, text) of the next non-blank line, or None at the end of the file."""
        while self.pos < len(self.lines):
            self.pos += 1
            if self.lines[self.pos - 1]:
                return self.pos, self.lines[self.pos - 1]
        return None

    def peek(self) -> str | None:
        """Text of the next non-blank line without consuming it."""
        for text in self.lines[self.pos:]:
            if text:
                return text
        return None

    def error(self, line: int, expected: str, found: str) -> DataError:
        """DataError 'FILE:LINE: expected ..., found ...'."""
        return DataError(f'{self.path}:{line}: expected {expected}, found {found}')


def _face_row(text: str) -> list[int] | None:
    """The row as FIELDS_PER_FACE integers, or None when it is not such a row."""
    fields = text.split()
    if len(fields) != FIELDS_PER_FACE:
        return None
    try:
        return [int(v) for v in fields]
    except ValueError:
        return None


def _check_name(lines: _Lines, line: int, name: str) -> None:
    """An image path must be relative, stay inside the images folder and not look like a number row."""
    if not name.isprintable():
        raise lines.error(line, 'an image path of printable characters', quote(name))
    if _face_row(name) is not None or name.lstrip('-').isdigit():
        raise lines.error(line, 'an image path <event>/<file>.jpg (is the previous face count too small?)',
                          quote(name))
    pure = PurePosixPath(name.replace('\\', '/'))
    if pure.is_absolute() or Path(name).is_absolute() or '..' in pure.parts:
        raise lines.error(line, 'an image path relative to the images folder', f'{quote(name)} (outside the dataset root)')


def _parse_face(lines: _Lines, name: str, k: int, count: int) -> list[int]:
    """Read face row k (0-based) of `count` for image `name`; raise DataError naming the line."""
    nxt = lines.next()
    what = f'face row {k + 1} of {count} for {name} ({FIELDS_PER_FACE} integers: x y w h ' + ' '.join(ATTRIBUTES) + ')'
    if nxt is None:
        raise lines.error(len(lines.lines), what, 'end of file (truncated file or face count too large)')
    line, text = nxt
    fields = text.split()
    if len(fields) != FIELDS_PER_FACE:
        hint = ' (face count too large?)' if len(fields) == 1 else ''
        raise lines.error(line, what, f'{len(fields)} fields {quote(text)}{hint}')
    row = []
    for field, value in zip(('x', 'y', 'w', 'h') + ATTRIBUTES, fields):
        try:
            row.append(int(value))
        except ValueError:
            raise lines.error(line, f'an integer {field}', quote(value)) from None
        if not -VALUE_LIMIT < row[-1] < VALUE_LIMIT:
            raise lines.error(line, f'an integer {field} within +-2**31', quote(value))
    if row[2] < 0 or row[3] < 0:
        raise lines.error(line, 'a non-negative face size w h', f'{row[2]} {row[3]}')
    return row


def read_wider(root: Path, split: str, drop_invalid: bool = True, min_size: float = 0,
               check_images: bool = True) -> list[WiderImage]:
    """Parse a WIDER FACE split in file order; drops `invalid` faces and faces with min(w, h) < min_size.

    Images whose faces were all dropped are kept (zero rows). Raises DataError 'FILE:LINE: ...'.
    """
    if split not in SPLITS:
        raise DataError(f'unknown WIDER split {split!r}: expected one of {", ".join(SPLITS)}')
    root = Path(root).resolve()
    ann = annotation_path(root, split)
    if not ann.is_file():
        raise DataError(f'{ann}: annotation file not found (expected <wider-root>/wider_face_split/'
                        f'wider_face_{split}_bbx_gt.txt under {root})')
    img_dir = images_dir(root, split)
    if check_images and not img_dir.is_dir():
        raise DataError(f'{img_dir}: images folder not found (expected <wider-root>/WIDER_{split}/images/<event>/)')
    lines = _Lines(ann)
    items: list[WiderImage] = []
    while (nxt := lines.next()) is not None:
        name_line, name = nxt
        _check_name(lines, name_line, name)
        nxt = lines.next()
        if nxt is None:
            raise lines.error(len(lines.lines), f'the face count of {name}', 'end of file (truncated file)')
        line, text = nxt
        try:
            count = int(text)
        except ValueError:
            raise lines.error(line, f'the face count of {name} (one integer)', quote(text)) from None
        if count < 0:
            raise lines.error(line, f'a non-negative face count for {name}', f'{count}')
        rows = [_parse_face(lines, name, k, count) for k in range(count)]
        # a 0-face entry carries one all-zero placeholder row; tolerate files that omit it
        if count == 0 and (peek := lines.peek()) is not None and _face_row(peek) is not None:
            line, text = lines.next()
            if any(_face_row(text)):
                raise lines.error(line, f'the all-zero placeholder row of {name} (face count 0)', quote(text))
        data = np.array(rows, dtype=np.int64).reshape(-1, FIELDS_PER_FACE)   # (N, 10)
        keep = np.ones(len(data), dtype=bool)
        if drop_invalid:
            keep &= data[:, 4 + INVALID] == 0
        if min_size > 0:
            keep &= np.minimum(data[:, 2], data[:, 3]) >= min_size
        path = img_dir / name
        if check_images and not path.is_file():
            raise lines.error(name_line, f'an existing image file {path}', 'no such file')
        items.append(WiderImage(path=path, name=name, boxes=data[keep, :4].astype(np.float32),
                                attrs=data[keep, 4:].astype(np.int32)))
    return items


def cli_stats(args: argparse.Namespace) -> int:
    """`data stats`: counts and face-size statistics of one split on stdout; returns 0."""
    items = read_wider(args.wider_root, args.split, drop_invalid=False, check_images=not args.no_check_images)
    boxes = np.concatenate([it.boxes for it in items]) if items else np.zeros((0, 4), np.float32)
    attrs = np.concatenate([it.attrs for it in items]) if items else np.zeros((0, 6), np.int32)
    valid = attrs[:, INVALID] == 0
    per_image = np.array([len(it.boxes) for it in items])
    print(f'images {len(items)}')
    print(f'faces {len(boxes)}')
    print(f'valid faces {int(valid.sum())}')
    print(f'images without faces {int((per_image == 0).sum())}')
    if len(items):
        print(f'faces per image mean {per_image.mean():.2f} max {per_image.max()}')
    widths = boxes[valid, 2]
    if len(widths):
        pcts = np.percentile(widths, WIDTH_PERCENTILES)
        print('valid face width px ' + ' '.join(f'p{p} {v:.1f}' for p, v in zip(WIDTH_PERCENTILES, pcts)))
        for limit in (10, 20, 50):
            print(f'valid faces narrower than {limit} px {float((widths < limit).mean()):.3f}')
    return 0
