"""ctypes declarations of csrc/ifq.h and thin owners of its two handles (model, runner)."""
from __future__ import annotations

import ctypes as C
import weakref

import numpy as np

from . import NativeUnavailable
from .build import build_library

KERNELS = ('auto', 'portable', 'avx2', 'avx512', 'neon', 'amx')   # ifq_kernels enum order


class Error(C.Structure):
    _fields_ = [('message', C.c_char * 256)]


class Box(C.Structure):
    _fields_ = [(name, C.c_int32) for name in ('x1', 'y1', 'x2', 'y2', 'score', 'objectness')]


BOX_FIELDS = len(Box._fields_)
_LIB: C.CDLL | None = None


def _declare(lib: C.CDLL) -> C.CDLL:
    vp, i32p, sz = C.c_void_p, np.ctypeslib.ndpointer(np.int32, flags='C_CONTIGUOUS'), C.c_size_t
    u8p = np.ctypeslib.ndpointer(np.uint8, flags='C_CONTIGUOUS')
    f64p = np.ctypeslib.ndpointer(np.float64, flags='C_CONTIGUOUS')
    sigs = {
        'ifq_model_load': (C.c_int, [C.c_char_p, sz, C.POINTER(vp), C.POINTER(Error)]),
        'ifq_model_free': (None, [vp]),
        'ifq_model_input_size': (C.c_int, [vp]),
        'ifq_model_stride': (C.c_int, [vp]),
        'ifq_model_num_anchors': (C.c_int, [vp]),
        'ifq_model_num_heads': (C.c_int, [vp]),
        'ifq_model_head_anchors': (C.c_int, [vp, C.c_int]),
        'ifq_model_head_stride': (C.c_int, [vp, C.c_int]),
        'ifq_runner_head_rows': (C.c_int, [vp, C.c_int]),
        'ifq_runner_head_cols': (C.c_int, [vp, C.c_int]),
        'ifq_runner_head_offset': (sz, [vp, C.c_int]),
        'ifq_kernels_supported': (C.c_int, [C.c_int]),
        'ifq_runner_create_heads': (C.c_int, [vp, C.c_int, C.c_int, C.c_int, C.c_uint64, C.POINTER(vp),
                                              C.POINTER(Error)]),
        'ifq_runner_free': (None, [vp]),
        'ifq_runner_kernels': (C.c_int, [vp]),
        'ifq_runner_head_len': (sz, [vp]),
        'ifq_runner_max_boxes': (sz, [vp]),
        'ifq_runner_feature_bytes': (sz, [vp]),
        'ifq_runner_total_bytes': (sz, [vp]),
        'ifq_run': (C.c_int, [vp, u8p, i32p]),
        'ifq_run_band': (C.c_int, [vp, u8p, i32p, C.c_int, C.c_int]),
        'ifq_decode': (C.c_int, [vp, i32p, C.c_int32, C.c_int32, C.c_int32, C.c_int32,
                                 np.ctypeslib.ndpointer(np.int32, flags='C_CONTIGUOUS'), sz, C.POINTER(sz)]),
        'ifq_nms_vote_work_bytes': (sz, [sz]),
        'ifq_nms_vote': (C.c_int, [f64p, f64p, f64p, sz, C.c_int32, C.c_int32, C.c_int32, f64p,
                                   np.ctypeslib.ndpointer(np.int64, flags='C_CONTIGUOUS'), f64p, C.POINTER(sz)]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def library() -> C.CDLL:
    """The loaded native library (built on first use); NativeUnavailable if it cannot be."""
    global _LIB
    if _LIB is None:
        path = build_library()
        try:
            _LIB = _declare(C.CDLL(str(path)))
        except (OSError, AttributeError) as e:   # a library that does not load, or lacks a symbol
            raise NativeUnavailable(f'{path}: cannot load the native library ({e})') from None
    return _LIB


def kernels_supported(name: str) -> bool:
    """Does this CPU run the kernel set `name` (one of KERNELS)?"""
    return bool(library().ifq_kernels_supported(KERNELS.index(name)))


def _c_contain(contain_num: int | None) -> int:
    """A containment numerator as the C functions take it: -1 for no containment test."""
    return -1 if contain_num is None else contain_num


class Model:
    """A loaded model handle; raises ValueError with the C loader's message."""

    def __init__(self, data: bytes):
        lib, err, handle = library(), Error(), C.c_void_p()
        status = lib.ifq_model_load(data, len(data), C.byref(handle), C.byref(err))
        if status:
            raise ValueError(err.message.decode('utf-8', 'replace'))
        self.handle = handle
        self._free = weakref.finalize(self, lib.ifq_model_free, handle)
        self.input_size = lib.ifq_model_input_size(handle)
        self.stride = lib.ifq_model_stride(handle)
        self.num_anchors = lib.ifq_model_num_anchors(handle)
        self.num_heads = lib.ifq_model_num_heads(handle)
        self.head_anchors = [lib.ifq_model_head_anchors(handle, h) for h in range(self.num_heads)]


class Runner:
    """Buffers for one canvas shape and kernel set; one call at a time (ctypes releases the GIL
    during the call, so runners on other threads run in parallel)."""

    def __init__(self, model: Model, width: int, height: int, kernels: str = 'auto',
                 heads: tuple[int, ...] | None = None):
        lib, err, handle = library(), Error(), C.c_void_p()
        self.heads = tuple(range(model.num_heads)) if heads is None else tuple(heads)   # the heads it computes
        mask = sum(1 << h for h in self.heads if 0 <= h < model.num_heads)
        status = lib.ifq_runner_create_heads(model.handle, width, height, KERNELS.index(kernels), mask,
                                             C.byref(handle), C.byref(err))
        if status:
            raise ValueError(err.message.decode('utf-8', 'replace'))
        self.model, self.handle = model, handle   # the runner reads the model: keep it alive
        self.canvas_shape = (height, width, 3)
        self._free = weakref.finalize(self, lib.ifq_runner_free, handle)
        self.kernels = KERNELS[lib.ifq_runner_kernels(handle)]
        self.head_len = lib.ifq_runner_head_len(handle)   # int32 values of all heads, back to back
        self.head_offsets = [lib.ifq_runner_head_offset(handle, h) for h in range(model.num_heads + 1)]
        self.head_shapes = [(a * 5, lib.ifq_runner_head_rows(handle, h), lib.ifq_runner_head_cols(handle, h))
                            for h, a in enumerate(model.head_anchors)]
        self.head_shape = self.head_shapes[0]
        self.max_boxes = lib.ifq_runner_max_boxes(handle)
        self.feature_bytes = lib.ifq_runner_feature_bytes(handle)
        self.total_bytes = lib.ifq_runner_total_bytes(handle)
        self._boxes = np.zeros((self.max_boxes, BOX_FIELDS), dtype=np.int32)

    def run(self, canvas: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) canvas of this runner's shape -> int32 (head_len,): every head, back to back
        in table order (zeros for the heads it does not compute)."""
        self._check(canvas)
        every = len(self.heads) == len(self.head_shapes)
        heads = (np.empty if every else np.zeros)(self.head_len, dtype=np.int32)
        if library().ifq_run(self.handle, np.ascontiguousarray(canvas), heads):
            raise RuntimeError('ifq_run failed')   # only on null arguments: a bug, not a user error
        return heads

    def _check(self, canvas: np.ndarray) -> None:
        """ValueError unless `canvas` is uint8 of this runner's shape (the C code reads exactly that)."""
        if canvas.dtype != np.uint8 or canvas.shape != self.canvas_shape:
            raise ValueError(f'canvas {canvas.dtype} {canvas.shape}, this runner reads uint8 {self.canvas_shape}')

    def split(self, heads: np.ndarray) -> list[np.ndarray]:
        """int32 (head_len,) -> per head int32 (A*5, rows, cols) views, table order."""
        return [heads[a:b].reshape(shape) for a, b, shape in
                zip(self.head_offsets, self.head_offsets[1:], self.head_shapes)]

    def join(self, heads: list[np.ndarray]) -> np.ndarray:
        """Per head int32 (A*5, rows, cols) -> int32 (head_len,) (ValueError unless the shapes are this runner's)."""
        shapes = [getattr(h, 'shape', None) for h in heads]
        if shapes != self.head_shapes:   # the C decoder reads exactly this runner's heads
            raise ValueError(f'heads of shapes {shapes}, this runner makes {self.head_shapes}')
        return np.concatenate([np.asarray(h, dtype=np.int32).ravel() for h in heads])

    def run_band(self, canvas: np.ndarray, head: np.ndarray, y_begin: int, y_end: int) -> None:
        """Rows y_begin..y_end - 1 of the first head (and the same part of the others) of a contiguous
        uint8 canvas into `head`, every head back to back (int32 (head_len,), as `run` returns)."""
        self._check(canvas)
        if head.dtype != np.int32 or head.size != self.head_len:
            raise ValueError(f'head buffer {head.dtype} of {head.size} values, this runner fills int32 {self.head_len}')
        if library().ifq_run_band(self.handle, canvas, head, y_begin, y_end):
            raise RuntimeError('ifq_run_band failed')   # only on bad arguments: a bug, not a user error

    def decode(self, heads: np.ndarray, conf_q: int, iou_num: int, den: int,
               contain_num: int | None = None) -> np.ndarray:
        """int32 (head_len,) every head back to back (`run`, `join`) -> int32 (N, 6) x1, y1, x2, y2
        (2**-8 px), score (2**-16), objectness: each head it computes decoded, one NMS over all
        (containment test where contain_num is not None)."""
        if heads.shape != (self.head_len,):   # the C decoder reads exactly this many values
            raise ValueError(f'heads of shape {heads.shape}, this runner makes ({self.head_len},)')
        n = C.c_size_t()
        status = library().ifq_decode(self.handle, heads, conf_q, iou_num, den, _c_contain(contain_num),
                                      self._boxes, self.max_boxes, C.byref(n))
        if status:
            raise RuntimeError(f'ifq_decode failed ({status})')
        return self._boxes[:n.value].copy()


def nms_vote(boxes: np.ndarray, ranks: np.ndarray, weights: np.ndarray, iou_num: int, iou_den: int,
             contain_num: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """engine.nms.nms_vote on float boxes, in C (ifq_nms_vote): the same kept indices and the
    same float64 voted boxes, bit for bit. boxes (N, 4) x1, y1, x2, y2; ranks, weights (N,)."""
    lib = library()
    b = np.ascontiguousarray(boxes, dtype=np.float64).reshape(-1, 4)
    r, w = (np.ascontiguousarray(v, dtype=np.float64).reshape(-1) for v in (ranks, weights))
    if not len(r) == len(w) == len(b):
        raise ValueError(f'{len(b)} boxes, {len(r)} ranks and {len(w)} weights: expected one of each per box')
    n = len(b)
    work = np.empty(lib.ifq_nms_vote_work_bytes(n) // 8 + 1, dtype=np.float64)   # aligned for double
    keep, voted, kept = np.empty(n, dtype=np.int64), np.empty((n, 4), dtype=np.float64), C.c_size_t()
    status = lib.ifq_nms_vote(b, r, w, n, iou_num, iou_den, _c_contain(contain_num), work, keep, voted,
                              C.byref(kept))
    if status:
        raise ValueError(f'ifq_nms_vote refused its arguments ({n} boxes, IoU {iou_num}/{iou_den}, NaN ranks?)')
    return keep[:kept.value].copy(), voted[:kept.value].copy()
