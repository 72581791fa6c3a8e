"""Conversion passes: one test per pass (behaviour and structure), threshold edge cases, purity."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ifq_tinier_yolo.engine.model import accumulator_bound
from ifq_tinier_yolo.errors import ConversionError
from ifq_tinier_yolo.integrate import passes as P
from ifq_tinier_yolo.netdef import HWGQ_CUTS, LayerSpec

CUTS = np.asarray(HWGQ_CUTS, dtype=np.float32)
TINY = (LayerSpec('c1', 'first', 4, 3, 1, pool=2), LayerSpec('c2', 'hidden', 6, 3, 1, pool=2),
        LayerSpec('c3', 'hidden', 5, 3, 2), LayerSpec('head', 'head', 5, 1, 1))
ANCHORS = ((1.0, 1.5),)


@pytest.fixture(scope='module')
def tiny_net(torch_one_thread_module):
    """A random hwgq network of the tiny table, described for the passes."""
    from ifq_tinier_yolo.integrate.convert import describe_network
    from quant_nets import random_quant_network
    return describe_network(random_quant_network(TINY, ANCHORS, seed=3, calib_size=16), 32)


def float_codes(affine: tuple[np.ndarray, ...], s: np.ndarray) -> np.ndarray:
    """The float model's codes: #{k : ((s * a) * b) + c > cut_k} in float32, s int64 (O, n)."""
    a, b, c = (np.asarray(v, dtype=np.float32)[:, None] for v in affine)
    z = s.astype(np.float32) * a * b + c
    return (z[..., None] > CUTS).sum(-1)


