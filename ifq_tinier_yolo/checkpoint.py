"""Training checkpoints: state_dicts + config, written atomically, loaded without pickle.

A checkpoint is a plain dict (loadable with `torch.load(weights_only=True)`):
  format 'ifq-tinier-yolo-checkpoint', version, quant ('float' | 'acts' | 'hwgq'), layers (netdef
  table as a list of dicts, heads with their anchors), img_size (the input side to run it at: the validation
  size, not the training crop), config (training config dict), model
  (state_dict), and for resuming: optimizer, epoch (completed epochs), best, step.
Version 1 (single head) kept the anchors beside the table and named the head `head.`; it is
read by moving both to where version 2 has them.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from . import netdef
from .errors import ModelFileError
from .fileio import atomic_open
from .model.tinier_yolo import TinierYolo

FORMAT = 'ifq-tinier-yolo-checkpoint'
VERSION = 2
READABLE_VERSIONS = (1, 2)
PICKLE_PROTO = pickle.PROTO                 # first byte of a legacy (non-zip) torch.save file
ZIP_MAGIC = b'PK\x03\x04'                   # first bytes of a zip (torch.save) file
MESSAGE_CHARS = 120                         # longest quoted piece of a library's error message
_ANSI_ESCAPE = re.compile(r'\x1b\[[0-9;]*m')  # torch decorates some messages with terminal bold
_REFUSED_GLOBAL = re.compile(r'GLOBAL ([\w.]+)')  # what the weights_only unpickler refused


def _first_line(e: BaseException) -> str:
    """First line of an exception message, terminal escapes removed, at most MESSAGE_CHARS ('' if empty)."""
    return (_ANSI_ESCAPE.sub('', str(e)).strip().splitlines() or [''])[0][:MESSAGE_CHARS]


def _unpickling_reason(e: BaseException) -> str:
    """The informative line of a weights-only UnpicklingError (torch wraps it in advice about weights_only)."""
    boilerplate = ('Weights only load failed', 'Please file an issue', 'Check the documentation')
    lines = [line.strip() for line in _ANSI_ESCAPE.sub('', str(e)).splitlines()]
    reasons = [line for line in lines if line and not line.startswith(boilerplate)]
    return (reasons[0] if reasons else _first_line(e))[:MESSAGE_CHARS]


def _check_archive(path: Path) -> None:
    """Raise ModelFileError when a zip-format checkpoint fails its CRC checks.

    torch.load does not verify the archive checksums, so a flipped bit in the tensor data
    would otherwise load silently as different weights.
    """
    if not zipfile.is_zipfile(path):
        return   # not ours; torch.load below names the problem
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as e:  # zipfile raises many types for a damaged directory
        raise ModelFileError(f'{path}: damaged checkpoint archive ({type(e).__name__}: {_first_line(e)})') from None
    if bad is not None:
        raise ModelFileError(f'{path}: damaged checkpoint (checksum mismatch in {bad})')


def plain_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's state_dict as contiguous CPU tensors (whatever device or memory layout it trained in)."""
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_checkpoint(path: Path, model: TinierYolo, img_size: int, config: dict[str, Any],
                    **extra: Any) -> None:
    """Atomically save model weights + description (+ resume state in `extra`)."""
    ckpt = dict(format=FORMAT, version=VERSION, quant=model.quant,
                layers=netdef.layers_to_list(model.layers),
                img_size=int(img_size), config=dict(config),
                model=plain_state(model), **extra)
    with atomic_open(path, 'wb') as f:
        torch.save(ckpt, f)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load and check a checkpoint dict (weights_only, no pickle); ModelFileError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f'{path}: no such checkpoint')
    _check_archive(path)
    try:
        with open(path, 'rb') as f:
            start = f.read(len(ZIP_MAGIC))
    except OSError as e:
        raise ModelFileError(f'{path}: cannot read ({e.strerror or e})') from None
    if not zipfile.is_zipfile(path):
        if start == ZIP_MAGIC:
            raise ModelFileError(f'{path}: damaged checkpoint archive (truncated: its zip directory is missing)')
        if start[:1] != PICKLE_PROTO:
            what = 'an empty file' if not start else 'neither a zip archive nor a pickle'
            raise ModelFileError(f'{path}: not a PyTorch checkpoint ({what})')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        refused = _REFUSED_GLOBAL.search(str(e))
        what = f'it holds a {refused.group(1)} object' if refused else _unpickling_reason(e)
        raise ModelFileError(f'{path}: not a plain checkpoint: {what} (only tensors and plain data are loaded)') from None
    except Exception as e:  # torch raises many types for damaged or foreign files
        raise ModelFileError(f'{path}: not a readable checkpoint ({type(e).__name__}: {_first_line(e)})') from None
    if not isinstance(ckpt, dict) or ckpt.get('format') != FORMAT:
        raise ModelFileError(f'{path}: not an ifq-tinier-yolo checkpoint')
    if ckpt.get('version') not in READABLE_VERSIONS:
        raise ModelFileError(f'{path}: checkpoint version {ckpt.get("version")!r}, this program reads '
                             f'{", ".join(map(str, READABLE_VERSIONS))}')
    return ckpt


def _v1_state(state: dict[str, Any]) -> dict[str, Any]:
    """A version-1 state_dict with its single head renamed as version 2 names it."""
    return {('heads.0.' + k[5:] if k.startswith('head.') else k): v for k, v in state.items()}


def model_state(ckpt: dict[str, Any], key: str = 'model') -> dict[str, Any]:
    """The state_dict under `key` ('model' or 'train_model'), in the current naming."""
    return _v1_state(ckpt[key]) if ckpt.get('version') == 1 else ckpt[key]


def model_from_checkpoint(ckpt: dict[str, Any], quant: str | None = None, path: Path | str = 'checkpoint') -> TinierYolo:
    """Build the network the checkpoint describes and load its weights (eval mode)."""
    try:
        layers = netdef.layers_from_list(ckpt['layers'])
        if ckpt.get('version') == 1:
            layers = netdef.with_head_anchors(layers, tuple(tuple(float(v) for v in a) for a in ckpt['anchors']))
        model = TinierYolo(layers, quant=quant or ckpt['quant'])
        model.load_state_dict(model_state(ckpt))
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise ModelFileError(f'{path}: checkpoint does not describe a valid network '
                             f'({type(e).__name__}: {_first_line(e)})') from None
    return model.eval()
