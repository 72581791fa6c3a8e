"""`convert`: a trained hwgq checkpoint -> an integer model (.ifq), by the passes of `passes`.

    model = convert('weights/ifq_tinier_yolo.pt')            # integrated: exact by construction
    model = convert('weights/ifq_tinier_yolo.pt', separated=True)   # each parameter rounded alone

`describe_network` is the one place that reads the torch model: it takes exactly the tensors
the eval-mode network computes with (integer weights, the float32 affine of `post_affine`,
the head's integer parameters), so that the passes reproduce it bit for bit.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .. import __version__, netdef
from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..engine.model import IntegerModel
from ..errors import ConversionError
from ..model.quant import HWGQ_CUTS_F32
from ..model.tinier_yolo import TinierYolo
from .modelfile import save
from .passes import INTEGRATED, SEPARATED, BatchNorm, LayerDesc, NetDesc, run_passes, to_integer_model

def _np(t: torch.Tensor) -> np.ndarray:
    """A float32 numpy copy of a tensor."""
    return t.detach().cpu().numpy().astype(np.float32, copy=True)


@torch.no_grad()
def describe_network(model: TinierYolo, input_size: int) -> NetDesc:
    """The eval-mode hwgq network as a pass description (float32 numpy arrays)."""
    if model.quant != 'hwgq':
        raise ConversionError(f'convert needs a hwgq (quantization) network, not quant={model.quant!r}')
    chans = netdef.in_channels(model.layers)
    blocks, heads, layers = iter(model.blocks), iter(model.heads), []
    for spec, in_ch in zip(model.layers, chans):
        if spec.info.is_head:
            head = next(heads)
            w, bias, out_scale = head.int_params()
            layers.append(LayerDesc(spec, in_ch, _np(w), _np(out_scale), float(spec.info.in_scale),
                                    head_bias=_np(bias), out_scale=float(out_scale.reshape(-1)[0])))
        elif spec.info.has_weights:
            block = next(blocks)
            w, w_scale = block.int_weights()
            bn = block.bn
            layers.append(LayerDesc(
                spec, in_ch, _np(w), _np(w_scale), float(block.in_scale),
                bn=BatchNorm(_np(bn.weight), _np(bn.bias), _np(bn.running_mean), _np(bn.running_var), float(bn.eps)),
                affine=tuple(_np(t) for t in block.post_affine())))
        else:   # a parameter-free layer (upsample) converts as it is
            layers.append(LayerDesc(spec, in_ch, None, None, float(spec.info.in_scale)))
    netdef.check_input_size(input_size, model.layers, 'input size')
    return NetDesc(tuple(layers), int(input_size), _np(HWGQ_CUTS_F32))


def convert_model(model: TinierYolo, input_size: int, separated: bool = False) -> IntegerModel:
    """An eval-mode hwgq TinierYolo -> IntegerModel (integrated, or separated for comparison)."""
    net = describe_network(model, input_size)
    return to_integer_model(run_passes(net, SEPARATED if separated else INTEGRATED))


def convert(ckpt_path: str | Path, separated: bool = False, img_size: int | None = None) -> IntegerModel:
    """A hwgq checkpoint file -> IntegerModel; input size: img_size, else the checkpoint's."""
    ckpt = load_checkpoint(Path(ckpt_path))
    if ckpt.get('quant') != 'hwgq':
        raise ConversionError(f'{ckpt_path}: trained with quant={ckpt.get("quant")!r}; convert needs a '
                              f'hwgq network (fine-tune it with train --quant hwgq --init {ckpt_path})')
    model = model_from_checkpoint(ckpt, quant='hwgq', path=ckpt_path)
    size = img_size or int(ckpt.get('img_size', netdef.INPUT_SIZE))
    meta = dict(producer=f'ifq-tinier-yolo {__version__}', checkpoint=Path(ckpt_path).name,
                conversion='separated' if separated else 'integrated', trained_img_size=ckpt.get('img_size'),
                epoch=ckpt.get('epoch'), config=ckpt.get('config', {}))
    return replace(convert_model(model, size, separated),
                   metadata=json.dumps(meta, sort_keys=True, separators=(',', ':'), default=str))


def cli_convert(args: argparse.Namespace) -> int:
    """`convert CKPT --out MODEL.ifq [--separated] [--img-size S]`: write the integer model."""
    model = convert(args.checkpoint, args.separated, getattr(args, 'img_size', None))
    size = save(model, args.out)
    kind = 'separated' if model.separated else 'integrated'
    print(f'wrote {args.out} ({kind} conversion, input side {model.input_size} px)', file=sys.stderr)
    print(f'model bytes {size}')
    if args.emit_c is not None:   # the same bytes as a C array, for devices without a file system
        from ..native.emit import emit_c_header
        emit_c_header(args.out.read_bytes(), args.emit_c)
        print(f'wrote {args.emit_c}', file=sys.stderr)
    return 0
