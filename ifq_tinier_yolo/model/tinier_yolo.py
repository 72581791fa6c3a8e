"""Tinier-YOLO as a quantization network, built from the netdef layer table.

Block order as HWGQ-Net: conv (no bias) -> [2x2 max-pool] -> BatchNorm -> activation.
Two modes share the same parameters, so a float checkpoint initialises a quantized run:
- 'float': float weights, ReLU (warm-up);
- 'acts': 2-bit HWGQ codes between blocks but float weights: step one of a two-step binarisation
  (ReActNet's: activations first, then weights), trained between 'float' and 'hwgq';
- 'hwgq': first layer int8 per-channel weights on the raw pixels, hidden layers binary weights
  (alpha * sign), 2-bit HWGQ codes between blocks, head int8 per-tensor weights and an integer
  bias. Convolutions run on integer-valued tensors so every accumulator is an exact integer;
  the scales are applied afterwards, in float32, by `post_affine` (the integer conversion
  reproduces exactly these float32 operations).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import netdef
from ..netdef import BINARY_WEIGHT_BITS, HWGQ_STEP, LayerSpec
from .quant import binarize_weights, hwgq_codes, int8_weights, round_ste

QUANT_MODES = ('float', 'acts', 'hwgq')
OBJECTNESS_PRIOR = -4.0   # initial objectness logit: sigmoid = 0.018, keeps early training stable


class ConvBlock(nn.Module):
    """First or hidden layer: conv -> [max-pool] -> BN -> ReLU (float) or HWGQ codes (hwgq)."""

    def __init__(self, spec: LayerSpec, in_ch: int, quant: str):
        super().__init__()
        self.spec, self.quant = spec, quant
        self.conv = nn.Conv2d(in_ch, spec.out_ch, spec.kernel, spec.stride, spec.kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(spec.out_ch)
        # what the activation reads, in every mode (BatchNorm's output; in eval mode the affine that
        # integrate mirrors): a place to hook for feature hints, whichever path computed it
        self.pre_act = nn.Identity()
        # value of one input unit: a pixel is 1/255, an HWGQ code is HWGQ_STEP
        self.in_scale = spec.info.in_scale

    def int_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(integer-valued weights (O, I, k, k), per-channel weight scale (O,)); 'acts': the float weights, scale 1."""
        if self.quant == 'acts':
            return self.conv.weight, torch.ones_like(self.conv.weight[:, 0, 0, 0])
        if self.spec.weight_bits == BINARY_WEIGHT_BITS:
            return binarize_weights(self.conv.weight)
        return int8_weights(self.conv.weight, per_channel=True)

    def post_affine(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eval-mode float32 (acc_scale, bn_scale, bn_shift), each (O,): z = acc*acc_scale*bn_scale + bn_shift."""
        _, w_scale = self.int_weights()
        acc_scale = (w_scale * self.in_scale).float()
        bn_scale = (self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)).float()
        bn_shift = (self.bn.bias - self.bn.running_mean * bn_scale).float()
        return acc_scale, bn_scale, bn_shift

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.spec.pool) if self.spec.pool else x

    def accumulate(self, x: torch.Tensor) -> torch.Tensor:
        """hwgq mode: integer input (pixels or codes) -> pooled integer accumulators, float32."""
        w, _ = self.int_weights()
        acc = F.conv2d(x, w, stride=self.spec.stride, padding=self.spec.kernel // 2)
        return self._pool(acc.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quant == 'float':
            if self.spec.info.reads_image:
                x = x * self.in_scale
            return F.relu(self.pre_act(self.bn(self._pool(self.conv(x)))))
        acc = self.accumulate(x)
        if self.training:
            _, w_scale = self.int_weights()
            z = self.bn(acc * (w_scale * self.in_scale).view(1, -1, 1, 1))
        else:
            # three separately rounded float32 ops, mirrored exactly by integrate/passes.py
            acc_scale, bn_scale, bn_shift = (t.view(1, -1, 1, 1) for t in self.post_affine())
            z = acc * acc_scale * bn_scale + bn_shift
        return hwgq_codes(self.pre_act(z))


class Head(nn.Module):
    """1x1 conv with bias. hwgq mode: int8 per-tensor weights on codes + integer bias, one output scale."""

    def __init__(self, spec: LayerSpec, in_ch: int, quant: str):
        super().__init__()
        self.spec, self.quant = spec, quant
        self.conv = nn.Conv2d(in_ch, spec.out_ch, 1, bias=True)
        with torch.no_grad():
            for a in range(spec.out_ch // netdef.VALUES_PER_ANCHOR):
                self.conv.bias[netdef.head_channel(a, netdef.OBJECTNESS_FIELD)] = OBJECTNESS_PRIOR

    def int_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(integer weights (O, I, 1, 1), integer bias (O,), output scale (1,)): out = (acc + bias) * scale."""
        w, w_scale = int8_weights(self.conv.weight, per_channel=False)
        out_scale = (w_scale * HWGQ_STEP).float()
        return w, round_ste(self.conv.bias / out_scale), out_scale

    def integers(self, codes: torch.Tensor) -> torch.Tensor:
        """hwgq mode: codes -> integer-valued head accumulators acc + bias, float32 (B, O, H, W)."""
        w, bias, _ = self.int_params()
        return F.conv2d(codes, w).float() + bias.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quant == 'float':
            return self.conv(x)
        if self.quant == 'acts':
            return F.conv2d(x * HWGQ_STEP, self.conv.weight, self.conv.bias)
        _, _, out_scale = self.int_params()
        return self.integers(x) * out_scale


class TinierYolo(nn.Module):
    """The detector, built from a layer table (a chain, or a graph with several heads).

    Input: float (B, 3, S, S) BGR pixel values 0..255. Output: one tensor (B, A*5, S/s, S/s)
    per head of the table, in table order (s: that head's stride).
    """

    def __init__(self, layers: tuple[LayerSpec, ...] = netdef.LAYERS,
                 anchors: netdef.Anchors | None = None, quant: str = 'hwgq'):
        super().__init__()
        if quant not in QUANT_MODES:
            raise ValueError(f'quant must be one of {QUANT_MODES}, not {quant!r}')
        if anchors is not None:   # a single-head table given with separate anchors
            netdef.check_layers(layers, anchors)
            layers = netdef.with_head_anchors(layers, anchors)
        netdef.check_layers(layers)
        self.layers, self.quant = layers, quant
        self.sources = netdef.sources(layers)
        chans = netdef.in_channels(layers)
        # blocks: the first and hidden layers in table order; heads: the heads in table order
        self.blocks = nn.ModuleList(ConvBlock(s, c, quant) for s, c in zip(layers, chans)
                                    if s.info.has_thresholds)
        self.heads = nn.ModuleList(Head(s, c, quant) for s, c in zip(layers, chans) if s.info.is_head)

    @property
    def head_anchors(self) -> list[netdef.Anchors]:
        """Anchors of each head in its grid cells."""
        return netdef.anchors_of(self.layers)

    @property
    def anchors(self) -> netdef.Anchors:
        """Anchors of the only head (single-head tables)."""
        return self._single(self.head_anchors)

    @property
    def head(self) -> Head:
        """The only head (single-head tables)."""
        return self._single(list(self.heads))

    def _single(self, per_head: list):
        if len(per_head) != 1:
            raise ValueError(f'this network has {len(per_head)} heads')
        return per_head[0]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Image -> the input of each head (codes in hwgq mode), in table order."""
        blocks, outs, head_inputs = iter(self.blocks), [], []
        for spec, src in zip(self.layers, self.sources):
            if src:
                x = outs[src[0]] if len(src) == 1 else torch.cat([outs[j] for j in src], 1)
            if spec.info.is_head:
                head_inputs.append(x)
                outs.append(None)
                continue
            x = F.interpolate(x, scale_factor=netdef.UPSAMPLE, mode='nearest') if spec.info.upsamples \
                else next(blocks)(x)
            outs.append(x)
        return head_inputs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [head(f) for head, f in zip(self.heads, self.features(x))]

    @torch.no_grad()
    def head_integers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """hwgq eval mode: the integer accumulators (B, A*5, H, W) of each head that the engine must reproduce."""
        if self.quant != 'hwgq' or self.training:
            raise ValueError('head_integers needs a hwgq model in eval mode')
        return [head.integers(f) for head, f in zip(self.heads, self.features(x))]

    def set_quant(self, quant: str) -> None:
        """Switch every block between the QUANT_MODES (same parameters)."""
        if quant not in QUANT_MODES:
            raise ValueError(f'quant must be one of {QUANT_MODES}, not {quant!r}')
        self.quant = quant
        for m in [*self.blocks, *self.heads]:
            m.quant = quant


def count_binary_weights(model: TinierYolo) -> int:
    """Number of 1-bit weights (hidden layers)."""
    return sum(b.conv.weight.numel() for b in model.blocks if b.spec.weight_bits == BINARY_WEIGHT_BITS)
