"""The backends that run a model file, in one registry: name -> suffix, loader.

Each loader turns a model file into a `Loaded` (a run function and the model's input size
and layer table); `Detector`, the CLI's `--backend` choices and the error messages read this
table. Only the chosen backend's modules are imported, so the engine path never imports torch
or onnxruntime.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import netdef
from ..defaults import DEFAULT_CHECKPOINT, DEFAULT_MODEL
from ..engine.nms import nms_vote_at
from ..errors import ConfigError, ModelFileError

# (uint8 (H, W, 3) BGR image, conf, nms IoU, input side, heads) -> float64 (N, 5) x, y, w, h, score in its
# pixels; heads: the numbers (table order) of the heads whose boxes to give, None: all
RunFn = Callable[[np.ndarray, float, float, int, 'tuple[int, ...] | None'], np.ndarray]
# (boxes (N, 4), ranks (N,), weights (N,), IoU, containment or None) -> (kept indices, voted boxes):
# nms.nms_vote_at, or the same in C on the native backend
VoteFn = Callable[[np.ndarray, np.ndarray, np.ndarray, float, 'float | None'], 'tuple[np.ndarray, np.ndarray]']


@dataclass(frozen=True)
class Loaded:
    """A model ready to run on one backend."""
    run: RunFn
    input_size: int                         # the model's default input side, pixels
    specs: tuple[netdef.LayerSpec, ...]     # its layer table
    backend: str                            # the backend that runs it
    notice: str | None = None               # one line for the user when it is not the requested one
    vote: VoteFn = nms_vote_at              # the NMS with box voting that merges its pyramid levels


def _load_int(path: Path) -> Loaded:
    from ..engine import runtime
    model = runtime.load_model(path)
    return Loaded(lambda image, conf, nms, size, heads=None: runtime.detect(model, image, conf, nms, size, heads),
                  model.input_size, model.specs, 'int')


def _load_native(path: Path, fallback: bool = False) -> Loaded:
    """The C runtime; with `fallback`, the numpy engine (and a notice) where it cannot run."""
    from ..native import NativeUnavailable, load
    try:
        backend = load(path)
    except NativeUnavailable as e:
        if not fallback:
            raise ConfigError(f'--backend native: {e}') from None
        loaded = _load_int(path)
        return Loaded(loaded.run, loaded.input_size, loaded.specs, 'int',
                      f'notice: numpy engine runs ({str(e).splitlines()[0]})')
    return Loaded(lambda image, conf, nms, size, heads=None: backend.detect(image, conf, nms, size, heads),
                  backend.input_size, backend.specs, 'native', vote=backend.nms_vote_at)


def _load_torch(path: Path) -> Loaded:
    from ..checkpoint import load_checkpoint, model_from_checkpoint
    from ..model.predict import detect_batch
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, path=path)
    return Loaded(lambda image, conf, nms, size, heads=None: detect_batch(model, [image], size, conf, nms, heads)[0],
                  int(ckpt.get('img_size', netdef.INPUT_SIZE)), model.layers, 'torch')


def _load_onnx(path: Path) -> Loaded:
    from ..export.backend import load
    backend = load(path)
    return Loaded(lambda image, conf, nms, size, heads=None: backend.detect(image, conf, nms, size, heads),
                  backend.input_size, backend.specs, 'onnx')


@dataclass(frozen=True)
class Backend:
    name: str
    suffix: str                             # model files it reads
    about: str                              # for --help
    load: Callable[[Path], Loaded]


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend('native', '.ifq', 'the C runtime (bit-packed kernels), built by the setup commands', _load_native),
    Backend('int', '.ifq', 'the numpy integer engine (the reference)', _load_int),
    Backend('torch', '.pt', 'the quantization network of a checkpoint in PyTorch', _load_torch),
    Backend('onnx', '.onnx', 'an `export --format onnx` file in onnxruntime', _load_onnx),
)}
# the backend a suffix gets when none is named: native for .ifq, falling back to the numpy engine
DEFAULT_OF_SUFFIX = {'.ifq': 'native', '.pt': 'torch', '.onnx': 'onnx'}
DEFAULT_FILE = {'.ifq': DEFAULT_MODEL, '.pt': DEFAULT_CHECKPOINT, '.onnx': DEFAULT_MODEL.with_suffix('.onnx')}


def resolve(path: str | Path | None, backend: str | None) -> tuple[Path, str, bool]:
    """(model file, backend, fallback allowed) from the arguments: the backend follows the suffix,
    the default file the backend. Only a backend chosen for the user may fall back."""
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f'unknown backend {backend!r}: expected one of {", ".join(BACKENDS)}')
    if path is None:
        suffix = BACKENDS[backend].suffix if backend else '.ifq'
        default = DEFAULT_FILE[suffix]
        if not default.is_file():
            raise ModelFileError(f'no trained model at {default.parent.name}/{default.name}: '
                                 f'see {default.parent.name}/README.md')
        return default, backend or DEFAULT_OF_SUFFIX[suffix], backend is None
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in DEFAULT_OF_SUFFIX:
        raise ConfigError(f'{path}: unknown model file type {path.suffix!r}: expected .ifq (integer model), '
                          f'.pt (checkpoint) or .onnx (export)')
    if backend is not None and BACKENDS[backend].suffix != suffix:
        raise ConfigError(f'{path}: a {path.suffix} file runs on the {DEFAULT_OF_SUFFIX[suffix]} backend '
                          f'(--backend {DEFAULT_OF_SUFFIX[suffix]}); the {backend} backend reads '
                          f'{BACKENDS[backend].suffix} files')
    if not path.is_file():
        raise ModelFileError(f'{path}: no such model file')
    return path, backend or DEFAULT_OF_SUFFIX[suffix], backend is None


def load(path: str | Path | None, backend: str | None) -> tuple[Path, Loaded]:
    """Resolve and load a model file on its backend."""
    path, name, fallback = resolve(path, backend)
    if name == 'native':
        return path, _load_native(path, fallback)
    return path, BACKENDS[name].load(path)
