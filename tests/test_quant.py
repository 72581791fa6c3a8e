"""Quantizers (model/quant.py): values at and around every edge, and their straight-through gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ifq_tinier_yolo.model.quant import binarize_weights, hwgq_codes, int8_weights, round_ste, ste
from ifq_tinier_yolo.netdef import FIXED_WEIGHT_MAX, HWGQ_CLIP, HWGQ_CUTS, HWGQ_LEVELS, HWGQ_STEP

F32 = torch.float32


def f32(v: float) -> float:
    """The float32 number nearest to v, as a python float."""
    return float(np.float32(v))


def above(v: float) -> float:
    """The next float32 above float32(v)."""
    return float(np.nextafter(np.float32(v), np.float32(np.inf)))


def below(v: float) -> float:
    """The next float32 below float32(v)."""
    return float(np.nextafter(np.float32(v), np.float32(-np.inf)))


# --- constants ------------------------------------------------------------------------------

def test_hwgq_constants_match_the_paper():
    assert HWGQ_STEP == 0.538
    assert HWGQ_CUTS == (0.0, 0.807, 1.345)
    assert HWGQ_CLIP == pytest.approx(1.614)
    assert HWGQ_LEVELS == 3
    assert FIXED_WEIGHT_MAX == 127


# --- ste / round_ste ------------------------------------------------------------------------

def test_ste_forwards_hard_and_backwards_soft():
    x = torch.tensor([-1.5, 0.25, 2.0], requires_grad=True)
    hard = torch.tensor([7.0, -3.0, 0.0])
    y = ste(hard, x ** 2)
    assert torch.equal(y, hard)
    y.sum().backward()
    assert torch.equal(x.grad, 2 * x.detach())


def test_round_ste_rounds_half_to_even_with_identity_gradient():
    x = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49, -0.51, 3.7], requires_grad=True)
    y = round_ste(x)
    assert y.tolist() == [-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 0.0, -1.0, 4.0]
    g = torch.tensor([1.0, -2.0, 3.0, 0.5, 0.0, 4.0, -1.0, 2.0, 9.0])
    (y * g).sum().backward()
    assert torch.equal(x.grad, g)


# --- binary weights -------------------------------------------------------------------------

def binary_case() -> torch.Tensor:
    """(2, 1, 2, 3) weights with zeros, -0.0, |W| > 1 and |W| == 1."""
    return torch.tensor([[0.0, -0.0, 0.5, -0.25, 2.0, -1.5],
                         [-0.1, 0.3, -0.7, 1.0, -1.0, 0.0]], dtype=F32).view(2, 1, 2, 3)


def test_binarize_signs_and_alpha():
    w = binary_case()
    signs, alpha = binarize_weights(w)
    assert signs.shape == w.shape and signs.dtype == w.dtype
    assert signs.view(2, 6).tolist() == [[1, 1, 1, -1, 1, -1],    # sign(0) = sign(-0.0) = +1
                                         [-1, 1, -1, 1, -1, 1]]
    assert alpha.shape == (2,)
    assert alpha.tolist() == pytest.approx([4.25 / 6, 3.1 / 6], rel=1e-6)


def test_binarize_gradient_is_straight_through_and_zero_beyond_one():
    w = binary_case().requires_grad_(True)
    g = torch.arange(1.0, 13.0).view(2, 1, 2, 3)
    signs, _ = binarize_weights(w)
    (signs * g).sum().backward()
    passes = (w.detach().abs() <= 1).float()
    assert torch.equal(w.grad, g * passes)
    # the two weights beyond +-1 (2.0 and -1.5) get no gradient; everything else does
    assert passes.view(-1).tolist() == [1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1]


def test_binarize_alpha_gradient_is_sign_over_fan_in():
    w = torch.tensor([[0.5, -0.25, 2.0, -1.5], [-0.1, 0.3, -0.7, 1.0]]).view(2, 4, 1, 1).requires_grad_(True)
    _, alpha = binarize_weights(w)
    (alpha * torch.tensor([1.0, 3.0])).sum().backward()
    expected = torch.sign(w.detach()) / 4 * torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)
    torch.testing.assert_close(w.grad, expected)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-4, 4, width=32), min_size=1, max_size=40))
def test_binarize_signs_are_exactly_plus_minus_one(values):
    w = torch.tensor(values, dtype=F32).view(1, -1, 1, 1)
    signs, alpha = binarize_weights(w)
    expected = torch.where(w >= 0, 1.0, -1.0)
    assert torch.equal(signs, expected)   # exact, despite the soft + (hard - soft) arithmetic
    assert float(alpha) == pytest.approx(float(np.mean(np.abs(np.float32(values)))), rel=1e-5, abs=1e-30)


# --- int8 weights ---------------------------------------------------------------------------

HALVES = [127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5]


def test_int8_per_channel_rounds_half_to_even():
    # row 1 is row 0 / 16: the same integers, with an exact power-of-two scale
    w = torch.tensor([HALVES, [v / 16 for v in HALVES]]).view(2, 8, 1, 1)
    q, scale = int8_weights(w, per_channel=True)
    assert scale.tolist() == [1.0, 1 / 16]
    expected = [127, 0, 2, 2, 0, -2, -2, 126]   # half to even: 0.5 -> 0, 2.5 -> 2, 126.5 -> 126
    assert q.view(2, 8).tolist() == [expected, expected]


def test_int8_per_tensor_uses_one_scale():
    w = torch.tensor([HALVES, [v / 16 for v in HALVES]]).view(2, 8, 1, 1)
    q, scale = int8_weights(w, per_channel=False)
    assert scale.shape == (1,) and scale.tolist() == [1.0]
    assert q[0].view(-1).tolist() == [127, 0, 2, 2, 0, -2, -2, 126]
    # 127/16 = 7.9375 -> 8, 126.5/16 = 7.906 -> 8, the small ones -> 0
    assert q[1].view(-1).tolist() == [8, 0, 0, 0, 0, 0, 0, 8]


def test_int8_scale_is_max_abs_over_127_and_clamps_to_127():
    w = torch.tensor([[0.3, -2.54, 1.0], [5.0, 0.0, -5.0]]).view(2, 3, 1, 1)
    q, scale = int8_weights(w, per_channel=True)
    torch.testing.assert_close(scale, torch.tensor([2.54, 5.0]) / 127)
    assert q.abs().max() == 127
    assert q.view(2, 3).tolist() == [[15, -127, 50], [127, 0, -127]]   # 0.3*50 = 15, 1*50 = 50


def test_int8_zero_channel_gets_unit_scale_not_nan():
    w = torch.zeros(3, 2, 3, 3)
    w[1] = 0.5
    q, scale = int8_weights(w, per_channel=True)
    assert torch.isfinite(q).all() and torch.isfinite(scale).all()
    assert scale.tolist() == [1.0, pytest.approx(0.5 / 127), 1.0]
    assert q[0].abs().sum() == 0 and q[2].abs().sum() == 0 and bool((q[1] == 127).all())


def test_int8_gradient_is_straight_through_over_the_scale():
    w = torch.tensor([[0.3, -2.54, 1.0], [5.0, 0.25, -5.0]]).view(2, 3, 1, 1).requires_grad_(True)
    for per_channel in (True, False):
        w.grad = None
        q, scale = int8_weights(w, per_channel=per_channel)
        assert not scale.requires_grad
        (q * torch.arange(6.0).view(2, 3, 1, 1)).sum().backward()
        expected = torch.arange(6.0).view(2, 3, 1, 1) / scale.view(-1, 1, 1, 1)
        torch.testing.assert_close(w.grad, expected)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 4), st.integers(1, 12),
       st.one_of(st.just(1.0), st.floats(1e-20, 1e20)), st.data())
def test_int8_properties(out_ch, fan_in, magnitude, data):
    # normal float32 weights (subnormal scales are covered by the regression test below)
    weight = st.one_of(st.just(0.0), st.floats(2 ** -20, 1, width=32), st.floats(-1, -2 ** -20, width=32))
    values = data.draw(st.lists(weight, min_size=out_ch * fan_in, max_size=out_ch * fan_in))
    w = torch.tensor(values, dtype=F32).view(out_ch, fan_in, 1, 1) * magnitude
    for per_channel in (True, False):
        q, scale = int8_weights(w, per_channel=per_channel)
        assert torch.isfinite(q).all() and bool((scale > 0).all())
        assert torch.equal(q, q.round()) and int(q.abs().max()) <= FIXED_WEIGHT_MAX
        s = scale.view(-1, 1, 1, 1)
        # w ~ q * scale within half a step; the largest weight maps to +-127
        assert bool(((q * s - w).abs() <= s * 0.5001 + 1e-37).all())
        amax = w.abs().amax(dim=(1, 2, 3)) if per_channel else w.abs().amax().view(1)
        peak = q.abs().amax(dim=(1, 2, 3)) if per_channel else q.abs().amax().view(1)
        assert bool(((amax == 0) | (peak == FIXED_WEIGHT_MAX)).all())


def test_int8_tiny_weights_do_not_underflow_to_nan():
    """Regression: a channel of subnormal weights made max|W|/127 underflow to 0 and w/0 = inf -> NaN."""
    w = torch.tensor([[1e-44, -3e-45, 0.0], [0.5, 0.25, -1.0]], dtype=F32).view(2, 3, 1, 1)
    for per_channel in (True, False):
        q, scale = int8_weights(w, per_channel=per_channel)
        assert torch.isfinite(q).all() and bool((scale > 0).all())
        assert int(q.abs().max()) <= FIXED_WEIGHT_MAX


# --- HWGQ codes -----------------------------------------------------------------------------

HWGQ_POINTS = [   # (x, code): at and around every cut point, and beyond the clip
    (-np.inf, 0), (-100.0, 0), (-1e-6, 0), (-0.0, 0), (0.0, 0),
    (1.4e-45, 1), (1e-30, 1), (1e-6, 1), (0.5, 1),
    (f32(0.807), 1), (above(0.807), 2), (1.0, 2),
    (f32(1.345), 2), (above(1.345), 3), (f32(1.614), 3), (above(1.614), 3), (100.0, 3), (np.inf, 3),
]


def test_hwgq_codes_at_and_around_the_cut_points():
    x = torch.tensor([v for v, _ in HWGQ_POINTS], dtype=F32)
    codes = hwgq_codes(x)
    assert codes.dtype == F32
    assert codes.tolist() == [c for _, c in HWGQ_POINTS]


def test_hwgq_values_are_levels_of_the_step():
    x = torch.linspace(-1, 3, 401)
    values = hwgq_codes(x) * HWGQ_STEP
    levels = torch.tensor([0, 1, 2, 3], dtype=F32) * HWGQ_STEP
    assert bool((values[:, None] == levels[None]).any(1).all())
    # each positive x is coded by the nearest positive level, below the clip
    inside = (x > 0) & (x <= 1.614)
    nearest = ((x[inside, None] - levels[None, 1:]).abs().argmin(1) + 1).float()
    mismatch = (nearest != hwgq_codes(x[inside])).nonzero().view(-1)
    assert len(mismatch) == 0, x[inside][mismatch]


GRAD_POINTS = [   # (x, gradient * HWGQ_STEP)
    (-1.0, 0.0), (-1e-6, 0.0), (1e-6, 1.0), (0.3, 1.0), (f32(0.807), 1.0), (1.0, 1.0),
    (f32(1.345), 1.0), (below(1.614), 1.0), (f32(1.614), 1.0), (above(1.614), 0.0), (1.7, 0.0), (50.0, 0.0),
]


def test_hwgq_gradient_is_relu_over_step_zero_beyond_the_clip():
    x = torch.tensor([v for v, _ in GRAD_POINTS], dtype=F32, requires_grad=True)
    hwgq_codes(x).sum().backward()
    expected = torch.tensor([g for _, g in GRAD_POINTS], dtype=F32) / HWGQ_STEP
    torch.testing.assert_close(x.grad, expected, rtol=1e-6, atol=0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=64))
def test_hwgq_codes_count_the_cuts_exactly(values):
    x = torch.tensor(values, dtype=F32)
    codes = hwgq_codes(x)
    expected = sum((x > np.float32(c)).float() for c in HWGQ_CUTS)   # float32 comparisons
    assert torch.equal(codes, expected)   # exact integers in {0, 1, 2, 3}
    order = torch.argsort(x)
    assert bool((codes[order].diff() >= 0).all())   # monotone


def test_hwgq_codes_with_gradient_stay_exact_integers():
    """The STE sum soft + (hard - soft) must not leave 2.9999998 behind in a training forward."""
    torch.manual_seed(0)
    x = (torch.randn(200_000) * 1.5).requires_grad_(True)
    codes = hwgq_codes(x)
    assert torch.equal(codes, codes.round())
    assert set(codes.unique().tolist()) == {0.0, 1.0, 2.0, 3.0}
