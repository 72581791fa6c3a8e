"""WIDER FACE ground truth written in the official .mat layout, for the evaluation tests."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import scipy.io


def cells(items: list) -> np.ndarray:
    """A MATLAB cell column (n, 1) holding `items`."""
    out = np.empty((len(items), 1), dtype=object)
    for k, item in enumerate(items):
        out[k, 0] = item
    return out


def write_ground_truth(gt: Path, event: str, faces: Mapping[str, np.ndarray],
                       keep: Mapping[str, Iterable[list[int]]]) -> None:
    """gt/wider_face_val.mat (one event: image names -> (N, 4) x y w h faces) and per setting
    gt/wider_{setting}_val.mat (per image, the 1-based indices of the faces it keeps)."""
    gt.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(gt / 'wider_face_val.mat', {
        'event_list': cells([np.array([event])]),
        'file_list': cells([cells([np.array([name]) for name in faces])]),
        'face_bbx_list': cells([cells([np.asarray(f, dtype=np.int32) for f in faces.values()])])})
    for setting, keeps in keep.items():
        scipy.io.savemat(gt / f'wider_{setting}_val.mat', {
            'gt_list': cells([cells([np.array(k, dtype=np.uint8).reshape(-1, 1) for k in keeps])])})
