"""Random quantization networks for the conversion, engine and file-format tests."""
from __future__ import annotations

import torch

from ifq_tinier_yolo import netdef
from ifq_tinier_yolo.model.tinier_yolo import TinierYolo

NEGATIVE_GAMMA = 0.2      # share of channels with a negative BN scale


@torch.no_grad()
def random_quant_network(layers: tuple[netdef.LayerSpec, ...] = netdef.LAYERS,
                         anchors: netdef.Anchors | None = None, seed: int = 0,
                         calib_size: int = 64, calib_batch: int = 4) -> TinierYolo:
    """A randomly initialised eval-mode hwgq TinierYolo with realistic BN statistics.

    Running statistics come from train-mode passes over random images; then some channels get a
    negative gamma, one a zero gamma and one a zero running variance (edge cases of the conversion).
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = TinierYolo(layers, anchors, 'hwgq')
    for block in model.blocks:
        block.bn.momentum = None                    # cumulative average over the calibration batches
        o = block.spec.out_ch
        sign = torch.where(torch.rand(o, generator=gen) < NEGATIVE_GAMMA, -1.0, 1.0)
        block.bn.weight.copy_(sign * (0.5 + torch.rand(o, generator=gen)))
        block.bn.bias.copy_(torch.rand(o, generator=gen) - 0.3)
    model.train()
    images = torch.randint(0, 256, (2, calib_batch, 3, calib_size, calib_size), generator=gen).float()
    for batch in images:
        model(batch)
    model.eval()
    for block in model.blocks:
        block.bn.weight[0] = 0.0                    # constant channel
        block.bn.running_var[-1] = 0.0              # zero-variance channel
    return model
