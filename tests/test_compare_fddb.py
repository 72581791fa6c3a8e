"""scripts/compare_fddb.py: the paired bootstrap of two detectors' TPR on the same images, and its CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ifq_tinier_yolo.evaluation.fddb import per_image_results, score_detections, tpr_at_fp

from script_modules import SCRIPTS, load_script

SCRIPT = SCRIPTS / 'compare_fddb.py'
UPRIGHT = np.pi / 2


@pytest.fixture(scope='module')
def cf():
    return load_script('compare_fddb')


def images(n: int, seed: int):
    """n 100x100 images with one upright face each, at random places."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(30, 70, (n, 2))
    return [np.array([[20, 15, UPRIGHT, x, y]]) for x, y in centres], [(100, 100)] * n


def test_equal_detectors_never_differ(cf):
    ann, sizes = images(12, 0)
    dets = [np.array([[a[0, 3] - 15, a[0, 4] - 20, 30, 40, 0.9]]) for a in ann]
    res, faces = per_image_results(ann, dets, sizes)
    tpr_a, tpr_b, diffs = cf.paired_bootstrap(res, res, faces, fp=5, resamples=50)
    assert tpr_a == tpr_b == tpr_at_fp(score_detections(ann, dets, sizes).disc, 5) == 1.0
    assert not diffs.any()


def test_the_better_detector_is_ahead_in_every_resample(cf):
    ann, sizes = images(20, 1)
    good = [np.array([[a[0, 3] - 15, a[0, 4] - 20, 30, 40, 0.9]]) for a in ann]
    # B finds only every other face and boxes background elsewhere
    bad = [g if k % 2 else np.array([[0, 0, 10, 10, 0.9]]) for k, g in enumerate(good)]
    res_a, faces = per_image_results(ann, good, sizes)
    res_b, _ = per_image_results(ann, bad, sizes)
    tpr_a, tpr_b, diffs = cf.paired_bootstrap(res_a, res_b, faces, fp=100, resamples=200)
    assert (tpr_a, tpr_b) == (1.0, 0.5)
    assert (diffs > 0).all() and 0.2 < np.median(diffs) < 0.8


def test_cli_reports_both_and_the_interval(tmp_path: Path):
    ann, sizes = images(6, 2)
    folds, pics = tmp_path / 'folds', tmp_path / 'images'
    folds.mkdir()
    pics.mkdir()
    names = [f'img_{k}' for k in range(len(ann))]
    (folds / 'FDDB-fold-01.txt').write_text(''.join(n + '\n' for n in names))
    (folds / 'FDDB-fold-01-ellipseList.txt').write_text(''.join(
        f'{n}\n1\n{a[0, 0]} {a[0, 1]} {a[0, 2]} {a[0, 3]} {a[0, 4]} 1\n' for n, a in zip(names, ann)))
    import cv2
    for n in names:
        cv2.imwrite(str(pics / f'{n}.jpg'), np.zeros((100, 100, 3), np.uint8))
    det_a, det_b = tmp_path / 'a.txt', tmp_path / 'b.txt'
    det_a.write_text(''.join(f'{n}\n1\n{a[0, 3] - 15} {a[0, 4] - 20} 30 40 0.9\n' for n, a in zip(names, ann)))
    det_b.write_text(''.join(f'{n}\n0\n' for n in names))
    run = subprocess.run([sys.executable, str(SCRIPT), '--folds-dir', str(folds), '--images', str(pics),
                          '--a', str(det_a), '--b', str(det_b), '--resamples', '50'], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert '6 images, 6 faces' in run.stdout and 'A 1.0000  B 0.0000  A - B +1.0000' in run.stdout
    assert 'A ahead in 100% of 50 resamples' in run.stdout
    det_b.write_text('img_0\n')                                    # truncated file: one line, exit 1
    run = subprocess.run([sys.executable, str(SCRIPT), '--folds-dir', str(folds), '--images', str(pics),
                          '--a', str(det_a), '--b', str(det_b)], capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.startswith('error: ') and run.stderr.count('\n') == 1
