"""Command-line entry point: argparse subcommands of docs CLI.md.

Each subcommand names its handler as 'module:function'; the module is imported only when the
command runs, so `--help` and light commands never import torch. A handler takes the parsed
arguments and returns the exit status. The project's errors become one-line messages here.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from .apps.backends import BACKENDS
from .defaults import DEFAULT_CHECKPOINT, DEFAULT_CONF, DEFAULT_MODEL, DEFAULT_NMS
from .errors import IfqError
from .export.cli import add_arguments as export_arguments
from .netdef import PYRAMID_LEVELS
from .train_config import add_train_arguments

EXPORT_PACKAGES = ('onnx', 'onnxruntime', 'qonnx')   # the `export` extra


def _add(sub, name: str, handler: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.set_defaults(handler=handler)
    return p


def _detection_flags(p: argparse.ArgumentParser, conf: float) -> None:
    """Flags shared by every command that runs the detector."""
    p.add_argument('--model', type=Path, default=None,
                   help=f'model file: .ifq (integer model), .pt (checkpoint) or .onnx (export) '
                        f'(default {DEFAULT_MODEL.name} / {DEFAULT_CHECKPOINT.name} in weights/)')
    p.add_argument('--backend', choices=tuple(BACKENDS), default=None,
                   help='; '.join(f'{b.name}: {b.about} ({b.suffix})' for b in BACKENDS.values())
                        + ' (default: from the --model suffix; .ifq runs native where the C library is built, '
                          'else int)')
    p.add_argument('--img-size', type=int, default=None,
                   help='network input side in pixels (default: the model\'s)')
    p.add_argument('--levels', type=int, default=PYRAMID_LEVELS,
                   help='image pyramid levels: 1 runs the network once; each further level runs it again '
                        'at half the input side for faces larger than its receptive field')
    # neither flag: the 'auto' mode; SUPPRESS keeps argparse from printing a default for each flag
    p.set_defaults(upscale='auto')
    up = p.add_mutually_exclusive_group()
    up.add_argument('--upscale', dest='upscale', action='store_const', const='on', default=argparse.SUPPRESS,
                    help='always add a pass at 4/3 of the input side for small faces, about twice the time '
                         '(without this flag it runs only on crowd scenes, where the other passes find many '
                         'small faces)')
    up.add_argument('--no-upscale', dest='upscale', action='store_const', const='off', default=argparse.SUPPRESS,
                    help='never add the 4/3 pass, not even on crowd scenes')
    p.add_argument('--flip', action='store_true',
                   help='also run the mirror image and fuse the two (twice the time, fewer false positives)')
    p.add_argument('--conf', type=float, default=conf, help='score threshold')
    p.add_argument('--nms', type=float, default=DEFAULT_NMS,
                   help='NMS IoU threshold (each kept box becomes the score-weighted mean of the boxes it suppresses)')


def _data_commands(sub) -> None:
    """data stats."""
    data = sub.add_parser('data', help='dataset tools').add_subparsers(dest='data_command', required=True)
    p = _add(data, 'stats', 'ifq_tinier_yolo.datasets.wider:cli_stats', 'WIDER FACE annotation statistics')
    p.add_argument('--wider-root', type=Path, required=True, help='folder holding wider_face_split/ and WIDER_<split>/')
    p.add_argument('--split', choices=('train', 'val'), default='train')
    p.add_argument('--no-check-images', action='store_true', help='do not check that every image file exists')


def _train_command(sub) -> None:
    """train."""
    p = _add(sub, 'train', 'ifq_tinier_yolo.train:cli_train', 'train the quantization network on WIDER FACE')
    add_train_arguments(p)   # one flag per TrainConfig field, with its default and help


def _model_commands(sub) -> None:
    """convert, verify, report, export."""
    p = _add(sub, 'convert', 'ifq_tinier_yolo.integrate.convert:cli_convert',
             'integrated fixed-point conversion of a trained checkpoint into an .ifq model')
    p.add_argument('checkpoint', type=Path)
    p.add_argument('--out', type=Path, required=True)
    p.add_argument('--separated', action='store_true',
                   help='separated conversion (each float parameter rounded on its own), for comparison')
    p.add_argument('--img-size', type=int, default=None,
                   help="the model's input side in pixels (default: the checkpoint's img_size)")
    p.add_argument('--emit-c', type=Path, default=None, metavar='MODEL.h',
                   help='also write the model as a C array (examples/c, devices without a file system)')
    p = _add(sub, 'verify', 'ifq_tinier_yolo.integrate.verify:cli_verify',
             'check the integer engine against the quantized PyTorch model, image by image')
    p.add_argument('--model', type=Path, default=DEFAULT_MODEL)
    p.add_argument('--checkpoint', type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument('--img-size', type=int, default=None)
    p.add_argument('sources', nargs='+', type=Path, metavar='IMAGE_OR_DIR')
    p.add_argument('--compare-separated', action='store_true',
                   help='also convert the checkpoint the separated way and print, for both conversions, '
                        'head values differing from torch and detections agreeing with torch')
    p.add_argument('--conf', type=float, default=0.3, help='score threshold for --compare-separated')
    p.add_argument('--nms', type=float, default=DEFAULT_NMS, help='NMS IoU threshold for --compare-separated')
    p = _add(sub, 'report', 'ifq_tinier_yolo.integrate.report:cli_report',
             'per-layer table, model bytes and runtime feature-map memory')
    p.add_argument('--model', type=Path, default=DEFAULT_MODEL)
    p.add_argument('--img-size', type=int, default=None)
    p.add_argument('--table', action='store_true',
                   help='report the current netdef layer table without a model file (placeholder parameters)')
    p = _add(sub, 'export', 'ifq_tinier_yolo.export.cli:cli_export',
             'write the integer model as ONNX (onnxruntime, OpenCV DNN) or QONNX (FINN); needs pip install .[export]')
    export_arguments(p)


def _detect_commands(sub) -> None:
    """detect, webcam."""
    p = _add(sub, 'detect', 'ifq_tinier_yolo.apps.detect:cli_detect', 'detect faces in images, folders and videos')
    p.add_argument('sources', nargs='+', type=Path, metavar='SOURCE')
    _detection_flags(p, conf=DEFAULT_CONF)
    p.add_argument('--out', type=Path, default=None, help='write annotated copies here')
    p.add_argument('--json', default=None, metavar='FILE|-',
                   help='write JSON lines to FILE or stdout (-); without --json and --out: stdout')
    p.add_argument('--skip-existing', action='store_true',
                   help='skip inputs whose outputs exist (annotated copy in --out, record in --json FILE)')
    p = _add(sub, 'webcam', 'ifq_tinier_yolo.apps.webcam:cli_webcam', 'live detection from a camera or a video')
    p.add_argument('--camera', default='0', help='camera index or a video path standing in for a camera')
    _detection_flags(p, conf=DEFAULT_CONF)
    p.add_argument('--out', type=Path, default=None, help='write the annotated video here (headless)')
    p.add_argument('--max-frames', type=int, default=0, help='stop after N frames (0: until the end or q)')


def _benchmark_commands(sub) -> None:
    """fddb detect / eval, wider predict / eval."""
    fddb = sub.add_parser('fddb', help='FDDB protocol').add_subparsers(dest='fddb_command', required=True)
    p = _add(fddb, 'detect', 'ifq_tinier_yolo.apps.benchmark:cli_fddb_detect',
             'write official FDDB detection files, one per fold')
    p.add_argument('--folds-dir', type=Path, required=True)
    p.add_argument('--images', type=Path, required=True)
    p.add_argument('--out', type=Path, required=True)
    p.add_argument('--folds', default=None, help='comma-separated fold numbers (default: all found)')
    p.add_argument('--ellipse', action='store_true', help='write ellipses instead of rectangles')
    p.add_argument('--ext', default='.jpg', help='image file extension')
    p.add_argument('--stretch', type=float, default=1.0, metavar='F',
                   help='multiply box heights by F about their centre (FDDB ellipses reach from the '
                        'hairline to below the chin, taller than WIDER-style boxes)')
    p.add_argument('--skip-existing', action='store_true', help='keep fold files already in --out')
    _detection_flags(p, conf=0.01)
    p = _add(fddb, 'eval', 'ifq_tinier_yolo.evaluation.fddb:cli_eval', 'the official FDDB evaluation')
    p.add_argument('--annotations', type=Path, nargs='+', required=True)
    p.add_argument('--detections', type=Path, nargs='+', required=True)
    p.add_argument('--list', type=Path, nargs='+', required=True)
    p.add_argument('--images', type=Path, required=True)
    p.add_argument('--out', required=True, help='output prefix: PREFIXDiscROC.txt, PREFIXContROC.txt, PREFIXroc.png')
    p.add_argument('--ellipse', action='store_true', help='detections are ellipses')
    p.add_argument('--ext', default='.jpg')

    # wider predict / eval
    wider = sub.add_parser('wider', help='WIDER FACE protocol').add_subparsers(dest='wider_command', required=True)
    p = _add(wider, 'predict', 'ifq_tinier_yolo.apps.benchmark:cli_wider_predict', 'write WIDER submission files')
    p.add_argument('--wider-root', type=Path, required=True)
    p.add_argument('--split', choices=('train', 'val'), default='val')
    p.add_argument('--out', type=Path, required=True)
    p.add_argument('--skip-existing', action='store_true', help='keep prediction files already in --out')
    _detection_flags(p, conf=0.01)
    p = _add(wider, 'eval', 'ifq_tinier_yolo.evaluation.wider:cli_eval', 'WIDER FACE easy / medium / hard AP')
    p.add_argument('--pred', type=Path, required=True)
    p.add_argument('--gt', type=Path, required=True)
    p.add_argument('--iou', type=float, default=0.5)
    p.add_argument('--min-faces', type=int, default=0,
                   help='only the images whose ground truth holds at least this many faces (crowds: e.g. 10)')


def build_parser() -> argparse.ArgumentParser:
    """The full parser of the command-line contract."""
    parser = argparse.ArgumentParser(prog='ifq-yolo', description='IFQ-Tinier-YOLO: integer-only face detection')
    parser.add_argument('--debug', action='store_true', help='show tracebacks')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for add_commands in (_data_commands, _train_command, _model_commands, _detect_commands, _benchmark_commands):
        add_commands(sub)
    return parser


def one_line(message: str) -> str:
    """A message on one line (a library's message may span several)."""
    return ' '.join(line.strip() for line in message.strip().splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit status."""
    args = build_parser().parse_args(argv)
    module_name, func_name = args.handler.split(':')
    try:
        handler = getattr(importlib.import_module(module_name), func_name)
        return int(handler(args) or 0)
    except ModuleNotFoundError as e:   # e.g. `train` on an engine-only install without torch
        if args.debug or (e.name or '').startswith('ifq_tinier_yolo'):
            raise
        hint = "'.[export]'" if e.name in EXPORT_PACKAGES else '-r requirements.txt'
        print(f'error: this command needs the Python package {e.name!r}: pip install {hint}', file=sys.stderr)
        return 1
    except IfqError as e:
        if args.debug:
            raise
        print(f'error: {one_line(str(e))}', file=sys.stderr)
        return 1
    except BrokenPipeError:   # stdout closed early (`... | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:   # a file the command had to write or read: permissions, a file in the way, a full disk
        if args.debug:
            raise
        where = f'{e.filename}: ' if e.filename is not None else ''
        print(f'error: {where}{one_line(e.strerror or str(e))}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('error: interrupted', file=sys.stderr)
        return 130
