"""Run an exported `.onnx` model in onnxruntime, with the engine's contract and its decoder.

    backend = load('model.onnx')
    head = backend.run(canvas)                   # uint8 (S, S, 3) BGR canvas -> int32 (A*5, S/16, S/16)
    faces = backend.detect(bgr, 0.3, 0.45)       # float64 (N, 5) x, y, w, h, score, original pixels

Only the layers run in onnxruntime; letterboxing (engine/preprocess.py), the fixed-point
decode and NMS (engine.runtime.detect_with) are the engine's own, so a bit-exact head gives
identical detections. Needs onnxruntime only (not onnx).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engine import runtime
from ..engine.decode import HeadDecoder
from ..errors import ImageError, ModelFileError
from ..netdef import LayerSpec
from . import meta
from .meta import INPUT


class OnnxBackend:
    """An exported model in an onnxruntime session; `specs`, `input_size`, `stride`, `anchors_q16`,
    `out_multiplier`, `out_shift` as on IntegerModel, so engine.runtime.decode_head accepts it."""

    def __init__(self, session, params: meta.HeadParams, path: Path):
        self.session = session
        self.path = path
        self.specs: tuple[LayerSpec, ...] = params.specs
        self.input_size: int = params.input_size
        self.anchors_q16: np.ndarray = params.anchors_q16
        self.out_multiplier: int = params.out_multiplier
        self.out_shift: int = params.out_shift
        self.stride: int = params.stride

    def run_batch(self, canvases: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) BGR canvases -> int32 head (B, A*5, H/16, W/16), as engine.runtime.run_batch."""
        runtime._check_canvases(self, canvases)
        (head,) = self.session.run(None, {INPUT: np.ascontiguousarray(canvases)})
        return head

    def run(self, canvas: np.ndarray) -> np.ndarray:
        """uint8 (S, S, 3) BGR letterboxed canvas -> int32 head accumulators (A*5, S/16, S/16)."""
        if not isinstance(canvas, np.ndarray) or canvas.ndim != 3:
            raise ImageError(f'engine input must be a uint8 (H, W, 3) canvas, got '
                             f'{getattr(canvas, "shape", type(canvas).__name__)}')
        return self.run_batch(canvas[None])[0]

    def detect(self, bgr_image: np.ndarray, conf: float, nms_iou: float,
               img_size: int | None = None) -> np.ndarray:
        """uint8 (H, W, 3) BGR image -> float64 (N, 5) x, y, w, h, score in original pixels, best first.

        Same checks, letterbox, decode and NMS as engine.runtime.detect; only `run` differs.
        """
        decoder = HeadDecoder(self.anchors_q16, self.out_multiplier, self.out_shift, self.stride)
        return runtime.detect_with(lambda canvas: [self.run(canvas)], [decoder], self.specs, bgr_image, conf,
                                   nms_iou, img_size or self.input_size)

    def __repr__(self) -> str:
        return f'OnnxBackend({str(self.path)!r}, input_size={self.input_size})'


def load(path: str | Path, threads: int = 0) -> OnnxBackend:
    """Open an `.onnx` file written by `export --format onnx` (ModelFileError, one line, otherwise).

    threads: onnxruntime intra-op threads, 0 for its default (one per core).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f'{path}: no such model file')
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3          # errors only: the graph's shape warnings are not the user's
    try:
        session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    except Exception as e:                  # onnxruntime raises its own types for bad protobufs and graphs
        if 'MultiThreshold' in str(e):      # the one op of our QONNX export that onnxruntime lacks
            raise ModelFileError(f'{path}: a QONNX export (MultiThreshold nodes) runs in qonnx or FINN; '
                                 f'for onnxruntime export --format onnx') from None
        raise ModelFileError(f'{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})') from None
    try:
        params = meta.from_props(session.get_modelmeta().custom_metadata_map, str(path))
    except ValueError as e:
        raise ModelFileError(str(e)) from None
    names = [i.name for i in session.get_inputs()]
    if names != [INPUT] or len(session.get_outputs()) != 1:
        raise ModelFileError(f'{path}: expected one input {INPUT!r} and one output, found inputs {names}')
    return OnnxBackend(session, params, path)
