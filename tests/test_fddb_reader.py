"""FDDB readers: fold lists, ellipse and detection files, CRLF, file:line errors, the real folds."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ifq_tinier_yolo.datasets.fddb import read_fold_list
from ifq_tinier_yolo.errors import DataError

from fddb_files import ellipse_to_box, read_detections, read_ellipses, read_fold

SHARED_FOLDS = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'fddb' / 'FDDB-folds'
needs_folds = pytest.mark.skipif(not SHARED_FOLDS.is_dir(),
                                 reason=f'real FDDB folds not found at {SHARED_FOLDS}')

# the official ellipse file's spacing: double space before the constant 1, trailing space
ELLIPSES = ('2002/08/11/big/img_591\n1\n123.583300 85.549500 1.265839 269.693400 161.781200  1 \n'
            '2002/07/19/big/img_423\n2\n67.363819 44.511485 -1.476417 105.249970 87.209036  1\n'
            '41.936870 27.064477 1.471906 184.070915 129.345601  1\n')
LIST = '2002/08/11/big/img_591\n2002/07/19/big/img_423\n'


def write(path: Path, text: str, crlf: bool = False) -> Path:
    path.write_bytes((text.replace('\n', '\r\n') if crlf else text).encode())
    return path


@pytest.mark.parametrize('crlf', [False, True])
def test_read_ellipses_official_spacing(tmp_path: Path, crlf: bool):
    blocks = read_ellipses(write(tmp_path / 'e.txt', ELLIPSES, crlf))
    assert [name for name, _ in blocks] == ['2002/08/11/big/img_591', '2002/07/19/big/img_423']
    assert blocks[0][1].dtype == np.float64 and blocks[0][1].shape == (1, 5)
    np.testing.assert_array_equal(blocks[0][1][0], [123.5833, 85.5495, 1.265839, 269.6934, 161.7812])
    assert blocks[1][1].shape == (2, 5)


def test_read_fold_list_crlf_and_blank_lines(tmp_path: Path):
    path = write(tmp_path / 'l.txt', '\na\nb  \n\n', crlf=True)
    assert read_fold_list(path) == ['a', 'b']


def test_fold_list_name_with_space(tmp_path: Path):
    with pytest.raises(DataError, match=r'l\.txt:2: expected one image name per line.*found \'b c\''):
        read_fold_list(write(tmp_path / 'l.txt', 'a\nb c\n'))


def test_read_fold_checks_order(tmp_path: Path):
    ellipses = write(tmp_path / 'e.txt', ELLIPSES)
    assert [n for n, _ in read_fold(write(tmp_path / 'l.txt', LIST), ellipses)] == LIST.split()
    swapped = write(tmp_path / 's.txt', '\n'.join(reversed(LIST.split())) + '\n')
    with pytest.raises(DataError, match=r"e\.txt:1: expected image '2002/07/19/big/img_423' \(.*s\.txt:1;.*"
                                        r"found '2002/08/11/big/img_591'"):
        read_fold(swapped, ellipses)


def test_read_fold_missing_and_extra_blocks(tmp_path: Path):
    ellipses = write(tmp_path / 'e.txt', ELLIPSES)
    longer = write(tmp_path / 'l3.txt', LIST + 'img_3\n')
    with pytest.raises(DataError, match=r"e\.txt:4: expected a block for image 'img_3' .*found the end of the "
                                        r"annotations \(2 of 3 images\)"):
        read_fold(longer, ellipses)
    shorter = write(tmp_path / 'l1.txt', LIST.split()[0] + '\n')
    with pytest.raises(DataError, match=r"e\.txt:4: expected the end of the annotations.*found image"):
        read_fold(shorter, ellipses)


def test_count_too_small(tmp_path: Path):
    text = ELLIPSES.replace('img_423\n2\n', 'img_423\n1\n')
    with pytest.raises(DataError, match=r'e\.txt:7: expected an image name.*count of the previous image is too small'):
        read_ellipses(write(tmp_path / 'e.txt', text))


def test_count_too_large(tmp_path: Path):
    text = ELLIPSES.replace('img_591\n1\n', 'img_591\n2\n')
    with pytest.raises(DataError, match=r"e\.txt:4: expected 5 numbers `ra rb angle cx cy` \[1\] \(region 2 of 2 "
                                        r"of image '2002/08/11/big/img_591'\), found 1 fields"):
        read_ellipses(write(tmp_path / 'e.txt', text))


def test_truncated_file(tmp_path: Path):
    with pytest.raises(DataError, match=r"e\.txt:3: expected the region count of image 'b', found end of file"):
        read_ellipses(write(tmp_path / 'e.txt', 'a\n0\nb'))
    with pytest.raises(DataError, match=r"d\.txt:2: expected 5 numbers .*\(region 1 of 1 of image 'a'\), "
                                        r"found end of file"):
        read_detections(write(tmp_path / 'd.txt', 'a\n1\n\n\n', crlf=True))


@pytest.mark.parametrize('count, message', [('x', r"e\.txt:2: expected the region count of image 'a' \(an integer"),
                                            ('-1', r"e\.txt:2: expected the region count"),
                                            ('1.0', r"e\.txt:2: expected the region count")])
def test_bad_count(tmp_path: Path, count: str, message: str):
    with pytest.raises(DataError, match=message):
        read_detections(write(tmp_path / 'e.txt', f'a\n{count}\n1 2 3 4 5\n'))


@pytest.mark.parametrize('line, message', [
    ('1 2 x 4 0.5', r"d\.txt:3: expected a number for width .*found 'x'"),
    ('1 2 nan 4 0.5', r"d\.txt:3: expected a finite number for width"),
    ('1 2 -3 4 0.5', r"d\.txt:3: expected width >= 0"),
    ('1 2 3 4 0.5 7', r"d\.txt:3: expected 5 numbers .*found 6 fields .*check --ellipse"),
])
def test_malformed_detection_line(tmp_path: Path, line: str, message: str):
    with pytest.raises(DataError, match=message):
        read_detections(write(tmp_path / 'd.txt', f'a\n1\n{line}\n'))


def test_detections_rect_and_ellipse(tmp_path: Path):
    rects = read_detections(write(tmp_path / 'r.txt', 'a\n2\n1 2 3 4 0.5\n5 6 7 8 -1e-3\nb\n0\n', crlf=True))
    assert rects[0][1].shape == (2, 5) and rects[1][1].shape == (0, 5)
    np.testing.assert_array_equal(rects[0][1][1], [5, 6, 7, 8, -1e-3])
    ellipses = read_detections(write(tmp_path / 'e.txt', 'a\n1\n10 5 1.57 20 30 0.9\n'), ellipse=True)
    assert ellipses[0][1].shape == (1, 6)


def test_blank_line_inside_block(tmp_path: Path):
    with pytest.raises(DataError, match=r'd\.txt:3: .*found a blank line'):
        read_detections(write(tmp_path / 'd.txt', 'a\n1\n\n1 2 3 4 5\n'))


def test_ellipse_to_box():
    # angle pi/2: ra runs along y (FDDB's upright faces)
    x, y, w, h = ellipse_to_box(81, 58, math.pi / 2, 448, 157)
    assert (x, y, w, h) == pytest.approx((448 - 58, 157 - 81, 116, 162))
    assert ellipse_to_box(10, 4, 0.0, 0, 0) == pytest.approx((-10, -4, 20, 8))
    assert ellipse_to_box(7, 7, 0.7, 1, 2) == pytest.approx((-6, -5, 14, 14))
    # a rotated ellipse: the box touches the sampled boundary
    ra, rb, angle = 30.0, 12.0, 0.6
    t = np.linspace(0, 2 * np.pi, 100001)
    px = ra * np.cos(t) * np.cos(angle) - rb * np.sin(t) * np.sin(angle)
    py = ra * np.cos(t) * np.sin(angle) + rb * np.sin(t) * np.cos(angle)
    x, y, w, h = ellipse_to_box(ra, rb, angle, 0, 0)
    assert (x, y, x + w, y + h) == pytest.approx((px.min(), py.min(), px.max(), py.max()), abs=1e-6)


@needs_folds
def test_real_folds_counts():
    images = faces = 0
    for k in range(1, 11):
        blocks = read_fold(SHARED_FOLDS / f'FDDB-fold-{k:02d}.txt',
                           SHARED_FOLDS / f'FDDB-fold-{k:02d}-ellipseList.txt')
        images += len(blocks)
        faces += sum(len(r) for _, r in blocks)
    assert (images, faces) == (2845, 5171)
