"""csrc/ifq_vote.c: the greedy NMS with box voting that merges the Detector's pyramid levels, in C,
equal bit for bit to engine/nms.py's float path, alone and inside the Detector."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ifq_tinier_yolo.apps.detector import Detector
from ifq_tinier_yolo.engine.nms import nms_vote, nms_vote_at
from ifq_tinier_yolo.imageio import read_image
from sanitized import run_sanitized, sanitized_tool

REPO = Path(__file__).resolve().parents[1]
CROWD = ('WIDER_train', 'images', '0--Parade', '0_Parade_Parade_0_52.jpg')   # 214 faces


pytestmark = pytest.mark.usefixtures('native_built')


def random_case(rng: np.random.Generator, case: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (some of zero size, some duplicated, some on integer pixels), ranks (some tied), weights
    (some zero)."""
    n = int(rng.integers(0, 200))
    xy, wh = rng.uniform(0, 200, (n, 2)), rng.uniform(0, 60, (n, 2))
    if case % 3 == 0:
        xy, wh = np.round(xy), np.round(wh)
    boxes = np.column_stack([xy, xy + wh])
    if case % 4 == 0 and n:
        boxes[rng.integers(0, n, n // 3)] = boxes[0]
    ranks = rng.uniform(0, 1, n)
    if case % 5 == 0:
        ranks = np.round(ranks, 1)
    weights = ranks if case % 2 else rng.uniform(0, 1, n) * (rng.uniform(0, 1, n) > 0.2)
    return boxes, ranks, weights


@pytest.mark.parametrize('iou_num', [0, 450, 999, 1000])
@pytest.mark.parametrize('contain_num', [None, 0, 800])
def test_c_vote_equals_numpy_bit_for_bit(iou_num: int, contain_num: int | None):
    from ifq_tinier_yolo.native.binding import nms_vote as c_vote
    rng = np.random.default_rng(iou_num * 7 + (contain_num or 1))
    for case in range(40):
        boxes, ranks, weights = random_case(rng, case)
        keep, voted = nms_vote(boxes, ranks, weights, iou_num, 1000, contain_num)
        c_keep, c_voted = c_vote(boxes, ranks, weights, iou_num, 1000, contain_num)
        np.testing.assert_array_equal(c_keep, keep)
        np.testing.assert_array_equal(c_voted, voted)   # exact: the same sums in the same order
        assert c_keep.dtype == np.int64 and c_voted.dtype == np.float64


def test_c_vote_suppresses_and_votes():
    """Two overlapping boxes become one, their score-weighted mean; a box inside a better one
    goes by containment without voting; a NaN rank is refused."""
    from ifq_tinier_yolo.native.binding import nms_vote as c_vote
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 90, 90], [60, 60, 70, 70]], dtype=np.float64)
    ranks = np.array([0.9, 0.3, 0.8, 0.7])
    keep, voted = c_vote(boxes, ranks, ranks, 450, 1000, 800)
    np.testing.assert_array_equal(keep, [0, 2])
    np.testing.assert_allclose(voted, [[0.25, 0, 10.25, 10], [50, 50, 90, 90]])
    keep, _ = c_vote(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 450, 1000)
    assert keep.shape == (0,)
    with pytest.raises(ValueError, match='NaN'):
        c_vote(boxes, np.array([0.9, np.nan, 0.8, 0.7]), ranks, 450, 1000)


def test_native_detector_merges_in_c_with_the_numpy_result(shared_wider: Path):
    """At fddb detect's threshold a crowd gives thousands of candidates: the native Detector's C
    merge returns exactly what the numpy merge returns, with --flip and the upscaled level too."""
    image = read_image(shared_wider.joinpath(*CROWD))
    for flip in (False, True):
        det = Detector.load(REPO / 'weights' / 'ifq_tinier_yolo.ifq', backend='native', conf=0.01, flip=flip,
                            upscale='on')
        assert det._vote is not nms_vote_at
        numpy_merge = Detector(det._run, det.path, det.backend, det.conf, det.nms, det.sizes, det.stride, det.flip,
                               det.upscale, det.up_size, None, det.coarse_heads, nms_vote_at)
        got = det.detect_array(image)
        assert len(got) > 500
        np.testing.assert_array_equal(got, numpy_merge.detect_array(image))


def test_sanitized_vote_campaign(tmp_path: Path):
    """ASan + UBSan build of ifq_nms_vote (tools/ifq_vote_check.c, buffers of exactly the sizes the
    API asks for): random cases, empty and one-box ones included, no report, numpy's result."""
    exe = sanitized_tool('ifq_vote_check')
    rng = np.random.default_rng(17)
    cases, paths = [], []
    for case in range(60):
        boxes, ranks, weights = random_case(rng, case)
        if case < 2:   # no box, one box
            boxes, ranks, weights = boxes[:case], ranks[:case], weights[:case]
        iou_num, contain_num = [0, 450, 1000][case % 3], [-1, 800][case % 2]
        cases.append((boxes, ranks, weights, iou_num, contain_num))
        paths.append(tmp_path / f'{case}.bin')
        header = np.array([iou_num, 1000, contain_num, len(ranks)], dtype='<i4').tobytes()
        paths[-1].write_bytes(header + np.concatenate([boxes.ravel(), ranks, weights]).astype('<f8').tobytes())
    lines = run_sanitized(exe, paths)
    assert len(lines) == len(cases)
    for (boxes, ranks, weights, iou_num, contain_num), line in zip(cases, lines):
        status, kept, *rest = line.split()
        keep, voted = nms_vote(boxes, ranks, weights, iou_num, 1000, None if contain_num < 0 else contain_num)
        assert status == '0' and int(kept) == len(keep), line[:200]
        np.testing.assert_array_equal([int(v) for v in rest[:len(keep)]], keep)
        np.testing.assert_array_equal(np.array([float.fromhex(v) for v in rest[len(keep):]]).reshape(-1, 4), voted)
