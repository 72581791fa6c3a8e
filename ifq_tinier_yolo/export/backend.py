"""Run an exported `.onnx` model in onnxruntime, with the engine's contract and its decoder.

    backend = load('model.onnx')
    heads = backend.run_heads(canvas)            # uint8 (H, W, 3) BGR canvas -> per head int32 (A*5, H/s, W/s)
    faces = backend.detect(bgr, 0.3, 0.45)       # float64 (N, 5) x, y, w, h, score, original pixels

Only the layers run in onnxruntime; letterboxing (engine/preprocess.py), the fixed-point
decode and NMS (engine.runtime.detect_with) are the engine's own, so bit-exact heads give
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
    """An exported model in an onnxruntime session, with the layer table, default input size and
    head decoders its metadata holds."""

    def __init__(self, session, params: meta.ExportParams, path: Path):
        self.session = session
        self.path = path
        self.specs: tuple[LayerSpec, ...] = params.specs     # engine checks read the table (input sizes)
        self.input_size: int = params.input_size
        self.heads: tuple[str, ...] = params.heads           # graph output names, table order
        self.decoders: list[HeadDecoder] = list(params.decoders)

    def run_heads_batch(self, canvases: np.ndarray) -> list[np.ndarray]:
        """uint8 (B, H, W, 3) BGR canvases -> per head int32 (B, A*5, H/s, W/s), as engine.runtime.run_heads_batch."""
        runtime._check_canvases(self, canvases)
        return self.session.run(list(self.heads), {INPUT: np.ascontiguousarray(canvases)})

    def run_heads(self, canvas: np.ndarray) -> list[np.ndarray]:
        """uint8 (H, W, 3) BGR letterboxed canvas -> per head int32 accumulators (A*5, H/s, W/s)."""
        if not isinstance(canvas, np.ndarray) or canvas.ndim != 3:
            raise ImageError(f'engine input must be a uint8 (H, W, 3) canvas, got '
                             f'{getattr(canvas, "shape", type(canvas).__name__)}')
        return [h[0] for h in self.run_heads_batch(canvas[None])]

    def run(self, canvas: np.ndarray) -> np.ndarray:
        """Single-head models: uint8 (H, W, 3) canvas -> int32 head (A*5, H/s, W/s); ValueError for several heads."""
        if len(self.heads) != 1:
            raise ValueError(f'this model has {len(self.heads)} heads; use run_heads')
        return self.run_heads(canvas)[0]

    def detect(self, bgr_image: np.ndarray, conf: float, nms_iou: float,
               img_size: int | None = None, heads: tuple[int, ...] | None = None) -> np.ndarray:
        """uint8 (H, W, 3) BGR image -> float64 (N, 5) x, y, w, h, score in original pixels, best first.

        Same checks, letterbox, decode and NMS as engine.runtime.detect (`heads`: only those
        heads' boxes; the graph still computes every head); only the layers differ.
        """
        wanted = runtime.decode_order(heads, len(self.decoders))

        def boxes(canvas: np.ndarray, c: float, n: float):
            out = self.run_heads(canvas)
            return runtime.decode_heads([self.decoders[h] for h in wanted], [out[h] for h in wanted], c, n)
        return runtime.detect_with(boxes, self.specs, bgr_image, conf, nms_iou, img_size or self.input_size)

    def __repr__(self) -> str:
        return f'OnnxBackend({str(self.path)!r}, input_size={self.input_size}, heads={list(self.heads)})'


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
    inputs, outputs = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
    if inputs != [INPUT] or sorted(outputs) != sorted(params.heads):
        raise ModelFileError(f'{path}: expected input {INPUT!r} and one output per head {list(params.heads)}, '
                             f'found inputs {inputs} and outputs {outputs}')
    return OnnxBackend(session, params, path)
