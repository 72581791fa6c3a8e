"""NativeBackend: the C runtime behind the numpy engine's interface (engine/runtime.py).

    backend = load('weights/ifq_tinier_yolo.ifq')          # builds the library on first use
    head = backend.run(canvas)                             # == runtime.run(model, canvas) (one head)
    heads = backend.run_heads(canvas)                      # == runtime.run_heads(model, canvas) (any)
    faces = backend.detect(bgr, 0.3, 0.45)                 # == runtime.detect(model, bgr, 0.3, 0.45)

Letterboxing stays in Python (engine/preprocess.py, OpenCV); the C library takes the canvas,
runs the network, decodes in fixed point and runs NMS. The numpy engine stays the reference.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import netdef
from ..engine import modelfile
from ..engine.decode import BOX_FRAC_BITS, SCORE_FRAC_BITS, score_threshold_q
from ..engine.nms import IOU_DEN, iou_ratio
from ..engine.runtime import detect_with
from ..errors import ConfigError, ImageError, ModelFileError
from ..fileio import read_bytes
from ..netdef import LayerSpec
from . import binding


MAX_THREADS = 16
# runners kept per backend, the most recently used (a folder of photos of many aspect ratios
# makes many canvas shapes; a runner holds its line buffers and heads, about 0.9 MB at 576 px)
MAX_RUNNERS = 8


@dataclass(frozen=True)
class FeatureMemory:
    """Peak feature-map bytes of the native runtime and of the float network at one input side."""
    size: int            # input side in pixels
    native_bytes: int    # line buffers + int32 heads, as the runner allocated them
    float_bytes: int     # the float network's peak (integrate/report.py: float32 input + output of a layer)

    @property
    def ratio(self) -> float:
        return self.float_bytes / self.native_bytes


class NativeBackend:
    """A loaded .ifq model on the C runtime; runners (buffers per input side) are made on first use."""

    def __init__(self, data: bytes, source: str = '<bytes>', kernels: str = 'auto', threads: int = 1):
        try:
            self._model = binding.Model(data)
        except ValueError as e:
            raise ModelFileError(f'{source}: {e}') from None
        self.model = modelfile.from_bytes(data, source)   # the layer table, and the reference engine's model
        if kernels not in binding.KERNELS or not binding.kernels_supported(kernels):
            raise ConfigError(f'kernel set {kernels!r} does not run here; choose from '
                              f'{[k for k in binding.KERNELS if binding.kernels_supported(k)]}')
        if not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
            raise ConfigError(f'threads {threads} must be an integer from 1 to {MAX_THREADS}')
        self.kernels_requested = kernels
        self.threads = threads          # bands of head rows run in parallel, one runner each
        self._pool = ThreadPoolExecutor(threads - 1) if threads > 1 else None
        # (canvas (H, W), heads or None) -> one runner per thread
        self._runners: OrderedDict[tuple[tuple[int, int], tuple[int, ...] | None], list[binding.Runner]] = OrderedDict()
        self._lock = threading.Lock()   # a runner's buffers serve one call at a time

    @property
    def input_size(self) -> int:
        """Default square input side in pixels."""
        return self.model.input_size

    @property
    def specs(self) -> tuple[LayerSpec, ...]:
        """The layer table."""
        return self.model.specs

    @property
    def kernels(self) -> str:
        """The kernel set that runs ('portable', 'avx2', 'avx512', 'neon', 'amx')."""
        return self._runner((self.input_size, self.input_size)).kernels

    @property
    def num_heads(self) -> int:
        """Detection heads of the model (1 for a chain)."""
        return self._model.num_heads

    def _runner(self, shape: tuple[int, int], band: int = 0, heads: tuple[int, ...] | None = None) -> binding.Runner:
        """The runner of canvas shape (H, W) for thread `band` computing `heads` (None: all), made on first use."""
        key = (shape, heads)
        runners = self._runners.get(key)
        if runners is None:
            runners = self._runners[key] = [binding.Runner(self._model, shape[1], shape[0], self.kernels_requested,
                                                           heads) for _ in range(self.threads)]
            if len(self._runners) > MAX_RUNNERS:
                self._runners.popitem(last=False)
        self._runners.move_to_end(key)
        return runners[band]

    def run(self, canvas: np.ndarray) -> np.ndarray:
        """Single-head models: uint8 (H, W, 3) BGR letterboxed canvas -> int32 head accumulators
        (A*5, H/16, W/16); ValueError for a model of several heads (use run_heads)."""
        if self.num_heads != 1:
            raise ValueError(f'the model has {self.num_heads} heads; run_heads returns them all')
        return self.run_heads(canvas)[0]

    def run_heads(self, canvas: np.ndarray, heads: tuple[int, ...] | None = None) -> list[np.ndarray]:
        """uint8 (H, W, 3) BGR letterboxed canvas -> per head int32 (A*5, H/s, W/s), table order
        (== runtime.run_heads; only the heads numbered `heads` if given). Several threads split
        the rows of every head into bands, one runner each."""
        runner, flat = self._run(canvas, heads)
        parts = runner.split(flat)
        return parts if heads is None else [parts[h] for h in heads]

    def _run(self, canvas: np.ndarray, heads: tuple[int, ...] | None = None) -> tuple[binding.Runner, np.ndarray]:
        """run_heads, the heads back to back as the C runtime holds them, with their runner."""
        if not isinstance(canvas, np.ndarray) or canvas.dtype != np.uint8 or canvas.ndim != 3 \
                or canvas.shape[2] != netdef.IN_CHANNELS:
            raise ImageError(f'native engine input must be a uint8 (H, W, 3) canvas, got '
                             f'{getattr(canvas, "dtype", type(canvas).__name__)} {getattr(canvas, "shape", "")}')
        try:
            for side in canvas.shape[:2]:
                netdef.check_input_size(side, self.specs, 'engine input')
        except ConfigError as e:   # a canvas of the wrong size is a bad image, not a bad option
            raise ImageError(str(e)) from None
        shape = canvas.shape[:2]
        with self._lock:
            first = self._runner(shape, 0, heads)
            if self.threads == 1:
                return first, first.run(canvas)
            canvas = np.ascontiguousarray(canvas)
            flat = np.zeros(first.head_len, dtype=np.int32)
            cuts = np.linspace(0, first.head_shape[1], self.threads + 1).round().astype(int)   # first-head row bands
            others = [self._pool.submit(self._runner(shape, t, heads).run_band, canvas, flat, cuts[t], cuts[t + 1])
                      for t in range(1, self.threads)]
            first.run_band(canvas, flat, 0, cuts[1])
            for f in others:
                f.result()
            return first, flat

    def decode_head(self, head: np.ndarray, conf: float, nms_iou: float,
                    contain: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Single-head models: int32 head (A*5, rows, cols) -> `decode_heads`."""
        return self.decode_heads([head], conf, nms_iou, contain)

    def decode_heads(self, heads: list[np.ndarray], conf: float, nms_iou: float,
                     contain: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per head int32 (A*5, rows, cols) -> (float64 (N, 4) x1, y1, x2, y2 network pixels, float64 (N,)
        scores), best first: runtime.decode_heads (and nms.nms_vote_at's containment) in C."""
        if len(heads) != self.num_heads or getattr(heads[0], 'ndim', 0) != 3:
            raise ValueError(f'{len(heads)} heads given, the model has {self.num_heads}')
        stride = netdef.head_strides(self.specs)[0]
        with self._lock:
            runner = self._runner((heads[0].shape[1] * stride, heads[0].shape[2] * stride))
        return self._decode(runner, runner.join(heads), conf, nms_iou, contain)

    def _decode(self, runner: binding.Runner, flat: np.ndarray, conf: float, nms_iou: float,
                contain: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """decode_heads of the heads back to back (runner.join's layout)."""
        with self._lock:
            boxes = runner.decode(flat, score_threshold_q(conf), iou_ratio(nms_iou), IOU_DEN, iou_ratio(contain))
        return (boxes[:, :4].astype(np.float64) / (1 << BOX_FRAC_BITS),
                boxes[:, 4].astype(np.float64) / (1 << SCORE_FRAC_BITS))

    def detect(self, bgr_image: np.ndarray, conf: float, nms_iou: float,
               img_size: int | None = None, heads: tuple[int, ...] | None = None) -> np.ndarray:
        """uint8 (H, W, 3) BGR image -> float64 (N, 5) x, y, w, h, score in original pixels, best first
        (the contract and the output of engine.runtime.detect, `heads` included)."""
        return detect_with(lambda canvas, c, n: self._decode(*self._run(canvas, heads), c, n), self.specs,
                           bgr_image, conf, nms_iou, img_size or self.input_size)

    @staticmethod
    def nms_vote_at(boxes: np.ndarray, ranks: np.ndarray, weights: np.ndarray, iou: float,
                    contain: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """nms.nms_vote_at on float boxes in C: the same result, bit for bit (the Detector's level merge)."""
        return binding.nms_vote(boxes, ranks, weights, iou_ratio(iou), IOU_DEN, iou_ratio(contain))

    def feature_memory(self, size: int | None = None) -> FeatureMemory:
        """Measured peak feature memory of the native runner on a size x size canvas vs the float network's."""
        from ..integrate.report import feature_memory   # numpy only; imported late to keep loading light
        size = size or self.input_size
        return FeatureMemory(size, self._runner((size, size)).feature_bytes,
                             feature_memory(self.specs, size)['float'][0])


def load(path: str | Path, kernels: str = 'auto', threads: int = 1) -> NativeBackend:
    """Load an .ifq file on the native runtime (ModelFileError on any defect; NativeUnavailable
    when the library cannot be built here)."""
    return NativeBackend(read_bytes(path, ModelFileError, 'model file'), str(path), kernels, threads)
