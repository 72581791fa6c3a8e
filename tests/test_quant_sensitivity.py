"""scripts/quant_sensitivity.py: its changes do to a float network what hwgq mode would do to that layer."""
from __future__ import annotations

import pytest
import torch

from ifq_tinier_yolo import netdef
from ifq_tinier_yolo.model.tinier_yolo import TinierYolo

from script_modules import load_script

pytestmark = pytest.mark.usefixtures('torch_one_thread')


@pytest.fixture(scope='module')
def qs():
    return load_script('quant_sensitivity')


def test_binarise_changes_only_the_named_layer_to_alpha_sign(qs):
    torch.manual_seed(0)
    net = TinierYolo(netdef.LAYERS_V2, quant='float')
    before = {b.spec.name: b.conv.weight.detach().clone() for b in net.blocks}
    qs.binarise(net, {'conv3'})
    for b in net.blocks:
        w = b.conv.weight.detach()
        if b.spec.name != 'conv3':
            assert torch.equal(w, before[b.spec.name])
            continue
        alpha = before['conv3'].abs().mean(dim=(1, 2, 3))
        assert torch.allclose(w.abs(), alpha.view(-1, 1, 1, 1).expand_as(w))
        assert torch.equal(torch.sign(w), torch.where(before['conv3'] >= 0, 1.0, -1.0))


def test_two_bit_outputs_are_hwgq_values_and_recalibration_resets_the_statistics(qs):
    torch.manual_seed(0)
    net = qs.two_bit(TinierYolo(netdef.LAYERS_V2, quant='float'), {'conv2'})
    seen = {}
    net.blocks[1].register_forward_hook(lambda m, a, out: seen.setdefault('conv2', out))
    x = torch.rand(2, 3, 64, 64) * 255
    qs.recalibrate(net, [x])
    assert not net.training and net.blocks[0].bn.num_batches_tracked.item() == 1
    codes = seen['conv2'] / netdef.HWGQ_STEP
    assert torch.allclose(codes, codes.round()) and set(codes.round().unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert len(codes.round().unique()) > 1
