"""FDDB file readers only the tests need, built on the package's block reader (datasets/fddb.py)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ifq_tinier_yolo.datasets.fddb import ELLIPSE_COLUMNS, align_blocks, detection_columns, iter_blocks, list_entries


def read_ellipses(path: str | Path) -> list[tuple[str, np.ndarray]]:
    """(name, float64 (N, 5) ra rb angle cx cy) per image of an ellipse annotation file."""
    return [(b.name, b.regions) for b in iter_blocks(path, ELLIPSE_COLUMNS, annotation=True)]


def read_detections(path: str | Path, ellipse: bool = False) -> list[tuple[str, np.ndarray]]:
    """(name, float64 (N, 5) left top width height score, or (N, 6) ra rb angle cx cy score) per image."""
    return [(b.name, b.regions) for b in iter_blocks(path, detection_columns(ellipse))]


def read_fold(list_path: str | Path, ellipse_path: str | Path) -> list[tuple[str, np.ndarray]]:
    """(name, float64 (N, 5) ellipses) per image; DataError unless both files name the same images in order."""
    entries = list_entries(list_path)
    regions = align_blocks(entries, iter_blocks(ellipse_path, ELLIPSE_COLUMNS, annotation=True),
                           'annotations', [Path(ellipse_path)])
    return [(entry.name, r) for entry, r in zip(entries, regions)]


def ellipse_to_box(ra: float, rb: float, angle: float, cx: float,
                   cy: float) -> tuple[float, float, float, float]:
    """(x, y, w, h) of the axis-aligned box around the ellipse (radii px, angle radians, centre px)."""
    # ra lies along direction `angle` from the x axis, rb perpendicular to it
    half_w = math.hypot(ra * math.cos(angle), rb * math.sin(angle))
    half_h = math.hypot(ra * math.sin(angle), rb * math.cos(angle))
    return cx - half_w, cy - half_h, 2 * half_w, 2 * half_h
