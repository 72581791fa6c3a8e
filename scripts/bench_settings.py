"""Time per image of detector settings on the dev images, side by side in one run.

    .venv/bin/python scripts/bench_settings.py MODEL[:SIZE[:LEVELS[:UPSCALE[:square]]]] ...

Each argument is one Detector: a model file, optionally its input side, pyramid levels and
upscale mode, off / auto / on (default: the model's size, the default levels, auto), e.g.
`weights/ifq_tinier_yolo.ifq weights/ifq_tinier_yolo.ifq:576:1:off weights/v1.ifq`; `square`
gives it each image padded to a square, which emulates the square canvases every detector ran on
before session 8 (the default when issue 14 was filed: `weights/v1.ifq:::off:square`). The images are
decoded once; every round runs each image through every Detector in turn, so all see the same
machine load; prints the median and mean milliseconds per image. Used to choose the default
detector settings (README, Results): a new default must be no slower than the old one.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ifq_tinier_yolo.apps.detector import Detector   # noqa: E402
from ifq_tinier_yolo.imageio import read_image       # noqa: E402
from ifq_tinier_yolo.netdef import LETTERBOX_FILL, PYRAMID_LEVELS    # noqa: E402

IMAGES = ROOT.parent / 'shared' / 'data' / 'wider' / 'WIDER_val' / 'images'


def square(image: np.ndarray) -> np.ndarray:
    """The image centred on a square of its longer side, padded with the letterbox fill."""
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.full((side, side, 3), LETTERBOX_FILL, dtype=image.dtype)
    out[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = image
    return out


def detector(spec: str) -> Detector:
    """MODEL[:SIZE[:LEVELS[:UPSCALE[:square]]]] -> a Detector with those settings."""
    model, *rest = spec.split(':')
    size = int(rest[0]) if rest and rest[0] else None
    levels = int(rest[1]) if len(rest) > 1 and rest[1] else PYRAMID_LEVELS
    return Detector.load(model, img_size=size, levels=levels, upscale=rest[2] if len(rest) > 2 else 'auto')


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('settings', nargs='+', help='MODEL[:SIZE[:LEVELS[:UPSCALE[:square]]]]')
    p.add_argument('--images', type=Path, default=IMAGES, help='folder of .jpg images (searched recursively)')
    p.add_argument('--count', type=int, default=40, help='images used (the first in name order)')
    p.add_argument('--rounds', type=int, default=3, help='passes over the images')
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    images = [read_image(path) for path in sorted(args.images.rglob('*.jpg'))[:args.count]]
    if not images:
        print(f'error: no .jpg images under {args.images}', file=sys.stderr)
        return 1
    detectors = [detector(s) for s in args.settings]
    squared = any(s.endswith(':square') for s in args.settings)
    squares = [square(image) for image in images] if squared else images
    inputs = [squares if s.endswith(':square') else images for s in args.settings]
    times: list[list[float]] = [[] for _ in detectors]
    for _ in range(args.rounds):
        for i in range(len(images)):
            for d, t, ims in zip(detectors, times, inputs):
                start = time.perf_counter()
                d.detect_array(ims[i])
                t.append(time.perf_counter() - start)
    print(f'{len(images)} images x {args.rounds} rounds, one thread, ms per image')
    print('| setting | backend | median | mean |')
    print('| --- | --- | --- | --- |')
    for spec, d, t in zip(args.settings, detectors, times):
        print(f'| {spec} | {d.backend} | {np.median(t) * 1e3:.2f} | {np.mean(t) * 1e3:.2f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
