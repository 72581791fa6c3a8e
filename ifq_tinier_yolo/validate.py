"""Quick validation during training: the FDDB-style dev benchmark on the WIDER val subset.

The dev benchmark (as in shared/reference/fddb) has one ellipse per valid WIDER val face of at
least 8x8 px: the ellipse inscribed in the box (`boxes.fddb_ellipses`, major axis first). Scored with
the official FDDB semantics (`evaluation.fddb`); the headline is the discrete TPR at 100 FP.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from .boxes import fddb_ellipses
from .datasets.wider import WiderImage, read_wider
from .defaults import DEFAULT_NMS
from .boxes import corners
from .engine.nms import iou_matrix
from .evaluation.fddb import Roc, score_detections, tpr_at_fp
from .imageio import read_image
from .model.predict import detect_batch
from .model.tinier_yolo import TinierYolo

MIN_FACE = 8                 # faces smaller than this (either side) are not in the benchmark
SIZE_BINS = (8, 16, 24, 32, 64)   # face height bins (px) of the recall-by-size report; the last is open
MATCH_IOU = 0.5              # a face counts as found by a box of at least this IoU (as FDDB's discrete score)
CONFIDENT = 0.5              # score of the "boxes per image" count
VAL_CONF = 0.01              # low threshold so the ROC covers the whole range
VAL_NMS = DEFAULT_NMS
BATCH = 8


def threshold_at_fp(disc: np.ndarray, fp: float) -> float:
    """The lowest score threshold of a discrete ROC (rows TPR, FP, threshold) with at most `fp` false positives."""
    ok = disc[disc[:, 1] <= fp]
    return float(ok[:, 2].min()) if len(ok) else float('inf')


CROWD_MIN_FACES = 10         # benchmark faces that make an image a crowd scene (crowd_items)


def crowd_items(wider_root: Path, count: int, seed: int = 0) -> list[WiderImage]:
    """`count` WIDER train images (a seeded draw, in name order) with at least CROWD_MIN_FACES faces of the
    benchmark's sizes, from the events the val subset lacks: crowd scenes of small faces, which the dev
    benchmark (portraits of two events) hardly has. The shipped network was trained on these images (so
    was YuNet: WIDER train), so they rank inference settings side by side, not models."""
    val_events = {it.name.split('/')[0] for it in read_wider(wider_root, 'val', drop_invalid=True)}
    items = [it for it in read_wider(wider_root, 'train', drop_invalid=True, min_size=MIN_FACE)
             if len(it.boxes) >= CROWD_MIN_FACES and it.name.split('/')[0] not in val_events]
    random.Random(seed).shuffle(items)
    return sorted(items[:count], key=lambda it: it.name)


class DevBenchmark:
    """The WIDER val subset (or `crowd` crowd-scene images of crowd_items), images held in memory, scored FDDB-style."""

    def __init__(self, wider_root: Path, max_images: int = 0, crowd: int = 0):
        items = crowd_items(wider_root, crowd) if crowd else read_wider(wider_root, 'val', drop_invalid=True,
                                                                          min_size=MIN_FACE)
        if max_images:
            items = items[:max_images]
        self.names = [it.name for it in items]     # '<event>/<file>.jpg'
        self.images = [read_image(it.path) for it in items]
        self.ellipses = [fddb_ellipses(it.boxes) for it in items]
        self.boxes = [np.asarray(it.boxes[:, :4], dtype=np.float64) for it in items]

    def detections(self, model: TinierYolo, img_size: int) -> list[np.ndarray]:
        """Per image float64 (N, 5) x, y, w, h, score in original pixels."""
        out = []
        for i in range(0, len(self.images), BATCH):
            out += detect_batch(model, self.images[i:i + BATCH], img_size, VAL_CONF, VAL_NMS)
        return out

    def roc(self, detections: list[np.ndarray]) -> Roc:
        """The FDDB ROC of per-image (N, 5) x, y, w, h, score detections."""
        sizes = [(im.shape[1], im.shape[0]) for im in self.images]
        return score_detections(self.ellipses, detections, sizes)

    def score(self, detections: list[np.ndarray]) -> dict[str, float]:
        """Discrete TPR at 50/100/500 FP, continuous TPR at 100 FP, and at the 100-FP threshold:
        recall by face height, the median IoU of the faces found, boxes per image at score >= 0.5."""
        roc = self.roc(detections)
        row = {f'tpr@{fp}fp': round(tpr_at_fp(roc.disc, fp), 4) for fp in (50, 100, 500)}
        row['cont_tpr@100fp'] = round(tpr_at_fp(roc.cont, 100), 4)
        row.update(self.by_size(detections, threshold_at_fp(roc.disc, 100)))
        row['boxes@0.5'] = round(float(np.mean([np.count_nonzero(d[:, 4] >= CONFIDENT) for d in detections])), 2)
        return row

    def by_size(self, detections: list[np.ndarray], threshold: float) -> dict[str, float]:
        """Recall per face-height bin and the median best IoU of the found faces, counting the boxes
        scoring at least `threshold` (a face is found by a box of IoU >= MATCH_IOU)."""
        heights, best = [], []
        for faces, dets in zip(self.boxes, detections):
            kept = dets[dets[:, 4] >= threshold]
            iou = iou_matrix(corners(faces), corners(kept)) if len(faces) and len(kept) else np.zeros((len(faces), 1))
            heights.append(faces[:, 3])
            best.append(iou.max(axis=1) if iou.size else np.zeros(len(faces)))
        heights, best = np.concatenate(heights), np.concatenate(best)
        found = best >= MATCH_IOU
        edges = (*SIZE_BINS, np.inf)
        row = {}
        for lo, hi in zip(edges[:-1], edges[1:]):
            in_bin = (heights >= lo) & (heights < hi)
            name = f'recall_{lo}-{hi}px' if np.isfinite(hi) else f'recall_{lo}+px'
            row[name] = round(float(found[in_bin].mean()), 4) if in_bin.any() else float('nan')
        row['median_iou'] = round(float(np.median(best[found])), 4) if found.any() else 0.0
        return row

    def evaluate(self, model: TinierYolo, img_size: int) -> dict[str, float]:
        """Detect with the (eval-mode) model at `img_size` and score."""
        return self.score(self.detections(model, img_size))
