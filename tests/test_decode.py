"""Fixed-point YOLOv2 decoding against the float reference decoder."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ifq_tinier_yolo.engine import decode as D
from ifq_tinier_yolo.engine.nms import nms, nms_vote
from ifq_tinier_yolo.netdef import ANCHORS

NMS_NUM, NMS_DEN = 450, 1000
STRIDE = 16
OUT_SCALE = 0.0021                        # a typical head scale (int8 weights on 2-bit codes)
BOX_ONE = 1 << D.BOX_FRAC_BITS
SCORE_ONE = 1 << D.SCORE_FRAC_BITS


def fixed_scale(scale: float) -> tuple[int, int]:
    """(multiplier, shift) of a float32 scale, as requantize_out_scale makes them."""
    mant, exp = np.frexp(np.float64(np.float32(scale)))
    return int(mant * 2.0 ** 31), 31 - int(exp)


def random_head(seed: int, grid: int = 13) -> tuple[np.ndarray, float, int, int]:
    """An int32 head of realistic values: offsets ~N(0, 1.5), sizes U(-2.5, 2.5), objectness U(-8, 5)."""
    rng = np.random.default_rng(seed)
    mult, shift = fixed_scale(OUT_SCALE)
    scale = mult * 2.0 ** -shift
    v = np.empty((len(ANCHORS), 5, grid, grid))
    v[:, :2] = rng.normal(0, 1.5, (len(ANCHORS), 2, grid, grid))
    v[:, 2:4] = rng.uniform(-2.5, 2.5, (len(ANCHORS), 2, grid, grid))
    v[:, 4] = rng.uniform(-8, 5, (len(ANCHORS), grid, grid))
    head = np.round(v / scale).astype(np.int32).reshape(-1, grid, grid)    # (A*5, H, W)
    return head, scale, mult, shift


def anchors_q16() -> np.ndarray:
    return np.round(np.asarray(ANCHORS) * 65536).astype(np.int64)


def test_round_shift_rounds_half_up():
    x = np.array([3, -3, 5, -5, 4, -4, 6], dtype=np.int64)
    assert D.round_shift(x, 1).tolist() == [2, -1, 3, -2, 2, -2, 3]
    assert D.round_shift(np.array([7], np.int64), 2).tolist() == [2]


def test_requantize_is_the_rounded_product():
    mult, shift = fixed_scale(OUT_SCALE)
    h = np.arange(-100000, 100000, 37, dtype=np.int64)
    exact = h * mult / 2.0 ** (shift - 16)                               # float64 is exact here
    assert np.array_equal(D.requantize(h, mult, shift), np.floor(exact + 0.5).astype(np.int64))


def test_lookup_tables_are_accurate():
    r = np.arange(-20 << 16, 20 << 16, 97, dtype=np.int64)                # 2**-16 units
    v = r / 65536.0
    sig = D.lut_lookup(r, D.SIGMOID_LUT, *D.SIGMOID_RANGE) / SCORE_ONE
    assert np.abs(sig - 1 / (1 + np.exp(-v))).max() < 2.0 ** -15
    inside = (v >= D.EXP_RANGE[0]) & (v <= D.EXP_RANGE[1])
    ex = D.lut_lookup(r, D.EXP_LUT, *D.EXP_RANGE) / (1 << D.EXP_FRAC_BITS)
    ref = np.exp(np.clip(v, *D.EXP_RANGE))
    assert (np.abs(ex - ref) <= 1e-5 * ref + 2.0 ** -16)[inside].all()
    top = D.EXP_LUT[-1] / (1 << D.EXP_FRAC_BITS)                          # exp(10): decode_float's clamp
    assert (ex[v > 10] == top).all() and ex.max() == top


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('conf', [0.05, 0.3])
def test_decode_fixed_matches_decode_float(seed, conf):
    """Same candidates, boxes within 1 px (in fact 0.25), same faces kept by NMS."""
    head, scale, mult, shift = random_head(seed)
    fboxes, fscores = D.decode_float(head * scale, np.asarray(ANCHORS), STRIDE, conf)
    qboxes, qscores, obj = D.decode_fixed(head, anchors_q16(), STRIDE, mult, shift, D.score_threshold_q(conf))
    assert qboxes.dtype == np.int64 and qboxes.shape[1] == 4 and qscores.dtype == np.int64
    near = np.abs(fscores - conf) < 2.0 ** -14                           # would be a tie at the threshold
    assert not near.any(), 'a score sits on the threshold: pick other seeds'
    assert len(qboxes) == len(fboxes) > 0
    assert np.abs(qboxes / BOX_ONE - fboxes).max() <= 0.25
    assert np.abs(qscores / SCORE_ONE - fscores).max() < 2.0 ** -15
    keep_f = nms(fboxes, fscores, NMS_NUM, NMS_DEN)
    keep_q = nms(qboxes, obj, NMS_NUM, NMS_DEN)
    assert keep_q.tolist() == keep_f.tolist()


def test_objectness_ranks_as_the_float_scores():
    head, scale, mult, shift = random_head(9)
    _, fscores = D.decode_float(head * scale, np.asarray(ANCHORS), STRIDE, 0.01)
    _, _, obj = D.decode_fixed(head, anchors_q16(), STRIDE, mult, shift, D.score_threshold_q(0.01))
    assert np.array_equal(np.argsort(-obj, kind='stable'), np.argsort(-fscores, kind='stable'))


def test_empty_result_keeps_shapes_and_dtypes():
    head, _, mult, shift = random_head(1)
    boxes, scores, obj = D.decode_fixed(head, anchors_q16(), STRIDE, mult, shift, D.score_threshold_q(1.0) + 1)
    assert boxes.shape == (0, 4) and boxes.dtype == np.int64 and scores.shape == (0,) and obj.shape == (0,)


def test_rejects_anchors_that_could_overflow():
    head, _, mult, shift = random_head(1)
    with pytest.raises(ValueError, match='anchors'):
        D.decode_fixed(head, anchors_q16() * 1000, STRIDE, mult, shift, 0)


@settings(max_examples=200, deadline=None)
@given(tx=st.floats(-30, 30), tw=st.floats(-30, 30), obj=st.floats(-30, 30),
       scale=st.sampled_from([0.0021, 0.0137, 0.0004]))
def test_single_cell_property(tx, tw, obj, scale):
    """Any single candidate decodes within 1 px of the float decoder (boxes up to ~1000 px)."""
    mult, shift = fixed_scale(scale)
    s = mult * 2.0 ** -shift
    head = np.zeros((5, 1, 1), dtype=np.int32)
    head[:, 0, 0] = np.round(np.array([tx, tx, min(tw, 3.0), min(tw, 3.0), obj]) / s)
    fb, fs = D.decode_float(head * s, np.array([[1.381, 1.747]]), STRIDE, 0.0)
    qb, qs, _ = D.decode_fixed(head, np.array([[90505, 114491]]), STRIDE, mult, shift, 0)
    assert len(fb) == len(qb) == 1
    assert np.abs(qb / BOX_ONE - fb).max() <= 1.0
    assert abs(qs[0] / SCORE_ONE - fs[0]) < 2.0 ** -15


def test_nms_containment_removes_boxes_inside_a_better_one():
    boxes = np.array([[0, 0, 100, 100],      # the face
                      [10, 10, 60, 60],      # a part of it: all inside, IoU 0.25
                      [80, 80, 130, 130],    # overlaps it by 16% of its own area
                      [200, 0, 260, 60]])    # elsewhere
    scores = np.array([0.9, 0.95, 0.5, 0.4])
    # plain NMS keeps all four (no IoU above 0.45); the part scores highest, so it comes first
    np.testing.assert_array_equal(nms(boxes, scores, 450, 1000), [1, 0, 2, 3])
    # containment only removes a box inside a *better* one: the part outranks the face here
    np.testing.assert_array_equal(nms(boxes, scores, 450, 1000, contain_num=800), [1, 0, 2, 3])
    scores[1] = 0.8
    np.testing.assert_array_equal(nms(boxes, scores, 450, 1000, contain_num=800), [0, 2, 3])
    # the threshold is strict: exactly 16% inside is kept at 0.16, removed just below
    np.testing.assert_array_equal(nms(boxes, scores, 450, 1000, contain_num=160), [0, 2, 3])
    np.testing.assert_array_equal(nms(boxes, scores, 450, 1000, contain_num=159), [0, 3])
    # float boxes give the same answer
    np.testing.assert_array_equal(nms(boxes.astype(float) + 0.5, scores, 450, 1000, contain_num=800), [0, 2, 3])


def test_nms_vote_averages_each_kept_box_with_the_boxes_it_suppressed():
    """The kept box becomes the score-weighted mean of itself and the boxes it suppressed by IoU,
    computed by hand here; a box removed by containment, or kept, does not vote; integer means
    round half up, also below zero."""
    boxes = np.array([[0, 0, 100, 100],      # kept, weight 3
                      [10, 0, 110, 100],     # IoU 0.82 with it: votes, weight 1
                      [30, 30, 60, 60],      # inside it (containment only): no vote
                      [60, 0, 160, 100],     # IoU 0.25: kept on its own, weight 2
                      [-3, -3, 97, 97]])     # IoU 0.89 with the first: votes, weight 0
    ranks = np.array([9, 8, 7, 6, 5])
    weights = np.array([3, 1, 4, 2, 0])
    keep, voted = nms_vote(boxes, ranks, weights, 450, 1000, contain_num=800)
    np.testing.assert_array_equal(keep, [0, 3])
    assert voted.dtype == np.int64
    # x1: (3*0 + 1*10 + 0*-3) / 4 = 2.5 -> 3 (half up); x2: (300 + 110) / 4 = 102.5 -> 103
    np.testing.assert_array_equal(voted, [[3, 0, 103, 100], [60, 0, 160, 100]])
    # the same in floats: the exact means
    _, fvoted = nms_vote(boxes.astype(float), ranks, weights.astype(float), 450, 1000, contain_num=800)
    np.testing.assert_allclose(fvoted[0], [2.5, 0, 102.5, 100])
    # negative means round half up too: (-5 * 1 + -6 * 1) / 2 = -5.5 -> -5
    pair = np.array([[-5, 0, 95, 100], [-6, 0, 94, 100]])
    _, v = nms_vote(pair, np.array([2, 1]), np.array([1, 1]), 450, 1000)
    np.testing.assert_array_equal(v, [[-5, 0, 95, 100]])
    # voters that all weigh 0 leave the box as it is; without suppression nothing moves
    _, v = nms_vote(pair, np.array([2, 1]), np.array([0, 0]), 450, 1000)
    np.testing.assert_array_equal(v, pair[:1])
    keep, v = nms_vote(boxes, ranks, weights, 1000, 1000)
    np.testing.assert_array_equal(keep, np.arange(5))
    np.testing.assert_array_equal(v, boxes)
    # the kept indices are nms's
    np.testing.assert_array_equal(keep, nms(boxes, ranks, 1000, 1000))
    np.testing.assert_array_equal(nms_vote(boxes, ranks, weights, 450, 1000, 800)[0], nms(boxes, ranks, 450, 1000, 800))
