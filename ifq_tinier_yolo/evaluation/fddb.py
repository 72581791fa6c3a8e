"""The official FDDB evaluation (Jain & Learned-Miller's `evaluate`), reimplemented.

Semantics (PAPER.md, "FDDB evaluation"), as the C++ program does them:
- regions are filled pixel masks clipped to the image: ellipses with integer-truncated radii,
  the centre rounded half to even through float32 (cvPointFrom32f), the angle converted by
  the reader (radians) and the drawer (180 - t degrees, rounded by cv::ellipse); rectangles
  from round(left, top) to round(left + width, top + height), both corners inclusive;
- per image and per distinct detection score t (detections with score >= t kept): the
  assignment of kept detections to faces maximising total IoU; a matched pair with IoU > 0.5
  is a discrete true positive, the continuous score adds each matched IoU, false positives are
  kept detections - discrete true positives; an image without detections has the one row
  (t = DBL_MAX, nothing kept);
- the per-image lists are merged as `Results::merge` does: one row per distinct threshold of
  all images, ascending, each image contributing its state at that threshold.
Masks are drawn on each region's bounding window only, never on the whole image.
"""
from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path
from typing import NamedTuple, Sequence

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from ..datasets.fddb import (ELLIPSE_COLUMNS, ListEntry, align_blocks, detection_columns,
                             iter_blocks, list_entries)
from ..errors import DataError, ImageError
from ..fileio import atomic_write_text
from ..imageio import read_image_size
from .plots import plot_roc

DISCRETE_IOU = 0.5                          # a matched pair counts as a detection above this IoU
NO_DETECTION_THRESHOLD = sys.float_info.max  # the row of an image without detections (1.79769e+308)
FP_POINTS = (50, 100, 500, 1000)            # false-positive counts at which the CLI reports TPR
COORD_LIMIT = 2 ** 24                        # coordinates are clamped here so OpenCV's int math cannot overflow
RECT_COLUMNS = 5                             # left top width height score
ELLIPSE_DET_COLUMNS = 6                      # ra rb angle cx cy score


class Roc(NamedTuple):
    """The merged ROC: rows of DiscROC.txt and ContROC.txt, thresholds ascending (FP descending)."""
    disc: np.ndarray   # float64 (M, 3): TPR, FP, score threshold
    cont: np.ndarray   # float64 (M, 2): continuous TPR, FP
    faces: int         # annotated faces (the TPR denominator)
    images: int


class ImageResult(NamedTuple):
    """One image's statistics per distinct score threshold, thresholds ascending."""
    thresholds: np.ndarray   # float64 (T,)
    tp_disc: np.ndarray      # float64 (T,): matched pairs with IoU > 0.5
    tp_cont: np.ndarray      # float64 (T,): sum of matched IoUs
    fp: np.ndarray           # float64 (T,): kept detections - tp_disc


class Region(NamedTuple):
    """A filled region clipped to the image: mask[r, c] is pixel (x0 + c, y0 + r)."""
    x0: int
    y0: int
    mask: np.ndarray   # bool (h, w)
    area: int


_EMPTY = Region(0, 0, np.zeros((0, 0), dtype=bool), 0)


def _round_point(v: float) -> int:
    """cvRound(float(v)): float32, then round half to even, as cvPointFrom32f(cvPoint2D32f(...))."""
    return int(np.rint(np.float32(min(max(v, -COORD_LIMIT), COORD_LIMIT))))


def _window(x_lo: int, x_hi: int, y_lo: int, y_hi: int, width: int,
            height: int) -> tuple[int, int, int, int] | None:
    """Inclusive pixel window clipped to the image, or None when nothing is left."""
    x_lo, x_hi = max(x_lo, 0), min(x_hi, width - 1)
    y_lo, y_hi = max(y_lo, 0), min(y_hi, height - 1)
    return None if x_lo > x_hi or y_lo > y_hi else (x_lo, x_hi, y_lo, y_hi)


def rect_region(left: float, top: float, w: float, h: float, width: int, height: int) -> Region:
    """Filled rectangle (corners inclusive, as cvRectangle with CV_FILLED) in a width x height image."""
    x1, y1 = _round_point(left), _round_point(top)
    x2, y2 = _round_point(left + w), _round_point(top + h)
    win = _window(min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2), width, height)
    if win is None:
        return _EMPTY
    x_lo, x_hi, y_lo, y_hi = win
    mask = np.ones((y_hi - y_lo + 1, x_hi - x_lo + 1), dtype=bool)
    return Region(x_lo, y_lo, mask, mask.size)


