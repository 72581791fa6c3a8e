"""WIDER FACE easy / medium / hard AP: the official protocol (MATLAB tool, `widerface_evaluate` port).

Semantics (PAPER.md, "WIDER FACE"): scores min-max normalised over all predictions; per image,
predictions by descending score each take the face of highest IoU (+1 pixel convention);
IoU >= threshold with a kept face not yet recalled recalls it, with an ignored face makes the
prediction ignored; 1000 thresholds `1 - (t+1)/1000`; precision = recalled / proposals,
recall = recalled / kept faces; VOC all-point AP. As in the official tools, an image without
faces or without predictions adds its kept faces to the denominator and nothing else.
Only images with a prediction file are evaluated.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.io

from ..boxes import corners
from ..errors import ConfigError, DataError
from ..textio import quote, read_lines

SETTINGS = ('easy', 'medium', 'hard')
THRESHOLDS = 1000
GT_FILE = 'wider_face_val.mat'
SETTING_FILE = 'wider_{}_val.mat'
PRED_COLUMNS = ('x', 'y', 'w', 'h', 'score')
MESSAGE_CHARS = 120   # longest quoted piece of a library's error message
COUNT_DIGITS = 18     # a box count has at most this many digits (int() refuses over 4300)


class WiderGroundTruth(NamedTuple):
    """Official val ground truth keyed by '<event>/<image name without .jpg>'."""
    boxes: dict[str, np.ndarray]              # float64 (N, 4) x y w h, pixels
    keep: dict[str, dict[str, np.ndarray]]    # setting -> key -> int64 (k,) 0-based indices of kept faces


def _load_mat(path: Path, keys: tuple[str, ...]) -> dict:
    if not path.is_file():
        raise DataError(f'{path}: ground-truth file not found (expected {GT_FILE} and '
                        f'{", ".join(SETTING_FILE.format(s) for s in SETTINGS)} in --gt)')
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises many types (MatReadError, ValueError, zlib.error, ...) for a damaged file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:MESSAGE_CHARS]
        raise DataError(f'{path}: not a readable MATLAB file ({first})') from None
    missing = [k for k in keys if k not in mat]
    if missing:
        raise DataError(f'{path}: not a WIDER FACE ground-truth file (no {", ".join(missing)})')
    return mat


def _cells(array: np.ndarray) -> list:
    """Elements of a MATLAB cell array (n, 1) or (1, n) as a flat list."""
    return list(np.asarray(array, dtype=object).reshape(-1))


def _text(cell: np.ndarray) -> str:
    """A MATLAB char array as a str."""
    return str(np.asarray(cell).reshape(-1)[0])


def load_ground_truth(gt_dir: str | Path) -> WiderGroundTruth:
    """Read wider_face_val.mat and wider_{easy,medium,hard}_val.mat from gt_dir."""
    gt_dir = Path(gt_dir)
    gt = _load_mat(gt_dir / GT_FILE, ('face_bbx_list', 'event_list', 'file_list'))
    events = [_text(e) for e in _cells(gt['event_list'])]
    files = [[_text(f) for f in _cells(fl)] for fl in _cells(gt['file_list'])]
    face_lists = [_cells(b) for b in _cells(gt['face_bbx_list'])]
    if len(events) != len(files) or [len(f) for f in files] != [len(b) for b in face_lists]:
        raise DataError(f'{gt_dir / GT_FILE}: event_list, file_list and face_bbx_list disagree in length')
    keys = [f'{event}/{name}' for event, names in zip(events, files) for name in names]
    boxes = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for bl in face_lists for b in bl]
    keep = {}
    for setting in SETTINGS:
        path = gt_dir / SETTING_FILE.format(setting)
        lists = [_cells(g) for g in _cells(_load_mat(path, ('gt_list',))['gt_list'])]
        # MATLAB indices are 1-based (and stored as uint8 where they fit)
        flat = [np.asarray(k).reshape(-1).astype(np.int64) - 1 for gl in lists for k in gl]
        if len(flat) != len(keys):
            raise DataError(f'{path}: gt_list has {len(flat)} images, {GT_FILE} has {len(keys)}')
        for key, idx, b in zip(keys, flat, boxes):
            if len(idx) and (idx.min() < 0 or idx.max() >= len(b)):
                raise DataError(f'{path}: keep index out of range for image {key} ({len(b)} faces)')
        keep[setting] = dict(zip(keys, flat))
    return WiderGroundTruth(dict(zip(keys, boxes)), keep)


def read_prediction_file(path: Path) -> np.ndarray:
    """Boxes of one submission file (name, count, `x y w h score` lines) as float64 (K, 5)."""
    lines = read_lines(path, 'prediction file')
    if len(lines) < 2:
        raise DataError(f'{path}:{max(len(lines), 1)}: expected an image name line and a count line, '
                        f'found end of file')
    stem = lines[0].replace('\\', '/').rsplit('/', 1)[-1]
    if stem.lower().endswith('.jpg'):
        stem = stem[:-4]
    if stem != path.stem:
        raise DataError(f'{path}:1: expected the image name {path.stem!r} (the file name), '
                        f'found {quote(lines[0])}')
    if not (lines[1].isascii() and lines[1].isdigit()) or len(lines[1]) > COUNT_DIGITS:
        raise DataError(f'{path}:2: expected the number of boxes (an integer >= 0), found {quote(lines[1])}')
    count = int(lines[1])
    if len(lines) - 2 != count:
        raise DataError(f'{path}:2: expected {count} box lines after the count, found {len(lines) - 2}')
    rows = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        try:
            row = [float(v) for v in fields]
        except ValueError:
            row = []
        if len(row) != len(PRED_COLUMNS) or not all(map(math.isfinite, row)):
            raise DataError(f'{path}:{number}: expected 5 numbers `x y w h score`, found {quote(line)}')
        rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(count, len(PRED_COLUMNS))


def read_predictions(pred_dir: str | Path, gt: WiderGroundTruth) -> dict[str, np.ndarray]:
    """Boxes (K, 5) of every `<event>/<name>.txt` under pred_dir, keyed like the ground truth."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError(f'{pred_dir}: prediction folder not found')
    preds = {}
    for path in sorted(pred_dir.glob('*/*.txt')):
        key = f'{path.parent.name}/{path.stem}'
        if key not in gt.boxes:
            raise DataError(f'{path}: image {key!r} is not in the ground truth')
        preds[key] = read_prediction_file(path)
    if not preds:
        raise DataError(f'{pred_dir}: no prediction files (expected <event>/<name>.txt)')
    return preds


