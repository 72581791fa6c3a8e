"""Quick validation during training: the FDDB-style dev benchmark on the WIDER val subset.

The dev benchmark (as in shared/reference/fddb) has one ellipse per valid WIDER val face of at
least 8x8 px: the ellipse inscribed in the box (`boxes.fddb_ellipses`, major axis first). Scored with
the official FDDB semantics (`evaluation.fddb`); the headline is the discrete TPR at 100 FP.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .boxes import fddb_ellipses
from .datasets.wider import read_wider
from .evaluation.fddb import Roc, score_detections, tpr_at_fp
from .imageio import read_image
from .model.predict import detect_batch
from .model.tinier_yolo import TinierYolo

MIN_FACE = 8                 # faces smaller than this (either side) are not in the benchmark
VAL_CONF = 0.01              # low threshold so the ROC covers the whole range
VAL_NMS = 0.45
BATCH = 8


class DevBenchmark:
    """The WIDER val subset, images held in memory, scored FDDB-style."""

    def __init__(self, wider_root: Path, max_images: int = 0):
        items = read_wider(wider_root, 'val', drop_invalid=True, min_size=MIN_FACE)
        if max_images:
            items = items[:max_images]
        self.names = [it.name for it in items]     # '<event>/<file>.jpg'
        self.images = [read_image(it.path) for it in items]
        self.ellipses = [fddb_ellipses(it.boxes) for it in items]

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
        """Discrete TPR at 50/100/500 FP and continuous TPR at 100 FP."""
        roc = self.roc(detections)
        row = {f'tpr@{fp}fp': round(tpr_at_fp(roc.disc, fp), 4) for fp in (50, 100, 500)}
        row['cont_tpr@100fp'] = round(tpr_at_fp(roc.cont, 100), 4)
        return row

    def evaluate(self, model: TinierYolo, img_size: int) -> dict[str, float]:
        """Detect with the (eval-mode) model at `img_size` and score."""
        return self.score(self.detections(model, img_size))