def ellipse_region(ra: float, rb: float, angle: float, cx: float, cy: float, width: int, height: int) -> Region:
    """Filled ellipse (radii px, angle radians, centre px) drawn as the official program draws it."""
    x, y = _round_point(cx), _round_point(cy)
    axes = (int(min(ra, COORD_LIMIT)), int(min(rb, COORD_LIMIT)))   # static_cast<int>: truncation
    # the reader stores (pi - t) * 180 / pi, the drawer passes 180 - that to cvEllipse
    degrees = 180.0 - (math.pi - angle) * 180.0 / math.pi
    reach = max(axes) + 2   # polygon vertices are rounded to pixels: keep a margin
    win = _window(x - reach, x + reach, y - reach, y + reach, width, height)
    if win is None:
        return _EMPTY
    x_lo, x_hi, y_lo, y_hi = win
    canvas = np.zeros((y_hi - y_lo + 1, x_hi - x_lo + 1), dtype=np.uint8)
    # drawing is translation invariant, so the window gives the image's pixels exactly
    cv2.ellipse(canvas, (x - x_lo, y - y_lo), axes, degrees, 0, 360, 1, thickness=-1, lineType=cv2.LINE_8)
    mask = canvas.astype(bool)
    return Region(x_lo, y_lo, mask, int(np.count_nonzero(mask)))


def region_iou(a: Region, b: Region) -> float:
    """|a and b| / |a or b| in pixels (0 when both are empty)."""
    x_lo, y_lo = max(a.x0, b.x0), max(a.y0, b.y0)
    x_hi = min(a.x0 + a.mask.shape[1], b.x0 + b.mask.shape[1])
    y_hi = min(a.y0 + a.mask.shape[0], b.y0 + b.mask.shape[0])
    inter = 0
    if x_lo < x_hi and y_lo < y_hi:
        inter = int(np.count_nonzero(a.mask[y_lo - a.y0:y_hi - a.y0, x_lo - a.x0:x_hi - a.x0]
                                     & b.mask[y_lo - b.y0:y_hi - b.y0, x_lo - b.x0:x_hi - b.x0]))
    union = a.area + b.area - inter
    return inter / union if union else 0.0


def _detection_region(det: np.ndarray, width: int, height: int) -> Region:
    """Region of one detection row: 5 columns rectangle, 6 columns ellipse (score last)."""
    if len(det) == RECT_COLUMNS:
        return rect_region(*det[:4], width, height)
    return ellipse_region(*det[:5], width, height)


def image_results(annotations: np.ndarray, detections: np.ndarray, size: tuple[int, int]) -> ImageResult:
    """Per-threshold statistics of one image: annotations (N, 5) ellipses, detections (K, 5|6), size (w, h)."""
    width, height = size
    if len(detections) == 0:
        zero = np.zeros(1)
        return ImageResult(np.array([NO_DETECTION_THRESHOLD]), zero, zero.copy(), zero.copy())
    faces = [ellipse_region(*a, width, height) for a in annotations]
    dets = [_detection_region(d, width, height) for d in detections]
    iou = np.array([[region_iou(f, d) for d in dets] for f in faces]).reshape(len(faces), len(dets))  # (N, K)
    scores = detections[:, -1]
    thresholds = np.unique(scores)   # ascending
    overlapping = (iou > 0).any(axis=0)   # (K,): only these can change the matching
    n = len(thresholds)
    tp_disc, tp_cont, fp = np.zeros(n), np.zeros(n), np.zeros(n)
    matched_cols = -1
    disc, cont = 0, 0.0
    # sweep thresholds downwards: the kept set only grows, so the assignment is recomputed
    # only when a detection overlapping some face joins
    for j in range(n - 1, -1, -1):
        kept = scores >= thresholds[j]
        cols = np.flatnonzero(kept & overlapping)
        if len(cols) != matched_cols:
            matched_cols = len(cols)
            rows, picked = linear_sum_assignment(iou[:, cols], maximize=True)
            pairs = iou[rows, cols[picked]]
            pairs = pairs[pairs > 0]
            disc = int(np.count_nonzero(pairs > DISCRETE_IOU))
            cont = sum(pairs.tolist())   # left to right, as the C++ loop adds
        tp_disc[j], tp_cont[j], fp[j] = disc, cont, np.count_nonzero(kept) - disc
    return ImageResult(thresholds, tp_disc, tp_cont, fp)


