"""TinierYolo (model/tinier_yolo.py): shapes, shared float/hwgq parameters, integer codes and head, eval affine."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ifq_tinier_yolo import netdef
from ifq_tinier_yolo.model.quant import hwgq_codes
from ifq_tinier_yolo.model.tinier_yolo import ConvBlock, Head, TinierYolo, count_binary_weights

pytestmark = pytest.mark.usefixtures('torch_one_thread')

OUT_CH = len(netdef.ANCHORS) * netdef.VALUES_PER_ANCHOR
PAPER_BYTES = 246_000   # IFQ-Tinier-YOLO model size in the paper


def images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Float (B, 3, S, S) pixel values 0..255 (integers, as the loader gives), smooth enough to have structure."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=g) * 255
    fine = F.interpolate(coarse, size=(size, size), mode='bilinear', align_corners=False)
    return (fine + torch.randn(batch, 3, size, size, generator=g) * 20).clamp(0, 255).round()


def calibrated(quant: str = 'hwgq', seed: int = 0) -> TinierYolo:
    """A model whose BN running stats are the cumulative stats of two train-mode batches, and
    whose BN affine parameters are random (negative gammas included): a non-trivial eval affine."""
    torch.manual_seed(seed)
    model = TinierYolo(quant=quant)
    with torch.no_grad():
        for block in model.blocks:
            block.bn.momentum = None   # cumulative average
            block.bn.weight.copy_(torch.randn(block.bn.weight.shape) * 0.5 + 1.0)
            block.bn.weight[::5] *= -1
            block.bn.bias.copy_(torch.randn(block.bn.bias.shape) * 0.5 + 0.5)
        model.train()
        for k in range(2):
            model(images(4, 64, seed=100 + k))
    return model.eval()


@pytest.mark.parametrize('quant', ['float', 'hwgq'])
@pytest.mark.parametrize('size', [16, 32, 64, 96])
def test_output_shape(quant: str, size: int):
    model = TinierYolo(quant=quant).eval()
    with torch.no_grad():
        out, = model(images(2, size))
    grid = netdef.grid_size(size)
    assert grid == size // 16
    assert out.shape == (2, OUT_CH, grid, grid) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_layer_table_is_a_slim_tiny_yolo_within_the_size_budget():
    assert netdef.total_stride() == 16 and netdef.grid_size(netdef.INPUT_SIZE) == 26
    model = TinierYolo()
    binary = count_binary_weights(model)
    assert binary == sum(b.conv.weight.numel() for b in model.blocks[1:])
    int8 = model.blocks[0].conv.weight.numel() + model.head.conv.weight.numel()
    assert binary // 8 + int8 < PAPER_BYTES
    assert all(b.conv.bias is None for b in model.blocks)   # no conv bias in the trunk
    assert model.head.conv.bias is not None


def test_bad_modes_and_sizes_are_rejected():
    with pytest.raises(ValueError, match='quant'):
        TinierYolo(quant='int4')
    with pytest.raises(ValueError, match='quant'):
        TinierYolo().set_quant('binary')
    with pytest.raises(ValueError, match='multiple of 16'):
        netdef.check_input_size(100)


def test_objectness_prior_initialises_the_head_bias():
    bias = TinierYolo().head.conv.bias.detach().view(len(netdef.ANCHORS), netdef.VALUES_PER_ANCHOR)
    assert bool((bias[:, netdef.OBJECTNESS_FIELD] == -4.0).all())


def test_float_and_hwgq_share_parameters():
    torch.manual_seed(0)
    model = TinierYolo(quant='float')
    before = dict(model.named_parameters())
    keys = set(model.state_dict())
    x = images(2, 64)
    model.eval()
    with torch.no_grad():
        out_float, = model(x)
        model.set_quant('hwgq')
        out_hwgq, = model(x)
    assert model.quant == 'hwgq'
    assert all(m.quant == 'hwgq' for m in [*model.blocks, *model.heads])
    after = dict(model.named_parameters())
    assert before.keys() == after.keys() and all(before[k] is after[k] for k in before)
    assert set(model.state_dict()) == keys
    assert not torch.allclose(out_float, out_hwgq)   # the mode really switched

    # a float model's state_dict initialises a hwgq model: the same network
    fresh = TinierYolo(quant='hwgq').eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x)[0], out_hwgq)
    model.set_quant('float')
    with torch.no_grad():
        assert torch.equal(model(x)[0], out_float)


def capture_block_io(model: TinierYolo, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) of every ConvBlock for one forward."""
    seen = []
    hooks = [b.register_forward_hook(lambda m, inp, out: seen.append((inp[0], out))) for b in model.blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_hwgq_eval_blocks_output_integer_codes():
    model = calibrated()
    io = capture_block_io(model, images(2, 64, seed=7))
    assert len(io) == len(model.blocks)
    used = set()
    for (inp, out), block in zip(io, model.blocks):
        assert torch.equal(out, out.round()), block.spec.name
        values = set(out.unique().tolist())
        assert values <= {0.0, 1.0, 2.0, 3.0}, (block.spec.name, values)
        assert len(values) >= 2, block.spec.name   # not a dead layer: the test is not vacuous
        used |= values
    assert used == {0.0, 1.0, 2.0, 3.0}
    # the first block reads the raw pixels; its accumulators are exact integers well inside float32
    with torch.no_grad():
        acc = model.blocks[0].accumulate(io[0][0])
    assert torch.equal(acc, acc.round()) and float(acc.abs().max()) < 2 ** 24


def test_acts_mode_quantizes_the_activations_and_keeps_float_weights():
    model = calibrated('acts')
    x = images(2, 64, seed=3)
    io = capture_block_io(model, x)
    for (inp, out), block in zip(io, model.blocks):
        assert set(out.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}, block.spec.name
        with torch.no_grad():
            acc = F.conv2d(inp * block.in_scale, block.conv.weight, stride=block.spec.stride,
                           padding=block.spec.kernel // 2)
            want = hwgq_codes(block.bn(F.max_pool2d(acc, block.spec.pool) if block.spec.pool else acc))
        # the eval affine rounds differently from BatchNorm: a value on a cut may fall either side
        assert float((out == want).float().mean()) > 0.999, block.spec.name
    with torch.no_grad():
        out, = model(x)
        head = model.head.conv
        assert torch.allclose(out, F.conv2d(io[-1][1] * netdef.HWGQ_STEP, head.weight, head.bias), atol=1e-5)
        model.set_quant('hwgq')
        assert not torch.allclose(out, model(x)[0])   # the hwgq network binarises the same weights


def test_head_integers_and_output_scale():
    model = calibrated()
    x = images(2, 64, seed=3)
    ints, = model.head_integers(x)
    assert ints.shape == (2, OUT_CH, 4, 4)
    assert torch.equal(ints, ints.round())
    assert ints.unique().numel() > 10
    _, bias, out_scale = model.head.int_params()
    assert torch.equal(bias, bias.round()) and out_scale.shape == (1,)
    with torch.no_grad():
        out, = model(x)
    assert torch.equal(out, ints * out_scale)   # exact: the decoder reads the integers with one scale
    # and the quantized head is close to the float head on the same codes
    with torch.no_grad():
        codes, = model.features(x)
        float_head = F.conv2d(codes * netdef.HWGQ_STEP, model.head.conv.weight, model.head.conv.bias)
    assert float((out - float_head).abs().max()) < 0.05 * float(float_head.abs().max()) + 1e-3


def test_head_integers_needs_hwgq_eval():
    model = TinierYolo(quant='hwgq')
    with pytest.raises(ValueError, match='eval'):
        model.train().head_integers(images(1, 32))
    with pytest.raises(ValueError, match='hwgq'):
        TinierYolo(quant='float').eval().head_integers(images(1, 32))


def test_eval_affine_equals_batchnorm_with_running_stats():
    model = calibrated()
    io = capture_block_io(model, images(2, 64, seed=11))
    for (inp, _), block in zip(io, model.blocks):
        with torch.no_grad():
            acc = block.accumulate(inp)                                        # (B, O, H, W) integers
            _, w_scale = block.int_weights()
            bn = block.bn
            ref = F.batch_norm(acc * (w_scale * block.in_scale).view(1, -1, 1, 1), bn.running_mean,
                               bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
            bn.eval()
            assert torch.equal(bn(acc * (w_scale * block.in_scale).view(1, -1, 1, 1)), ref)
            acc_scale, bn_scale, bn_shift = (t.view(1, -1, 1, 1) for t in block.post_affine())
            z = acc * acc_scale * bn_scale + bn_shift
        assert bool((bn_scale < 0).any()), block.spec.name   # negative gammas are covered
        torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
        # the codes agree except where z sits on a cut point within float rounding
        agree = (hwgq_codes(z) == hwgq_codes(ref)).float().mean()
        assert float(agree) > 0.999, block.spec.name


def test_train_mode_with_running_stats_matches_eval_mode():
    """model.train() with the BNs frozen in eval mode computes what eval mode computes (same codes, almost everywhere)."""
    model = calibrated()
    x = images(2, 64, seed=5)
    with torch.no_grad():
        out_eval, = model(x)
        model.train()
        for block in model.blocks:
            block.bn.eval()
        out_train, = model(x)
    close = ((out_eval - out_train).abs() <= 1e-4 * out_eval.abs().max()).float().mean()
    assert float(close) > 0.95


@pytest.mark.parametrize('quant', ['float', 'acts', 'hwgq'])
def test_gradients_reach_every_parameter(quant: str):
    torch.manual_seed(1)
    model = TinierYolo(quant=quant).train()
    out, = model(images(2, 64))
    (out ** 2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, name


def test_block_and_head_modules_follow_the_table():
    specs = netdef.LAYERS
    model = TinierYolo()
    assert [b.spec for b in model.blocks] == list(specs[:-1]) and model.head.spec == specs[-1]
    assert list(model.heads) == [model.head]
    assert isinstance(model.blocks[0], ConvBlock) and isinstance(model.head, Head)
    for block, c_in in zip(model.blocks, netdef.in_channels()):
        assert block.conv.weight.shape == (block.spec.out_ch, c_in, block.spec.kernel, block.spec.kernel)
    assert model.blocks[0].in_scale == 1 / 255 and model.blocks[1].in_scale == netdef.HWGQ_STEP
