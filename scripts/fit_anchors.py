"""Fit YOLOv2 anchors to WIDER FACE train faces: IoU k-means on (w, h) at the network input.

Each image is letterboxed to --img-size (scale = img_size / long side, read from the image file
unless --long-side says otherwise); valid faces whose shorter side is >= --min-px after that
are clustered with distance 1 - IoU (boxes sharing a centre) and a median update. Prints the
anchors in grid cells of each head of the --net table (the smallest to the finest head), and
the mean best IoU of the fitted and of the current anchors. Usage:

    python scripts/fit_anchors.py --wider-root ../shared/data/wider
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifq_tinier_yolo import netdef  # noqa: E402
from ifq_tinier_yolo.datasets.wider import read_wider  # noqa: E402
from ifq_tinier_yolo.imageio import image_size  # noqa: E402
from ifq_tinier_yolo.model.loss import shape_iou  # noqa: E402

MAX_ITERATIONS = 300
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'wider'


def wh_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """float (N, 2), (K, 2) sizes -> (N, K) IoU of boxes sharing a centre (the loss's shape_iou)."""
    return shape_iou(torch.from_numpy(wh), torch.from_numpy(anchors)).numpy()


def iou_kmeans(wh: np.ndarray, k: int, restarts: int, seed: int) -> tuple[np.ndarray, float]:
    """(K, 2) anchors sorted by area, and their mean best IoU over `wh`; best of `restarts` runs."""
    rng = np.random.default_rng(seed)
    best, best_iou = None, -1.0
    for _ in range(restarts):
        anchors = wh[rng.choice(len(wh), k, replace=False)].copy()
        assign = None
        for _ in range(MAX_ITERATIONS):
            new_assign = wh_iou(wh, anchors).argmax(1)
            if assign is not None and np.array_equal(new_assign, assign):
                break
            assign = new_assign
            for j in range(k):
                if (assign == j).any():   # an empty cluster keeps its anchor
                    anchors[j] = np.median(wh[assign == j], axis=0)
        mean_iou = float(wh_iou(wh, anchors).max(1).mean())
        if mean_iou > best_iou:
            best, best_iou = anchors, mean_iou
    return best[np.argsort(best.prod(1))], best_iou


def face_sizes(root: Path, img_size: int, min_px: float, long_side: int) -> np.ndarray:
    """float64 (N, 2) w, h in network pixels of the valid train faces >= min_px after letterboxing."""
    sizes = []
    for item in read_wider(root, 'train'):
        side = long_side or max(image_size(item.path))
        sizes.append(item.boxes[:, 2:4].astype(np.float64) * (img_size / side))
    wh = np.concatenate(sizes)
    return wh[wh.min(1) >= min_px]


def main() -> int:
    """Fit and print the anchors; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--wider-root', type=Path, default=DEFAULT_ROOT)
    parser.add_argument('--img-size', type=int, default=netdef.INPUT_SIZE, help='network input side, pixels')
    parser.add_argument('--net', choices=tuple(netdef.NETWORKS), default='v1',
                        help='layer table: one cluster per anchor of all its heads; the smallest anchors '
                             'go to the finest head, keeping each head\'s anchor count')
    parser.add_argument('--min-px', type=float, default=6, help='smallest face side kept, network pixels')
    parser.add_argument('--restarts', type=int, default=5)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--long-side', type=int, default=0,
                        help='assume every image has this long side instead of reading it (0: read)')
    args = parser.parse_args()

    layers = netdef.NETWORKS[args.net]
    current = netdef.anchors_of(layers)
    strides = netdef.head_strides(layers)
    wh = face_sizes(args.wider_root, args.img_size, args.min_px, args.long_side)
    anchors, mean_iou = iou_kmeans(wh, sum(map(len, current)), args.restarts, args.seed)   # sorted by area
    print(f'faces {len(wh)} (valid, >= {args.min_px:g} px at {args.img_size} input)')
    print(f'# Anchors (w, h) in grid cells of each head, IoU k-means on WIDER train faces '
          f'>= {args.min_px:g} px at {args.img_size} input (scripts/fit_anchors.py --net {args.net}).')
    start = 0
    for i in sorted(range(len(strides)), key=lambda i: strides[i]):   # finest head: smallest anchors
        n, stride = len(current[i]), strides[i]
        fitted = anchors[start:start + n]
        start += n
        print(f'{layers[netdef.heads(layers)[i]].name} (stride {stride}): ('
              + ', '.join(f'({w / stride:.3f}, {h / stride:.3f})' for w, h in fitted) + ')')
    now = np.concatenate([np.array(a) * s for a, s in zip(current, strides)])
    print(f'mean best IoU {mean_iou:.4f}')
    print(f'mean best IoU of the current netdef anchors {float(wh_iou(wh, now).max(1).mean()):.4f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
