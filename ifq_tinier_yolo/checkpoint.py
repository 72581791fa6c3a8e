"""Training checkpoints: state_dicts + config, written atomically, loaded without pickle.

A checkpoint is a plain dict (loadable with `torch.load(weights_only=True)`):
  format 'ifq-tinier-yolo-checkpoint', version, quant ('float' | 'hwgq'), layers (netdef
  table as a list of dicts), anchors, img_size, config (training config dict), model
  (state_dict), and for resuming: optimizer, epoch (completed epochs), best, step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import netdef
from .errors import ModelFileError
from .fileio import atomic_open
from .model.tinier_yolo import TinierYolo

FORMAT = 'ifq-tinier-yolo-checkpoint'
VERSION = 1




def save_checkpoint(path: Path, model: TinierYolo, img_size: int, config: dict[str, Any],
                    **extra: Any) -> None:
    """Atomically save model weights + description (+ resume state in `extra`)."""
    ckpt = dict(format=FORMAT, version=VERSION, quant=model.quant,
                layers=netdef.layers_to_list(model.layers), anchors=[list(a) for a in model.anchors],
                img_size=int(img_size), config=dict(config),
                model={k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra)
    with atomic_open(path, 'wb') as f:
        torch.save(ckpt, f)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load and check a checkpoint dict (weights_only, no pickle); ModelFileError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f'{path}: no such checkpoint')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # torch raises many types for damaged or foreign files
        raise ModelFileError(f'{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]})') from None
    if not isinstance(ckpt, dict) or ckpt.get('format') != FORMAT:
        raise ModelFileError(f'{path}: not an ifq-tinier-yolo checkpoint')
    if ckpt.get('version') != VERSION:
        raise ModelFileError(f'{path}: checkpoint version {ckpt.get("version")!r}, this program reads {VERSION}')
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], quant: str | None = None, path: Path | str = 'checkpoint') -> TinierYolo:
    """Build the network the checkpoint describes and load its weights (eval mode)."""
    try:
        layers = netdef.layers_from_list(ckpt['layers'])
        anchors = tuple(tuple(float(v) for v in a) for a in ckpt['anchors'])
        model = TinierYolo(layers, anchors, quant or ckpt['quant'])
        model.load_state_dict(ckpt['model'])
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise ModelFileError(f'{path}: checkpoint does not describe a valid network ({str(e).splitlines()[0][:160]})') from None
    return model.eval()
