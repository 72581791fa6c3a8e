"""The public Python API: `Detector.load(path).detect(bgr_image) -> list[Face]` in original pixels.

The backends of `apps/backends.py` share this interface: 'native' (the C runtime) and 'int'
(the numpy engine) read an `.ifq` model, 'torch' a `.pt` checkpoint, 'onnx' an exported
`.onnx` file. The backend follows the model file's suffix; an `.ifq` model runs natively when
the C library is built, else on the numpy engine (`Detector.notice` says so).

A Detector is safe to call from several threads at once: it holds no per-call state, the
numpy engine's plans are built under a lock and the native runtime serialises its buffers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import netdef
from ..defaults import DEFAULT_CONF, DEFAULT_NMS
from ..boxes import corners, detection_rows
from ..engine.nms import iou_matrix, nms_vote_at
from ..errors import ConfigError, ImageError
from ..imageio import to_bgr8
from .backends import RunFn, VoteFn, load

COLUMNS = ('x', 'y', 'w', 'h', 'score')   # columns of every (N, 5) detection array
# A box lying this much (fraction of its area) inside a better one is a part of that face: a
# small-receptive-field level fires on the eyes or mouth of a face it cannot see whole.
CONTAIN = 0.8
# Boxes of the plain and the mirrored pass overlapping this much (IoU) are the same face.
FLIP_MATCH_IOU = 0.5
# The NMS threshold each pyramid level runs with: 1 suppresses nothing, so every candidate of
# every level reaches the one voted NMS of merge_levels (better boxes than voting per level:
# dev TPR@100FP 0.604 against 0.602, crowd-like slice hard AP 0.582 against 0.570).
LEVEL_NMS = 1.0

@dataclass(frozen=True)
class Face:
    """One face: top-left corner x, y and size w, h in original-image pixels; score in [0, 1]."""
    x: float
    y: float
    w: float
    h: float
    score: float


def no_detections() -> np.ndarray:
    """The empty result: float64 (0, 5)."""
    return np.zeros((0, len(COLUMNS)), dtype=np.float64)


def scale_boxes(boxes: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """float (N, 5) x, y, w, h, score in an image of from_size (W, H) -> the same boxes in to_size pixels."""
    if tuple(from_size) == tuple(to_size):
        return boxes
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return boxes * np.array([sx, sy, sx, sy, 1.0])


def box_cells(dets: np.ndarray, size: int, long_side: int, stride: int) -> np.ndarray:
    """Longer side of each box (N, 5) of an image of longer side `long_side`, in grid cells of a
    pass at input `size`."""
    return np.maximum(dets[:, 2], dets[:, 3]) * (size / long_side / stride)


def is_crowd(dets: np.ndarray, size: int, long_side: int, stride: int) -> bool:
    """Whether a pass at input `size` found a crowd of small faces: the test of the 'auto' upscale mode
    (netdef.AUTO_UPSCALE_FACES boxes scoring netdef.AUTO_UPSCALE_SCORE or more, at most
    netdef.UPSCALE_MAX_CELLS cells long)."""
    small = (dets[:, 4] >= netdef.AUTO_UPSCALE_SCORE) & (box_cells(dets, size, long_side, stride)
                                                         <= netdef.UPSCALE_MAX_CELLS)
    return int(np.count_nonzero(small)) >= netdef.AUTO_UPSCALE_FACES


def discount_small(dets: np.ndarray, size: int, long_side: int, stride: int) -> np.ndarray:
    """Boxes (N, 5) with the scores of those shorter than netdef.SMALL_BOX_CELLS cells at input `size`
    times (cells / SMALL_BOX_CELLS) ** SMALL_BOX_POWER, best first again (stable)."""
    cells = box_cells(dets, size, long_side, stride)
    out = dets.copy()
    out[:, 4] *= np.minimum(cells / netdef.SMALL_BOX_CELLS, 1.0) ** netdef.SMALL_BOX_POWER
    return out[np.argsort(-out[:, 4], kind='stable')]


def merge_levels(levels: list[np.ndarray], sizes: list[int], long_side: int, stride: int,
                 nms: float, upscaled: np.ndarray | None = None, up_size: int = 0,
                 vote: VoteFn = nms_vote_at) -> np.ndarray:
    """Detections (N, 5) of each pyramid level in original pixels -> one set, best first.

    Levels after the first keep only boxes of at least netdef.PYRAMID_MIN_CELLS grid cells at
    their own input size; the upscaled level (input side `up_size`), if given, only boxes of at
    most netdef.UPSCALE_MAX_CELLS. One NMS with box voting (nms.nms_vote) then removes the
    overlapping boxes of one face, within a level and across levels, each kept box becoming the
    score-weighted mean of those it suppressed; and it removes boxes lying inside a better one
    (CONTAIN), since those are parts of a face. `vote` runs that NMS (the backend's: C on native).
    """
    parts = [levels[0]]
    for dets, size in zip(levels[1:], sizes[1:]):
        parts.append(dets[box_cells(dets, size, long_side, stride) >= netdef.PYRAMID_MIN_CELLS])
    if upscaled is not None:
        parts.append(upscaled[box_cells(upscaled, up_size, long_side, stride) <= netdef.UPSCALE_MAX_CELLS])
    dets = np.concatenate(parts)
    keep, voted = vote(corners(dets), dets[:, 4], dets[:, 4], nms, CONTAIN)
    return detection_rows(voted, dets[keep, 4])


def fuse_mirrored(plain: np.ndarray, mirrored: np.ndarray, nms: float, vote: VoteFn = nms_vote_at) -> np.ndarray:
    """Detections (N, 5) of the image and (M, 5) of its mirror image (mapped back) -> one set, best first.

    Test-time augmentation: NMS picks the boxes; a box the other pass also found (IoU >=
    FLIP_MATCH_IOU) becomes the mean of the two boxes and scores; one found by a single pass
    keeps half its score, the other pass having voted 0. Faces are found alike in a mirror
    image, background texture much less so, so the vote lowers false positives more than faces.
    """
    dets = np.concatenate([plain, mirrored])
    keep, _ = vote(corners(dets), dets[:, 4], dets[:, 4], nms, CONTAIN)   # the boxes NMS keeps; not voted
    fused = dets[keep].copy()
    from_plain = keep < len(plain)
    for rows, other in ((from_plain, mirrored), (~from_plain, plain)):   # each kept box against the other pass
        own = fused[rows]
        iou = iou_matrix(corners(own), corners(other))
        best = iou.argmax(axis=1) if len(other) else np.zeros(len(own), dtype=np.int64)
        hit = iou[np.arange(len(own)), best] >= FLIP_MATCH_IOU if len(other) else np.zeros(len(own), dtype=bool)
        own[hit] = (own[hit] + other[best[hit]]) / 2
        own[~hit, 4] *= 0.5
        fused[rows] = own
    return fused[np.argsort(-fused[:, 4], kind='stable')]


class Detector:
    """A loaded face detector with fixed thresholds; build it with `Detector.load`."""

    def __init__(self, run: RunFn, path: Path, backend: str, conf: float, nms: float, sizes: list[int],
                 stride: int, flip: bool = False, upscale: str = 'off', up_size: int = 0, notice: str | None = None,
                 coarse_heads: tuple[int, ...] | None = None, vote: VoteFn = nms_vote_at):
        self._run = run
        self._vote = vote             # the NMS with voting that merges the levels (merge_levels)
        self.path = path              # the model file
        self.backend = backend        # the backend that runs it: a name of apps.backends.BACKENDS
        self.notice = notice          # one line when it is not the backend asked for (native unavailable)
        self.conf = conf              # score threshold in [0, 1]
        self.nms = nms                # NMS IoU threshold in (0, 1]
        self.sizes = sizes            # network input side of each pyramid level, pixels
        self.stride = stride          # input pixels per grid cell
        self.flip = flip              # also run the mirror image and fuse (fuse_mirrored)
        self.upscale = upscale        # when the upscaled level runs: a mode of netdef.UPSCALE_MODES
        self.up_size = up_size        # input side of the upscaled level
        self.coarse_heads = coarse_heads   # the heads levels after the first run (netdef.coarsest_heads); None: all

    @property
    def img_size(self) -> int:
        """Input side of the first (full-resolution) pyramid level."""
        return self.sizes[0]

    @classmethod
    def load(cls, path: str | Path | None = None, backend: str | None = None, conf: float = DEFAULT_CONF,
             nms: float = DEFAULT_NMS, img_size: int | None = None,
             levels: int = netdef.PYRAMID_LEVELS, flip: bool = False, upscale: str = 'auto') -> Detector:
        """Load a model: .ifq -> native (else numpy) engine, .pt -> torch, .onnx -> onnxruntime;
        path None -> weights/ifq_tinier_yolo.ifq.

        img_size None runs the model at its own input size; `levels` > 1 adds pyramid levels at
        half, quarter... that size for faces larger than the network's receptive field; `upscale`
        says when a level at netdef.UPSCALE times that size runs, for small faces: 'on' always,
        'off' never, 'auto' on crowd scenes (`is_crowd`); `flip` also runs the mirror image (twice
        the time, fewer false positives).
        """
        if not 0.0 <= conf <= 1.0:
            raise ConfigError(f'conf {conf} must lie in [0, 1]')
        if not 0.0 < nms <= 1.0:
            raise ConfigError(f'nms {nms} must lie in (0, 1]')
        if img_size is not None and img_size <= 0:
            raise ConfigError(f'img_size {img_size} must be a positive number of pixels')
        if not isinstance(levels, int) or not 1 <= levels <= 4:
            raise ConfigError(f'levels {levels} must be an integer from 1 to 4')
        if upscale not in netdef.UPSCALE_MODES:
            raise ConfigError(f'upscale {upscale!r} must be one of {", ".join(netdef.UPSCALE_MODES)}')
        path, m = load(path, backend)
        size = img_size or m.input_size
        netdef.check_input_size(size, m.specs)
        coarse = netdef.coarsest_heads(m.specs)   # None when that is every head: one runner per shape, not two
        return cls(m.run, path, m.backend, conf, nms, netdef.pyramid_sizes(size, levels, m.specs),
                   netdef.total_stride(m.specs), bool(flip), upscale, netdef.upscale_size(size, m.specs),
                   m.notice, coarse if len(coarse) < len(netdef.heads(m.specs)) else None, m.vote)

    def _pyramid(self, bgr: np.ndarray, conf: float, upscale: str | None = None) -> tuple[np.ndarray, bool]:
        """Detections (N, 5) of all pyramid levels of a uint8 BGR image, merged, small boxes
        discounted (discount_small), scoring at least `conf`, best first; and whether the upscaled
        level ran. `upscale` overrides the detector's mode (a netdef.UPSCALE_MODES value)."""
        def run(size: int, heads: tuple[int, ...] | None = None) -> np.ndarray:
            dets = self._run(bgr, conf, LEVEL_NMS, size, heads)
            return np.asarray(dets, dtype=np.float64).reshape(-1, len(COLUMNS))
        mode = upscale or self.upscale
        long_side = max(bgr.shape[:2])
        levels = [run(self.sizes[0])] + [run(size, self.coarse_heads) for size in self.sizes[1:]]
        boxes = None if mode == 'on' else merge_levels(levels, self.sizes, long_side, self.stride,
                                                         self.nms, vote=self._vote)
        upscaled = mode == 'on' or (mode == 'auto' and is_crowd(boxes, self.sizes[0], long_side, self.stride))
        if upscaled:
            boxes = merge_levels(levels, self.sizes, long_side, self.stride, self.nms, run(self.up_size),
                                 self.up_size, self._vote)
        boxes = discount_small(boxes, self.sizes[0], long_side, self.stride)
        return boxes[boxes[:, 4] >= conf], upscaled

    def detect_array(self, image: np.ndarray) -> np.ndarray:
        """Image (gray / BGR / BGRA, 8 or 16 bit) -> float64 (N, 5) x, y, w, h, score in its pixels, best first."""
        if not isinstance(image, np.ndarray):
            raise ImageError(f'expected an image as a numpy array, got {type(image).__name__}')
        bgr = to_bgr8(image)   # no copy for uint8 BGR; shrinks sides over imageio.MAX_SIDE
        if not self.flip:
            boxes, _ = self._pyramid(bgr, self.conf)
        else:
            # each pass keeps scores >= conf / 2: a fused score is the mean of the two passes,
            # a pass below that threshold voting 0. The mirror pass runs the upscaled level where
            # the plain pass did, so that both passes see the same small faces.
            plain, upscaled = self._pyramid(bgr, self.conf / 2)
            mirrored, _ = self._pyramid(np.ascontiguousarray(bgr[:, ::-1]), self.conf / 2,
                                        'on' if upscaled else 'off')
            mirrored[:, 0] = bgr.shape[1] - mirrored[:, 0] - mirrored[:, 2]
            boxes = fuse_mirrored(plain, mirrored, self.nms, self._vote)
            boxes = boxes[boxes[:, 4] >= self.conf]
        return scale_boxes(boxes, (bgr.shape[1], bgr.shape[0]), (image.shape[1], image.shape[0]))

    def detect(self, image: np.ndarray) -> list[Face]:
        """Image array (BGR as OpenCV reads it) -> faces in its pixels, highest score first."""
        return [Face(*(float(v) for v in row)) for row in self.detect_array(image)]

    def __repr__(self) -> str:
        return (f'Detector(path={str(self.path)!r}, backend={self.backend!r}, conf={self.conf}, '
                f'nms={self.nms}, sizes={self.sizes}, upscale={self.upscale!r}, up_size={self.up_size}, '
                f'flip={self.flip})')
