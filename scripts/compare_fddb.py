"""Is detector A better than detector B on an FDDB-style benchmark, or is it the luck of the images?

Scores two sets of detection files (`fddb detect` outputs of the same images) and a paired
bootstrap over the images: each resample draws the images with replacement, and both detectors'
discrete TPR at the same false-positive count is computed on it (`evaluation.fddb.merge_results`
of the drawn images). Prints each TPR, the difference and its 95% interval, and the share of
resamples in which A is ahead. On the 178-image dev benchmark (540 faces) one face is 0.0019 of
TPR; differences between training rounds of 0.01-0.02 sit inside the interval (weights/README.md).

    python scripts/compare_fddb.py --folds-dir ../shared/reference/fddb/FDDB-folds \\
        --images ../shared/data/wider/WIDER_val/images --a runs/a/fold-01-out.txt --b runs/b/fold-01-out.txt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ifq_tinier_yolo.errors import IfqError                                                        # noqa: E402
from ifq_tinier_yolo.evaluation.fddb import merge_results, per_image_results, read_fddb, tpr_at_fp   # noqa: E402


def paired_bootstrap(a: list, b: list, faces: list[int], fp: float, resamples: int,
                     seed: int = 0) -> tuple[float, float, np.ndarray]:
    """Per-image results of two detectors on the same images (`per_image_results`) -> (TPR of A, TPR
    of B, (resamples,) differences A - B over paired image resamples)."""
    def tpr(results: list, idx: np.ndarray) -> float:
        return tpr_at_fp(merge_results([results[i] for i in idx], int(np.sum(np.take(faces, idx)))).disc, fp)
    every = np.arange(len(faces))
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    for r in range(resamples):
        idx = rng.integers(len(faces), size=len(faces))
        diffs[r] = tpr(a, idx) - tpr(b, idx)
    return tpr(a, every), tpr(b, every), diffs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--folds-dir', type=Path, required=True, help='FDDB-folds: FDDB-fold-XX.txt and -ellipseList.txt')
    p.add_argument('--folds', default='01', help='comma-separated fold numbers (default 01)')
    p.add_argument('--images', type=Path, required=True)
    p.add_argument('--a', type=Path, nargs='+', required=True, help="detector A's detection files, one per fold")
    p.add_argument('--b', type=Path, nargs='+', required=True, help="detector B's detection files")
    p.add_argument('--fp', type=float, default=100, help='false positives at which TPR is read (default 100)')
    p.add_argument('--resamples', type=int, default=2000)
    p.add_argument('--ext', default='.jpg')
    args = p.parse_args()
    folds = [f.strip() for f in args.folds.split(',')]
    lists = [args.folds_dir / f'FDDB-fold-{f}.txt' for f in folds]
    ellipses = [args.folds_dir / f'FDDB-fold-{f}-ellipseList.txt' for f in folds]
    try:
        ann, det_a, sizes = read_fddb(ellipses, args.a, lists, args.images, ext=args.ext)
        _, det_b, _ = read_fddb(ellipses, args.b, lists, args.images, ext=args.ext)
        res_a, faces = per_image_results(ann, det_a, sizes)
        res_b, _ = per_image_results(ann, det_b, sizes)
    except IfqError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    tpr_a, tpr_b, diffs = paired_bootstrap(res_a, res_b, faces, args.fp, args.resamples)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    print(f'{len(faces)} images, {sum(faces)} faces, TPR at {args.fp:g} false positives')
    print(f'A {tpr_a:.4f}  B {tpr_b:.4f}  A - B {tpr_a - tpr_b:+.4f}  95% interval [{lo:+.4f}, {hi:+.4f}]  '
          f'A ahead in {np.mean(diffs > 0):.0%} of {args.resamples} resamples')
    return 0


if __name__ == '__main__':
    sys.exit(main())
