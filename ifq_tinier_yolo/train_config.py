"""The training config: one frozen dataclass, its `key=value` overrides and the `train` flags made
from it (torch-free, so the CLI can build its parser without importing torch)."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .defaults import CROP_WINDOW
from .errors import ConfigError

OPTIMIZERS = ('adamw', 'sgd')


def _field(default: Any, help: str, **flag: Any) -> Any:
    """A config field with its `train --flag` help (and extra add_argument options such as choices)."""
    return dataclasses.field(default=default, metadata=dict(help=help, flag=flag))


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; saved in every checkpoint, checked on --resume."""
    img_size: int = _field(416, 'training crop side in pixels (a multiple of the total stride)')
    val_size: int = _field(416, 'validation input side in pixels')
    epochs: int = _field(30, 'total epochs of the run (the LR schedule length)')
    batch: int = _field(16, 'images per step, summed over processes')
    lr: float = _field(2e-3, 'peak learning rate')
    weight_decay: float = _field(5e-4, 'decoupled (adamw) or L2 (sgd) weight decay, not on BN and biases')
    optimizer: str = _field('adamw', 'adamw, or sgd (momentum 0.9, nesterov)', choices=OPTIMIZERS)
    warmup: float = _field(1.0, 'linear LR warm-up in epochs')
    min_lr_ratio: float = _field(0.05, 'the cosine schedule decays to lr * this')
    quant: str = _field('hwgq', "'float' (warm-up), 'acts' (2-bit activations, float weights: a step "
                                 "between them) or 'hwgq' (binary weights, 2-bit activations)")
    net: str = _field('', "layer table (netdef.NETWORKS); '': --init's own table, else v1")
    max_images: int = _field(0, 'use only the first N training images (0: all)')
    max_val_images: int = _field(0, 'validate on the first N val images (0: all)')
    min_face: float = _field(0.0, 'drop training faces smaller than this, original pixels')
    workers: int = _field(2, 'data loader processes per training process')
    seed: int = _field(0, 'seeds data order, augmentation and initialisation')
    bf16: bool = _field(False, 'bfloat16 autocast (CPU with AMX/AVX512-BF16, or GPU)')
    channels_last: bool = _field(False, 'NHWC memory layout for the convolutions (faster on CPU, float '
                                        'rounding differs from NCHW)')
    grad_clip: float = _field(10.0, 'max gradient norm')
    rotate: float = _field(0.0, 'rotate 3 in 10 training views by up to +- this many degrees (0: none)')
    crop_min: float = _field(CROP_WINDOW[0], 'smallest training crop window side, as a fraction of the image long side '
                                   '(window sides are log-uniform; the window is resized to img_size)')
    crop_max: float = _field(CROP_WINDOW[1], 'largest crop window side / image long side (> 1 zooms out); scale both '
                                   'with img_size to keep the face sizes of img_size 320')
    mosaic: float = _field(0.0, 'make this fraction of training views a 2x2 mosaic of four half-size views '
                                '(more, smaller faces per step; 0: none)')
    ema: float = _field(0.0, 'weight EMA decay per step (0: off); validation and best.pt use the average')
    coord_scale: float = _field(1.0, 'region loss weight of the box terms (model.loss.LossConfig)')
    obj_scale: float = _field(5.0, 'region loss weight of objectness where a face is')
    noobj_scale: float = _field(1.0, 'region loss weight of objectness where no face is')
    ignore_iou: float = _field(0.6, 'no no-object loss for predictions overlapping a face above this IoU')
    box_loss: str = _field('mse', "box term: 'mse' (darknet's squared errors) or 'giou' (1 - GIoU)",
                           choices=('mse', 'giou'))
    rescore: bool = _field(False, "train objectness toward the predicted box's IoU instead of 1 (darknet's rescore)")
    anchor_iou: float = _field(1.0, 'a face also trains every anchor whose shape IoU with it exceeds this, '
                                    'besides its best one (1: the best only)')
    obj_loss: str = _field('mse', "objectness term: 'mse' (darknet's squared error) or 'qfocal' (quality focal "
                                  'loss: cross-entropy weighted by the squared error, which keeps pulling on '
                                  'confident false positives)', choices=('mse', 'qfocal'))
    tiny_faces: float = _field(0.0, 'faces whose longer side in the training view is under this many pixels '
                                    'train nothing and make their cells don\'t-care (0: every face trains)')
    teacher: str = _field('', 'checkpoint of a float network of the same table whose heads this one learns to '
                              'match (knowledge distillation); empty: none')
    distill: float = _field(1.0, 'weight of the distillation loss (model.loss.distill_loss) when --teacher is given')
    hint: float = _field(0.0, "weight of feature distillation from --teacher (model.loss.hint_loss): each block's "
                              'BatchNorm output learns the teacher block of the same name and width (0: none)')


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The `train` subcommand's flags: the run's own, then one per TrainConfig field (--img-size
    for img_size), whose default and help come from the field."""
    # SUPPRESS: no '(default: None)' in --help for the required ones
    parser.add_argument('--wider-root', type=Path, required=True, default=argparse.SUPPRESS,
                        help='WIDER FACE root folder')
    parser.add_argument('--out', type=Path, required=True, default=argparse.SUPPRESS,
                        help='run folder: last.pt, best.pt, metrics.jsonl')
    parser.add_argument('--resume', action='store_true', help='continue from OUT/last.pt')
    parser.add_argument('--init', type=Path, default=None, help='start from the weights of this checkpoint')
    parser.add_argument('--time-limit', type=float, default=0,
                        help='stop cleanly at the last epoch boundary before this many minutes, an epoch taken to last '
                             'as long as the one before (0: none)')
    parser.add_argument('--stop-after', type=int, default=0,
                        help='stop cleanly after this epoch, keeping the schedule of --epochs (0: run all)')
    parser.add_argument('--no-val', action='store_true', help='skip the per-epoch validation')
    # extend: `--set a=1 ... --set b=2` keeps both (a plain store would keep only the last --set)
    parser.add_argument('--set', nargs='*', action='extend', default=[], metavar='KEY=VALUE',
                        help='override training config fields (see train_config.TrainConfig)')
    for f in dataclasses.fields(TrainConfig):
        flag = '--' + f.name.replace('_', '-')
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=f.metadata['help'])
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default, help=f.metadata['help'],
                                **f.metadata['flag'])


def parse_overrides(pairs: list[str], base: TrainConfig) -> TrainConfig:
    """Apply `key=value` strings (values parsed with ast.literal_eval) to `base`."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition('=')
        if not sep:
            raise ConfigError(f'override {pair!r} is not KEY=VALUE')
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            raise ConfigError(f'unknown config key {key!r}' + (f'; did you mean {close[0]!r}?' if close else ''))
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text   # a bare word is a string
        want = type(getattr(base, key))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not want:
            raise ConfigError(f'config key {key!r} wants {want.__name__}, got {value!r}')
        changes[key] = value
    return dataclasses.replace(base, **changes)
