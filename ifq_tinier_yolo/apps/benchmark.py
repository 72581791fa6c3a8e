"""Benchmark writers: `fddb detect` (official FDDB detection files) and `wider predict` (WIDER submissions).

Both go on past a bad image (reported on one stderr line; exit status 1 at the end), write every
file atomically, and with --skip-existing keep the files a previous run finished.

FDDB `--stretch F` multiplies each box height by F about the box centre (clipped to the image),
because FDDB's ellipses reach from the hairline to below the chin and are taller than the
WIDER-style boxes the detector learned; F = 1 writes boxes as detected.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from ..boxes import fddb_ellipses
from ..datasets import fddb, wider
from ..errors import ConfigError, DataError, ImageError
from ..imageio import read_image_sized
from .detect import detector_from_args, write_text
from .detector import Detector, no_detections, scale_boxes

FOLD_LIST = re.compile(r'^FDDB-fold-(\d+)\.txt$')


def detect_file(detector: Detector, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """(float64 (N, 5) x, y, w, h, score in the file's pixels, (width, height)); ImageError if unreadable."""
    image, size = read_image_sized(path)
    return scale_boxes(detector.detect_array(image), (image.shape[1], image.shape[0]), size), size


def stretch_boxes(boxes: np.ndarray, factor: float, height: int) -> np.ndarray:
    """float (N, 5) x, y, w, h, score -> heights times `factor` about each box centre, clipped to [0, height]."""
    if factor == 1.0:
        return boxes
    centre = boxes[:, 1] + boxes[:, 3] / 2
    top = np.clip(centre - boxes[:, 3] * factor / 2, 0, height)
    bottom = np.clip(centre + boxes[:, 3] * factor / 2, 0, height)
    out = boxes.copy()
    out[:, 1], out[:, 3] = top, bottom - top
    return out


def fddb_block(name: str, boxes: np.ndarray, ellipse: bool) -> str:
    """One image's block: name, count, then `left top width height score` or `ra rb angle cx cy score` lines."""
    lines = [name, str(len(boxes))]
    if ellipse:   # the ellipse inscribed in each box, major axis first as FDDB annotates
        rows = np.column_stack([fddb_ellipses(boxes), boxes[:, 4]])
        lines += [f'{ra:.2f} {rb:.2f} {angle:.6f} {cx:.2f} {cy:.2f} {score:.6f}'
                  for ra, rb, angle, cx, cy, score in rows]
    else:
        lines += [f'{x:.2f} {y:.2f} {w:.2f} {h:.2f} {score:.6f}' for x, y, w, h, score in boxes]
    return '\n'.join(lines) + '\n'


def find_folds(folds_dir: Path, wanted: str | None) -> list[tuple[int, Path]]:
    """(fold number, FDDB-fold-XX.txt) for all folds in folds_dir, or those listed as '1,2,..'."""
    if not folds_dir.is_dir():
        raise DataError(f'{folds_dir}: folds folder not found')
    found = {int(m[1]): p for p in sorted(folds_dir.iterdir()) if (m := FOLD_LIST.match(p.name))}
    if not found:
        raise DataError(f'{folds_dir}: no FDDB-fold-XX.txt fold lists in this folder')
    if wanted is None:
        return sorted(found.items())
    try:
        numbers = list(dict.fromkeys(int(v) for v in wanted.split(',')))
    except ValueError:
        raise ConfigError(f'--folds {wanted!r}: expected comma-separated fold numbers such as 1,2') from None
    for n in numbers:
        if n not in found:
            raise ConfigError(f'--folds: no FDDB-fold-{n:02d}.txt in {folds_dir} '
                              f'(found folds {", ".join(str(k) for k in sorted(found))})')
    return [(n, found[n]) for n in numbers]


def write_fold(detector: Detector, names: list[str], images: Path, ext: str, out_path: Path,
               ellipse: bool, stretch: float) -> tuple[int, int]:
    """Detect on every image of a fold and write its detection file; returns (detections, failures)."""
    blocks, detections, failures = [], 0, 0
    for name in tqdm(names, unit='image', file=sys.stderr, disable=not sys.stderr.isatty(), desc=out_path.name):
        try:
            boxes, (_, height) = detect_file(detector, images / f'{name}{ext}')
            boxes = stretch_boxes(boxes, stretch, height)
        except ImageError as e:
            # the fold file must list every image of the fold, in order
            tqdm.write(f'skipped: {e} (written with 0 detections)', file=sys.stderr)
            boxes, failures = no_detections(), failures + 1
        blocks.append(fddb_block(name, boxes, ellipse))
        detections += len(boxes)
    write_text(out_path, ''.join(blocks))
    return detections, failures


def cli_fddb_detect(args: argparse.Namespace) -> int:
    """`fddb detect`: one OUT/fold-XX-out.txt per fold; returns 1 if any image was unreadable."""
    if not (args.stretch > 0 and math.isfinite(args.stretch)):
        raise ConfigError(f'--stretch {args.stretch} must be a positive factor (1: boxes as detected)')
    if not args.ext.startswith('.'):
        raise ConfigError(f'--ext {args.ext!r} must start with a dot, such as .jpg')
    if not args.images.is_dir():
        raise DataError(f'{args.images}: FDDB images folder not found')
    folds = find_folds(args.folds_dir, args.folds)
    detector = detector_from_args(args)
    failures = 0
    for number, list_path in folds:
        out_path = args.out / f'fold-{number:02d}-out.txt'
        if args.skip_existing and out_path.is_file():
            print(f'fddb detect: fold {number:02d}: kept {out_path}', file=sys.stderr)
            continue
        names = fddb.read_fold_list(list_path)
        detections, fold_failures = write_fold(detector, names, args.images, args.ext, out_path,
                                               args.ellipse, args.stretch)
        failures += fold_failures
        print(f'fddb detect: fold {number:02d}: {len(names)} images, {detections} detections, '
              f'{fold_failures} failures -> {out_path}', file=sys.stderr)
    return 1 if failures else 0


def wider_text(stem: str, boxes: np.ndarray) -> str:
    """A WIDER submission file: image name without extension, count, `x y w h score` lines."""
    rows = ''.join(f'{x:.2f} {y:.2f} {w:.2f} {h:.2f} {score:.6f}\n' for x, y, w, h, score in boxes)
    return f'{stem}\n{len(boxes)}\n{rows}'


def cli_wider_predict(args: argparse.Namespace) -> int:
    """`wider predict`: OUT/<event>/<name>.txt for every image of the split; returns 1 if any image failed."""
    items = wider.read_wider(args.wider_root, args.split, drop_invalid=False, check_images=False)
    img_dir = wider.images_dir(args.wider_root, args.split)
    if not img_dir.is_dir():
        raise DataError(f'{img_dir}: images folder not found '
                        f'(expected <wider-root>/WIDER_{args.split}/images/<event>/)')
    detector = detector_from_args(args)
    faces = kept = failures = 0
    for item in tqdm(items, unit='image', file=sys.stderr, disable=not sys.stderr.isatty()):
        name = PurePosixPath(item.name)   # '<event>/<file>.jpg'
        out_path = args.out / name.parent / f'{name.stem}.txt'
        if args.skip_existing and out_path.is_file():
            kept += 1
            continue
        try:
            boxes, _ = detect_file(detector, item.path)
        except ImageError as e:
            # no file: a later --skip-existing run fills it in
            tqdm.write(f'skipped: {e}', file=sys.stderr)
            failures += 1
            continue
        write_text(out_path, wider_text(name.stem, boxes))
        faces += len(boxes)
    print(f'wider predict: {len(items)} images, {faces} faces, {failures} failures, '
          f'{kept} kept from before -> {args.out}', file=sys.stderr)
    return 1 if failures else 0