def merge_results(results: Sequence[ImageResult], faces: int) -> Roc:
    """Merge per-image results as the official program: one row per distinct threshold, ascending."""
    thresholds = np.concatenate([r.thresholds for r in results])
    # an image's state at threshold t is its row at its smallest threshold >= t, or nothing kept
    # beyond its largest: add each row as a step (row - next row) and sum the steps from the top
    steps = []
    for r in results:
        values = np.stack([r.tp_disc, r.tp_cont, r.fp], axis=1)   # (T, 3)
        steps.append(values - np.vstack([values[1:], np.zeros((1, 3))]))
    steps = np.concatenate(steps)   # (sum T, 3)
    unique, inverse = np.unique(thresholds, return_inverse=True)
    per_threshold = np.stack([np.bincount(inverse, weights=steps[:, c], minlength=len(unique))
                              for c in range(3)], axis=1)   # (M, 3)
    totals = np.cumsum(per_threshold[::-1], axis=0)[::-1]   # (M, 3) state at each threshold
    tp_disc, tp_cont, fp = np.rint(totals[:, 0]), totals[:, 1], np.rint(totals[:, 2])
    if faces:
        tpr_disc, tpr_cont = tp_disc / faces, tp_cont / faces
    else:   # without any face the C++ prints "0 0" for TPR and FP on every row
        tpr_disc = tpr_cont = fp = np.zeros(len(unique))
    disc = np.stack([tpr_disc, fp, unique], axis=1)
    cont = np.stack([tpr_cont, fp], axis=1)
    return Roc(disc, cont, faces, len(results))


def _image_arrays(k: int, ann: np.ndarray, det: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image k's annotations as float64 (N, 5) and detections as float64 (K, 5|6), checked."""
    ann = np.asarray(ann, dtype=np.float64).reshape(-1, len(ELLIPSE_COLUMNS))
    det = np.asarray(det, dtype=np.float64)
    det = det.reshape(-1, det.shape[-1] if det.ndim == 2 else RECT_COLUMNS)
    if det.shape[1] not in (RECT_COLUMNS, ELLIPSE_DET_COLUMNS):
        raise DataError(f'image {k}: detections need 5 columns (x y w h score) or 6 (ra rb angle cx cy score), '
                        f'found {det.shape[1]}')
    if not (np.isfinite(ann).all() and np.isfinite(det).all()):
        raise DataError(f'image {k}: expected finite annotation and detection values, found NaN or infinity')
    if (ann[:, :2] < 0).any() or (det.shape[1] == ELLIPSE_DET_COLUMNS and (det[:, :2] < 0).any()):
        raise DataError(f'image {k}: expected ellipse radii >= 0, found a negative one')
    return ann, det


def score_detections(annotations: Sequence[np.ndarray], detections: Sequence[np.ndarray],
                     image_sizes: Sequence[tuple[int, int]]) -> Roc:
    """The FDDB ROC in memory; per image: ellipses (N, 5) ra rb angle cx cy, detections (K, 5) x y w h score
    or (K, 6) ra rb angle cx cy score, and the image size (width, height) in pixels."""
    if not len(annotations) == len(detections) == len(image_sizes):
        raise DataError(f'expected one entry per image, found {len(annotations)} annotations, '
                        f'{len(detections)} detections and {len(image_sizes)} sizes')
    if len(annotations) == 0:
        raise DataError('expected at least one image to evaluate, found none')
    results, faces = per_image_results(annotations, detections, image_sizes)
    return merge_results(results, sum(faces))


def per_image_results(annotations: Sequence[np.ndarray], detections: Sequence[np.ndarray],
                      image_sizes: Sequence[tuple[int, int]]) -> tuple[list[ImageResult], list[int]]:
    """Each image's `image_results` and face count (inputs as `score_detections`): `merge_results` of
    any selection of them is the ROC of those images."""
    results, faces = [], []
    for k, (ann, det, size) in enumerate(zip(annotations, detections, image_sizes)):
        ann, det = _image_arrays(k, ann, det)
        results.append(image_results(ann, det, size))
        faces.append(len(ann))
    return results, faces


def _image_sizes(entries: Sequence[ListEntry], images: Path, ext: str) -> list[tuple[int, int]]:
    """(width, height) of IMAGES/<name><ext> for every list entry; ImageError naming the list line."""
    sizes = []
    for entry in entries:
        path = images / (entry.name + ext)
        if not path.is_file():
            raise ImageError(f'{path}: no such image file (image {entry.name!r} of {entry.path}:{entry.line}; '
                             f'check --images and --ext)')
        sizes.append(read_image_size(path))
    return sizes


def evaluate_fddb(annotation_paths: Sequence[Path], detection_paths: Sequence[Path], list_paths: Sequence[Path],
                  images: Path, ellipse: bool = False, ext: str = '.jpg') -> Roc:
    """The FDDB ROC of detection files against ellipse files; files of each kind are concatenated in order."""
    return score_detections(*read_fddb(annotation_paths, detection_paths, list_paths, images, ellipse, ext))


def read_fddb(annotation_paths: Sequence[Path], detection_paths: Sequence[Path], list_paths: Sequence[Path],
              images: Path, ellipse: bool = False, ext: str = '.jpg'
              ) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[int, int]]]:
    """(annotations, detections, image sizes) per listed image, as `score_detections` takes them."""
    entries = [e for p in list_paths for e in list_entries(p)]
    if not entries:
        raise DataError(f'{", ".join(map(str, list_paths))}: no image names in the list')
    ann_blocks = itertools.chain.from_iterable(iter_blocks(p, ELLIPSE_COLUMNS, annotation=True)
                                               for p in annotation_paths)
    det_blocks = itertools.chain.from_iterable(iter_blocks(p, detection_columns(ellipse)) for p in detection_paths)
    annotations = align_blocks(entries, ann_blocks, 'annotations', annotation_paths)
    detections = align_blocks(entries, det_blocks, 'detections', detection_paths, suffix=ext)
    return annotations, detections, _image_sizes(entries, Path(images), ext)