def int_codes(thresholds: np.ndarray, signs: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The integer model's codes: #{k : sign * s > tau_k}."""
    v = signs.astype(np.int64)[:, None] * s
    return (v[..., None] > thresholds.astype(np.int64)[:, None, :]).sum(-1)


def one_layer_net(affine: tuple[np.ndarray, ...], in_ch: int = 1, kind: str = 'hidden') -> P.NetDesc:
    """A hand-built description of one layer (kernel 3) with the given float32 affine."""
    o = len(affine[0])
    spec = LayerSpec('edge', kind, o, 3, 1)
    w = np.ones((o, in_ch, 3, 3), dtype=np.float32)
    layer = P.LayerDesc(spec, in_ch, w, np.ones(o, np.float32), 1.0,
                        affine=tuple(np.asarray(v, dtype=np.float32) for v in affine))
    return P.NetDesc((layer,), 32, CUTS)


def compose(net: P.NetDesc) -> P.LayerDesc:
    return P.compose_thresholds(P.bound_accumulators(P.convert_weights_to_integers(net))).layers[0]


def all_accumulators(layer: P.LayerDesc) -> np.ndarray:
    r = layer.acc_bound
    return np.tile(np.arange(-r, r + 1, dtype=np.int64), (layer.spec.out_ch, 1))   # (O, 2R+1)


# --- one test per pass ---------------------------------------------------------------------

def test_convert_weights_to_integers(tiny_net):
    out = P.convert_weights_to_integers(tiny_net)
    for before, after in zip(tiny_net.layers, out.layers):
        assert after.weights.dtype == np.int8 and before.weights.dtype == np.float32
        assert np.array_equal(after.weights.astype(np.float32), before.weights)
    assert set(np.unique(out.layers[1].weights)) <= {-1, 1}
    bad = replace(tiny_net, layers=(replace(tiny_net.layers[0], weights=tiny_net.layers[0].weights + 0.5),
                                    *tiny_net.layers[1:]))
    with pytest.raises(ConversionError, match='layer c1'):
        P.convert_weights_to_integers(bad)
    w2 = tiny_net.layers[1].weights.copy()
    w2[0, 0, 0, 0] = 2.0
    layers = (tiny_net.layers[0], replace(tiny_net.layers[1], weights=w2), *tiny_net.layers[2:])
    bad = replace(tiny_net, layers=layers)
    with pytest.raises(ConversionError, match='layer c2.*[+]-1'):
        P.convert_weights_to_integers(bad)


def test_bound_accumulators(tiny_net):
    out = P.bound_accumulators(tiny_net)
    assert [ld.acc_bound for ld in out.layers] == [3 * 9 * 255 * 127, 4 * 9 * 3, 6 * 9 * 3, 5 * 3 * 127]
    huge = replace(tiny_net.layers[1], in_ch=(1 << 24) // 27 + 1)
    with pytest.raises(ConversionError, match='layer c2.*2\\*\\*24'):
        P.bound_accumulators(replace(tiny_net, layers=(tiny_net.layers[0], huge, *tiny_net.layers[2:])))


def test_compose_thresholds_exhaustive(tiny_net):
    """Every accumulator value of every channel gives the float model's code (first and hidden)."""
    out = P.run_passes(tiny_net, (P.convert_weights_to_integers, P.bound_accumulators, P.compose_thresholds))
    for layer in out.layers[:-1]:
        s = all_accumulators(layer)
        ours = int_codes(layer.thresholds, layer.signs, s)
        assert np.array_equal(ours, float_codes(layer.affine, s)), layer.spec.name
        assert layer.thresholds.shape == (layer.spec.out_ch, 3) and layer.signs.dtype == np.int8
    assert (out.layers[1].signs == -1).any() or (out.layers[2].signs == -1).any()   # negative gammas exist
    assert out.layers[-1].thresholds is None                                         # the head has none


def test_compose_thresholds_against_the_torch_block(torch_one_thread_module):
    """A 1x1 torch ConvBlock with edge-case BatchNorm, fed every accumulator value it can produce."""
    import torch
    from ifq_tinier_yolo.model.tinier_yolo import ConvBlock
    block = ConvBlock(LayerSpec('blk', 'hidden', 6, 1, 1), 8, 'hwgq').eval()
    with torch.no_grad():
        block.conv.weight.copy_(torch.tensor([1.0, -1, 1, -1, 1, 1, -1, 1]).repeat(6, 1).view(6, 8, 1, 1) * 0.3)
        block.bn.weight.copy_(torch.tensor([1.3, -0.7, 0.0, 2.0, -1.0, 0.9]))      # negative and zero gamma
        block.bn.bias.copy_(torch.tensor([0.1, 0.4, 1.0, -0.2, 0.0, 0.807]))
        block.bn.running_mean.copy_(torch.tensor([0.5, -0.3, 0.0, 0.2, 1.0, 0.0]))
        block.bn.running_var.copy_(torch.tensor([1.0, 0.5, 1.0, 0.0, 2.0, 3.0]))   # a zero variance
    # every code pattern of 8 channels (5 weights +1, 3 weights -1): every accumulator in [-9, 15]
    codes = torch.tensor(np.indices((4,) * 8).reshape(8, -1).T, dtype=torch.float32)   # (65536, 8)
    x = codes.T.reshape(1, 8, 256, 256)
    want = block(x).detach().numpy()[0].reshape(6, -1)                   # torch codes (6, 65536)
    acc = block.accumulate(x).detach().numpy()[0].reshape(6, -1).astype(np.int64)
    w, w_scale = block.int_weights()
    net = P.NetDesc((P.LayerDesc(block.spec, 8, w.detach().numpy(), w_scale.detach().numpy(), 0.538,
                                 affine=tuple(t.detach().numpy() for t in block.post_affine())),),
                    32, CUTS)
    layer = compose(net)
    assert np.array_equal(int_codes(layer.thresholds, layer.signs, acc), want)
    assert set(np.unique(acc).tolist()) == set(range(-9, 16))


def test_compose_thresholds_on_a_threshold():
    """Accumulators exactly on a cut: z == cut is not above it (strict >)."""
    t1 = CUTS[1]
    affine = (np.array([0.25, t1 / 8, 1.0], np.float32), np.ones(3, np.float32),
              np.array([-0.75, 0.0, -3.0], np.float32))
    layer = compose(one_layer_net(affine))
    s = all_accumulators(layer)
    assert float_codes(affine, np.array([[3], [8], [3]]))[:, 0].tolist() == [0, 1, 0]   # f = 0, T1, 0 exactly
    assert np.array_equal(int_codes(layer.thresholds, layer.signs, s), float_codes(affine, s))
    assert layer.thresholds[0, 0] == 3 and layer.thresholds[1, 1] == 8 and layer.thresholds[2, 0] == 3


@pytest.mark.parametrize('case, affine', [
    ('negative BN scale', ([0.01, 0.3], [-1.7, -0.2], [0.4, 2.0])),
    ('zero variance', ([0.02, 0.02], [1 / np.sqrt(1e-5), -1 / np.sqrt(1e-5)], [-0.1, 0.5])),
    ('zero gamma', ([0.02, 0.02], [0.0, 0.0], [1.0, -1.0])),
    ('alpha zero', ([0.0, 0.0], [1.3, -1.3], [0.9, 0.5])),
    ('tiny scale', ([1e-30, 1e-30], [1e-20, 1.0], [0.807, 1.345])),
])
def test_compose_thresholds_edge_cases(case, affine):
    layer = compose(one_layer_net(tuple(np.asarray(v, np.float32) for v in affine), in_ch=2))
    s = all_accumulators(layer)
    assert np.array_equal(int_codes(layer.thresholds, layer.signs, s), float_codes(affine, s)), case
    r = layer.acc_bound
    assert (layer.thresholds >= -r - 1).all() and (layer.thresholds <= r).all()
    if case == 'zero gamma':   # constant channels: thresholds outside the range, code 2 and 0
        assert layer.thresholds.tolist() == [[-r - 1, -r - 1, r], [r, r, r]]


def test_compose_thresholds_rejects_non_finite():
    affine = (np.array([0.1], np.float32), np.array([np.nan], np.float32), np.array([0.0], np.float32))
    with pytest.raises(ConversionError, match='layer edge'):
        compose(one_layer_net(affine))


@settings(max_examples=150, deadline=None)
@given(a=st.floats(-1.0, 1.0, width=32), b=st.floats(-100.0, 100.0, width=32), c=st.floats(-4.0, 4.0, width=32),
       first=st.booleans())
def test_compose_thresholds_random_affines(a, b, c, first):
    """Property: any finite float32 affine composes exactly (hidden: every accumulator; first:
    both sides of every threshold plus random accumulators)."""
    scale = 1e-4 if first else 1.0
    affine = (np.array([a * scale], np.float32), np.array([b], np.float32), np.array([c], np.float32))
    net = one_layer_net(affine, kind='first' if first else 'hidden', in_ch=3 if first else 4)
    layer = compose(net)
    s = all_accumulators(layer)
    if first:
        r = layer.acc_bound
        sides = layer.thresholds[:, :, None] + np.arange(-1, 3)            # both sides of each threshold
        near = (layer.signs.astype(np.int64)[:, None, None] * sides).reshape(1, -1)
        rand = np.random.default_rng(0).integers(-r, r + 1, (1, 2000))
        s = np.clip(np.concatenate([near, rand, [[-r, r]]], axis=1), -r, r)
    assert np.array_equal(int_codes(layer.thresholds, layer.signs, s), float_codes(affine, s))


def test_round_to_fixed():
    x = np.array([0.3, -1.7, 0.0011, 1.0])
    q = P.round_to_fixed(x, 8)
    frac = 8 - 2 - int(np.floor(np.log2(1.7)))
    assert np.array_equal(q * 2 ** frac, np.round(q * 2 ** frac))          # on the grid
    assert np.abs(q * 2 ** frac).max() <= 127 and np.abs(q - x).max() <= 2.0 ** -(frac + 1)
    assert not P.round_to_fixed(np.zeros(3), 16).any()


def test_round_parameters_separately(tiny_net):
    out = P.round_parameters_separately(tiny_net)
    assert out.separated and not tiny_net.separated
    for before, after in zip(tiny_net.layers[:-1], out.layers[:-1]):
        p = after.rounded
        assert set(p) == {'gamma', 'beta', 'mean', 'var', 'w_scale', 'in_scale', 'cuts'}
        assert np.abs(p['w_scale'] - before.w_scale).max() <= np.abs(before.w_scale).max() * 2.0 ** -6
        assert before.rounded is None
    assert out.layers[-1].rounded is None


def test_compose_rounded_thresholds(tiny_net):
    """Thresholds reproduce the float64 BN-then-quantize of the rounded parameters, exhaustively."""
    out = P.run_passes(tiny_net, P.SEPARATED[:4])
    for layer in out.layers[1:-1]:
        p, s = layer.rounded, all_accumulators(layer)
        col = {k: v[:, None, None] for k, v in p.items() if k != 'cuts'}
        z = col['gamma'] * (s[..., None] * col['w_scale'] * col['in_scale'] - col['mean']) \
            / np.sqrt(col['var'] + layer.bn.eps) + col['beta']
        ref = (z > p['cuts']).sum(-1)
        assert np.array_equal(int_codes(layer.thresholds, layer.signs, s), ref), layer.spec.name


def test_separated_conversion_loses_what_integration_keeps(tiny_net):
    integ = P.run_passes(tiny_net, P.INTEGRATED)
    sep = P.run_passes(tiny_net, P.SEPARATED)
    differs = [not np.array_equal(a.thresholds, b.thresholds) for a, b in zip(integ.layers[:-1], sep.layers[:-1])]
    assert any(differs)                         # rounding each parameter alone moves thresholds


def test_fold_head_bias(tiny_net):
    net = P.bound_accumulators(tiny_net)
    out = P.fold_head_bias(net)
    head = out.layers[-1]
    assert head.head_bias.dtype == np.int32
    assert np.array_equal(head.head_bias, net.layers[-1].head_bias.astype(np.int32))
    for bad_bias in (net.layers[-1].head_bias + 0.5, np.full(5, 2.0 ** 24, np.float32)):
        bad = replace(net, layers=(*net.layers[:-1], replace(net.layers[-1], head_bias=bad_bias)))
        with pytest.raises(ConversionError, match='layer head'):
            P.fold_head_bias(bad)


@pytest.mark.parametrize('scale', [0.0021, 1.0, 3e-7, float(np.float32(0.1)), 2.0 ** -31])
def test_requantize_out_scale(tiny_net, scale):
    net = replace(tiny_net, layers=(*tiny_net.layers[:-1], replace(tiny_net.layers[-1], out_scale=scale)))
    head = P.requantize_out_scale(net).layers[-1]
    assert (1 << 30) <= head.out_multiplier < (1 << 31)
    assert head.out_multiplier * 2.0 ** -head.out_shift == np.float64(np.float32(scale))   # exact


@pytest.mark.parametrize('scale', [0.0, -1.0, float('nan'), 1e-12, 1e6])
def test_requantize_out_scale_rejects(tiny_net, scale):
    net = replace(tiny_net, layers=(*tiny_net.layers[:-1], replace(tiny_net.layers[-1], out_scale=scale)))
    with pytest.raises(ConversionError, match='layer head'):
        P.requantize_out_scale(net)


def test_narrow_thresholds(tiny_net):
    net = P.run_passes(tiny_net, P.INTEGRATED[:-1])
    out = P.narrow_thresholds(net)
    assert [ld.thresholds.dtype for ld in out.layers[:-1]] == [np.int32, np.int16, np.int16]
    for a, b in zip(net.layers[:-1], out.layers[:-1]):
        assert np.array_equal(a.thresholds, b.thresholds)
    wide = replace(net.layers[1], thresholds=net.layers[1].thresholds + 40000)
    out = P.narrow_thresholds(replace(net, layers=(net.layers[0], wide, *net.layers[2:])))
    assert out.layers[1].thresholds.dtype == np.int32


# --- the pass lists -------------------------------------------------------------------------

def test_pass_lists_read_top_to_bottom():
    assert [p.__name__ for p in P.INTEGRATED] == [
        'convert_weights_to_integers', 'bound_accumulators', 'compose_thresholds', 'fold_head_bias',
        'requantize_out_scale', 'narrow_thresholds']
    assert 'round_parameters_separately' in [p.__name__ for p in P.SEPARATED]


def test_passes_do_not_modify_their_input(tiny_net):
    snapshot = [(ld.weights.copy(), ld.affine and [a.copy() for a in ld.affine]) for ld in tiny_net.layers]
    for passes in (P.INTEGRATED, P.SEPARATED):
        P.run_passes(tiny_net, passes)
    for layer, (w, aff) in zip(tiny_net.layers, snapshot):
        assert np.array_equal(layer.weights, w) and layer.weights.dtype == np.float32
        assert layer.thresholds is None and layer.acc_bound is None
        if aff:
            assert all(np.array_equal(x, y) for x, y in zip(layer.affine, aff))


def test_to_integer_model(tiny_net):
    model = P.to_integer_model(P.run_passes(tiny_net, P.INTEGRATED))
    assert model.specs == TINY and model.input_size == 32 and not model.separated
    assert model.anchors_q16.tolist() == [[1 << 16, 3 << 15]]
    assert accumulator_bound(TINY[1], 4) == model.layers[1].acc_bound
    with pytest.raises(ConversionError, match='layer c1'):
        P.to_integer_model(tiny_net)               # nothing converted yet
