"""Box conventions (boxes.py): corners, detection rows, FDDB ellipses (checked against the
reference FDDB fold), fixed-point anchors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ifq_tinier_yolo.boxes import FDDB_VERTICAL, anchors_fixed, corners, detection_rows, fddb_ellipses
from ifq_tinier_yolo.engine.model import ANCHOR_FRAC_BITS

REF_ELLIPSES = Path(__file__).resolve().parents[2] / 'shared' / 'reference' / 'fddb' / 'FDDB-folds' \
    / 'FDDB-fold-01-ellipseList.txt'


def test_corners_and_detection_rows_are_inverse():
    xywh = np.array([[1.5, 2.0, 3.0, 4.25, 0.9], [0, 0, 0, 0, 0.1]])
    xyxy = corners(xywh)
    np.testing.assert_array_equal(xyxy, [[1.5, 2.0, 4.5, 6.25], [0, 0, 0, 0]])
    np.testing.assert_array_equal(detection_rows(xyxy, xywh[:, 4]), xywh)
    assert corners(np.zeros((0, 5))).shape == (0, 4)
    assert detection_rows(np.zeros((0, 4)), np.zeros(0)).shape == (0, 5)


def test_fddb_ellipses_put_the_major_axis_first():
    e = fddb_ellipses(np.array([[10, 20, 30, 40], [0, 0, 50, 20], [0, 0, 8, 8]], dtype=np.float32))
    np.testing.assert_allclose(e[0], [20, 15, FDDB_VERTICAL, 25, 40])   # tall: vertical major axis
    np.testing.assert_allclose(e[1], [25, 10, 0.0, 25, 10])             # wide: horizontal
    np.testing.assert_allclose(e[2], [4, 4, FDDB_VERTICAL, 4, 4])       # square: written as tall
    assert e.dtype == np.float64
    assert fddb_ellipses(np.zeros((0, 4))).shape == (0, 5)
    assert fddb_ellipses(np.zeros((0, 5))).shape == (0, 5)   # detection rows: the score is ignored


def test_the_reference_fold_uses_the_same_ellipse_convention():
    if not REF_ELLIPSES.is_file():
        pytest.skip(f'reference FDDB fold not found: {REF_ELLIPSES} (../shared/reference)')
    rows = [line.split() for line in REF_ELLIPSES.read_text().splitlines() if len(line.split()) == 6]
    ra, rb, angle = (np.array([float(r[k]) for r in rows]) for k in range(3))
    assert len(rows) == 540 and (ra >= rb).all()
    assert set(np.unique(angle)) == {0.0, FDDB_VERTICAL}
    assert (rb[angle == 0.0] < ra[angle == 0.0]).all()   # angle 0 only where the box is wider than tall


def test_anchors_fixed_rounds_half_to_even():
    half = 0.5 / (1 << ANCHOR_FRAC_BITS)
    a = anchors_fixed([(1.0, 2.5), (1.0 + half, 3.0 + 3 * half)])
    assert a.dtype == np.int64 and a.shape == (2, 2)
    one = 1 << ANCHOR_FRAC_BITS
    assert a.tolist() == [[one, 5 * one // 2], [one, 3 * one + 2]]