def tpr_at_fp(curve: np.ndarray, fp: float) -> float:
    """Highest TPR of a curve (M, >=2) rows TPR, FP among rows with at most `fp` false positives; 0 if none."""
    ok = curve[:, 1] <= fp
    return float(curve[ok, 0].max()) if ok.any() else 0.0


def _g(v: float) -> str:
    """A double as C++ `ostream << double` prints it by default (%g, 6 significant digits)."""
    return '%g' % v


def roc_texts(roc: Roc) -> tuple[str, str]:
    """(DiscROC.txt, ContROC.txt) contents: rows `TPR FP threshold` and `TPR FP`."""
    disc = ''.join(f'{_g(t)} {_g(f)} {_g(s)}\n' for t, f, s in roc.disc.tolist())
    cont = ''.join(f'{_g(t)} {_g(f)}\n' for t, f in roc.cont.tolist())
    return disc, cont


def cli_eval(args: argparse.Namespace) -> int:
    """`fddb eval`: write PREFIXDiscROC.txt, PREFIXContROC.txt, PREFIXroc.png; print TPR at FP_POINTS."""
    roc = evaluate_fddb(args.annotations, args.detections, args.list, args.images,
                        ellipse=args.ellipse, ext=args.ext)
    disc_text, cont_text = roc_texts(roc)
    prefix = str(args.out)
    outputs = (prefix + 'DiscROC.txt', prefix + 'ContROC.txt', prefix + 'roc.png')
    atomic_write_text(outputs[0], disc_text)
    atomic_write_text(outputs[1], cont_text)
    plot_roc(roc.disc, roc.cont, outputs[2], label=Path(args.detections[0]).stem)
    print(f'images {roc.images}')
    print(f'faces {roc.faces}')
    for kind, curve in (('disc', roc.disc), ('cont', roc.cont)):
        for fp in FP_POINTS:
            print(f'{kind}_tpr@{fp} {tpr_at_fp(curve, fp):.4f}')
    for path in outputs:
        print(f'wrote {path}', file=sys.stderr)
    return 0
