"""`python -m ifq_tinier_yolo export MODEL.ifq --format onnx|qonnx --out FILE`.

`add_arguments` fills the subcommand's parser, `cli_export` is its handler; `export_model` is
the same as a function. Errors are the project's types (one line each in the CLI): a float
checkpoint or a damaged `.ifq` -> ModelFileError, a bad option -> ConfigError, an unwritable
--out -> OutputError. The file appears whole or not at all (fileio.atomic_open).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..fileio import atomic_open, output_errors

FORMATS = ('onnx', 'qonnx')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The export subcommand's arguments."""
    parser.add_argument('model', type=Path, help='integer model file (.ifq)')
    parser.add_argument('--format', choices=FORMATS, default='onnx',
                        help='onnx: standard ONNX (onnxruntime, OpenCV DNN), uint8 image of any side '
                             'multiple of the stride in, int32 head out; qonnx: QONNX dialect for FINN '
                             '(MultiThreshold nodes, static input side)')
    parser.add_argument('--out', type=Path, required=True, metavar='FILE', default=argparse.SUPPRESS,
                        help='file to write (.onnx)')   # SUPPRESS: no '(default: None)' in --help
    parser.add_argument('--img-size', type=int, default=None,
                        help='qonnx only: the static input side in pixels (default: the model\'s)')


def export_model(model_path: str | Path, out: str | Path, fmt: str = 'onnx', img_size: int | None = None) -> int:
    """Write the `fmt` export of the .ifq model at model_path to out atomically; returns its size in bytes."""
    from .graph import read_integer_model   # imports onnx: only when exporting

    if fmt not in FORMATS:
        raise ConfigError(f'--format {fmt!r}: expected one of {", ".join(FORMATS)}')
    if img_size is not None and fmt != 'qonnx':
        raise ConfigError('--img-size applies to --format qonnx only (the onnx graph takes any side '
                          'that is a multiple of the stride)')
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f'--out {out}: is a folder, expected a file name')
    model = read_integer_model(model_path)
    if fmt == 'onnx':
        from .onnx import build
        data = build(model).SerializeToString()
    else:
        from .qonnx import build
        data = build(model, img_size).SerializeToString()
    with output_errors(out), atomic_open(out, 'wb') as f:
        f.write(data)
    return len(data)


def cli_export(args: argparse.Namespace) -> int:
    """Handler of `export`: writes the file, prints one line to stdout; returns the exit status."""
    size = export_model(args.model, args.out, args.format, args.img_size)
    print(f'wrote {args.out} ({args.format}, {size:,} bytes)')
    return 0