def normalise_scores(preds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Copies with scores min-max scaled to [0, 1] over all predictions (all equal: all 1)."""
    scores = np.concatenate([p[:, 4] for p in preds.values()])
    lo, hi = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
    out = {}
    for key, p in preds.items():
        p = p.copy()
        p[:, 4] = (p[:, 4] - lo) / (hi - lo) if hi > lo else 1.0
        out[key] = p
    return out


def box_overlaps(boxes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """IoU (N, K) of x1 y1 x2 y2 boxes (N, 4) and (K, 4) with inclusive pixel corners (+1 areas)."""
    area_b = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)   # (N,)
    area_q = (query[:, 2] - query[:, 0] + 1) * (query[:, 3] - query[:, 1] + 1)   # (K,)
    iw = np.minimum(boxes[:, None, 2], query[None, :, 2]) - np.maximum(boxes[:, None, 0], query[None, :, 0]) + 1
    ih = np.minimum(boxes[:, None, 3], query[None, :, 3]) - np.maximum(boxes[:, None, 1], query[None, :, 1]) + 1
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)   # (N, K)
    union = area_b[:, None] + area_q[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def image_pr(pred: np.ndarray, gt: np.ndarray, kept: np.ndarray, iou: float) -> np.ndarray:
    """(THRESHOLDS, 2) proposals and recalled kept faces per threshold.

    pred (K, 5) x y w h score (normalised), gt (N, 4) x y w h, kept bool (N,): faces of the setting.
    """
    pred = pred[np.argsort(-pred[:, 4], kind='stable')]   # descending score, ties in file order
    overlaps = box_overlaps(corners(pred), corners(gt))   # (K, N), x2 = x + w as the official tools convert
    recalled = np.zeros(len(gt), dtype=bool)
    proposal = np.ones(len(pred), dtype=bool)
    recall_after = np.zeros(len(pred))   # (K,) faces recalled by predictions 0..h
    for h in range(len(pred)):
        best = int(np.argmax(overlaps[h]))
        if overlaps[h, best] >= iou:
            if not kept[best]:
                proposal[h] = False   # an ignored face: neither proposal nor hit
            else:
                recalled[best] = True
        recall_after[h] = np.count_nonzero(recalled)
    thresholds = 1 - (np.arange(THRESHOLDS) + 1) / THRESHOLDS
    n_kept = np.searchsorted(-pred[:, 4], -thresholds, side='right')   # (T,) predictions with score >= t
    proposals = np.concatenate([[0], np.cumsum(proposal)])[n_kept]
    hits = np.concatenate([[0], recall_after])[n_kept]
    return np.stack([proposals, hits], axis=1).astype(np.float64)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated area under precision(recall); NaN precisions are skipped as MATLAB's max does."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]   # precision envelope from the right
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def evaluate_wider(preds: dict[str, np.ndarray], gt: WiderGroundTruth, iou: float = 0.5) -> dict[str, float]:
    """AP per setting over the images of `preds` ('<event>/<name>' -> (K, 5) x y w h raw score); NaN: no face."""
    unknown = [key for key in preds if key not in gt.boxes]
    if unknown:
        raise DataError(f'expected images of the ground truth (\'<event>/<name>\' without .jpg), '
                        f'found {len(unknown)} unknown, e.g. {unknown[0]!r}')
    preds = normalise_scores({key: np.asarray(p, dtype=np.float64).reshape(-1, len(PRED_COLUMNS))
                              for key, p in preds.items()})
    aps = {}
    for setting in SETTINGS:
        curve = np.zeros((THRESHOLDS, 2))
        faces = 0
        for key, pred in preds.items():
            boxes, keep = gt.boxes[key], gt.keep[setting][key]
            faces += len(keep)
            if len(boxes) == 0 or len(pred) == 0:
                continue
            kept = np.zeros(len(boxes), dtype=bool)
            kept[keep] = True
            curve += image_pr(pred, boxes, kept, iou)
        if faces == 0:
            aps[setting] = float('nan')
            continue
        with np.errstate(invalid='ignore', divide='ignore'):
            precision = curve[:, 1] / curve[:, 0]   # NaN where nothing is proposed
        aps[setting] = voc_ap(curve[:, 1] / faces, precision)
    return aps


def cli_eval(args: argparse.Namespace) -> int:
    """`wider eval`: print the number of evaluated images and easy / medium / hard AP."""
    if not 0 < args.iou <= 1:
        raise ConfigError(f'--iou {args.iou}: expected a value in (0, 1]')
    if args.min_faces < 0:
        raise ConfigError(f'--min-faces {args.min_faces}: expected 0 or more')
    gt = load_ground_truth(args.gt)
    preds = {key: p for key, p in read_predictions(args.pred, gt).items() if len(gt.boxes[key]) >= args.min_faces}
    aps = evaluate_wider(preds, gt, args.iou)
    print(f'images {len(preds)} of {len(gt.boxes)}')
    for setting in SETTINGS:
        print(f'{setting} AP {aps[setting]:.4f}')
    return 0
