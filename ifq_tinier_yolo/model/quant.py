"""Quantizers of the quantization network: binary weights, int8 weights, 2-bit HWGQ codes.

Every quantizer returns *integer-valued* float tensors plus the scale that turns them into
values, so that the convolutions compute exact integer accumulators (|acc| < 2**24) and the
integer engine can reproduce the network bit for bit.
"""
from __future__ import annotations

import torch

from ..netdef import FIXED_WEIGHT_MAX, HWGQ_CLIP, HWGQ_CUTS, HWGQ_STEP

# Float32 copies of the cut points: the comparisons below and the threshold composition in
# `integrate` must use the very same float32 numbers.
HWGQ_CUTS_F32 = torch.tensor(HWGQ_CUTS, dtype=torch.float32)


def ste(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Forward `hard`, backward the gradient of `soft` (straight-through estimator)."""
    return soft + (hard - soft).detach()


def binarize_weights(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(O, I, k, k) float -> (signs in {-1,+1}, alpha (O,) = mean|W_o|); sign(0) = +1.

    Gradient: straight-through, zeroed where |W| > 1 (BinaryConnect/XNOR-Net); alpha is
    differentiable.
    """
    signs = torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
    soft = w.clamp(-1.0, 1.0)
    alpha = w.abs().mean(dim=(1, 2, 3))
    return ste(signs, soft), alpha


def int8_weights(w: torch.Tensor, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """float weights -> (integers in [-127, 127], scale) with w ~ int * scale.

    Symmetric, round half to even (torch.round), scale = max|W| / 127 per output channel or
    per tensor; the scale carries no gradient, the rounding is straight-through.
    """
    if per_channel:
        amax = w.detach().abs().amax(dim=tuple(range(1, w.dim())))
    else:
        amax = w.detach().abs().amax().reshape(1)
    scale = amax / FIXED_WEIGHT_MAX
    # all-zero (or so tiny that max|W| / 127 underflows to 0) weights: any scale gives zeros, not w / 0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    view = (-1,) + (1,) * (w.dim() - 1) if per_channel else (1,) * w.dim()
    soft = w / scale.view(view)
    return ste(torch.round(soft).clamp(-FIXED_WEIGHT_MAX, FIXED_WEIGHT_MAX), soft), scale


def hwgq_codes(x: torch.Tensor) -> torch.Tensor:
    """2-bit HWGQ: code = #{k : x > cut_k} in {0..3} (value = code * HWGQ_STEP).

    Backward: ReLU gradient scaled by 1/HWGQ_STEP (d code / dx), zero above the clip.
    """
    hard = sum((x > cut).to(x.dtype) for cut in HWGQ_CUTS_F32.tolist())
    soft = x.clamp(0.0, HWGQ_CLIP) / HWGQ_STEP
    return ste(hard, soft)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even, straight-through gradient."""
    return ste(torch.round(x), x)
