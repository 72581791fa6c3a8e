"""WIDER FACE evaluation: a hand-made ground truth with hand-computed AP, prediction files, the real GT."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ifq_tinier_yolo.cli import main
from ifq_tinier_yolo.errors import DataError
from ifq_tinier_yolo.evaluation.wider import (box_overlaps, evaluate_wider, load_ground_truth, read_prediction_file,
                                              read_predictions, voc_ap)

from wider_gt_files import write_ground_truth

SHARED_GT = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'wider' / 'wider_face_split'
needs_shared = pytest.mark.skipif(not (SHARED_GT / 'wider_face_val.mat').is_file(),
                                  reason=f'official WIDER FACE val ground truth not found at {SHARED_GT}')

EVENT = '0--Parade'
# image a: four 40x40 faces in a row, the fourth kept only in `hard`; image b: one face; image c: no prediction file
FACES_A = np.array([[10, 10, 40, 40], [100, 10, 40, 40], [200, 10, 40, 40], [300, 10, 40, 40]])
FACES_B = np.array([[50, 50, 60, 60]])
FACES_C = np.array([[5, 5, 20, 20]])
KEEP = {'easy': ([1, 2, 3], [1], [1]), 'medium': ([1, 2, 3], [1], [1]), 'hard': ([1, 2, 3, 4], [1], [1])}


@pytest.fixture
def gt_dir(tmp_path: Path) -> Path:
    """The official .mat layout with one event of three images."""
    gt = tmp_path / 'gt'
    write_ground_truth(gt, EVENT, {'0_a': FACES_A, '0_b': FACES_B, '0_c': FACES_C}, KEEP)
    return gt


def write_preds(root: Path, name: str, rows: list[list[float]]) -> None:
    (root / EVENT).mkdir(parents=True, exist_ok=True)
    text = f'{name}.jpg\n{len(rows)}\n' + ''.join(' '.join(f'{v:g}' for v in r) + '\n' for r in rows)
    (root / EVENT / f'{name}.txt').write_text(text)


def perfect(shift_second: float = 0.0) -> tuple[list, list]:
    """Predictions equal to the faces, scores 9, 8, 7, 6 (image a) and 5 (image b)."""
    a = [list(map(float, f)) + [9.0 - k] for k, f in enumerate(FACES_A)]
    a[1][0] += shift_second
    return a, [list(map(float, FACES_B[0])) + [5.0]]


def evaluate(tmp_path: Path, gt_dir: Path, shift_second: float = 0.0) -> dict[str, float]:
    pred = tmp_path / f'pred{shift_second}'
    a, b = perfect(shift_second)
    write_preds(pred, '0_a', a)
    write_preds(pred, '0_b', b)
    gt = load_ground_truth(gt_dir)
    return evaluate_wider(read_predictions(pred, gt), gt)


def test_perfect_predictions(tmp_path: Path, gt_dir: Path):
    # the 4th face of image a is ignored in easy and medium: its prediction is then neither hit nor proposal
    assert evaluate(tmp_path, gt_dir) == {'easy': 1.0, 'medium': 1.0, 'hard': 1.0}


def test_one_shifted_box(tmp_path: Path, gt_dir: Path):
    # the second prediction moved 30 px right: IoU (41 * 11) / (2 * 41 * 41 - 451) = 0.155, a false proposal.
    # Normalised scores 1, .75, .5, .25, 0; by descending score (precision, recall):
    # easy (4 kept faces): hit 1/1 @ 1/4, miss 1/2 @ 1/4, hit 2/3 @ 2/4, ignored, hit 3/4 @ 3/4
    #   envelope 1, 3/4, 3/4 -> AP = (1 + 3/4 + 3/4) / 4 = 0.625
    # hard (5 kept faces): 1 @ 1/5, 1/2 @ 1/5, 2/3 @ 2/5, 3/4 @ 3/5, 4/5 @ 4/5
    #   envelope 1, 4/5, 4/5, 4/5 -> AP = (1 + 3 * 4/5) / 5 = 0.68
    assert box_overlaps(np.array([[100., 10, 140, 50]]), np.array([[130., 10, 170, 50]]))[0, 0] == \
        pytest.approx(451 / 2911)
    aps = evaluate(tmp_path, gt_dir, shift_second=30)
    assert aps['easy'] == pytest.approx(0.625)
    assert aps['medium'] == pytest.approx(0.625)
    assert aps['hard'] == pytest.approx(0.68)
    assert 1.0 - aps['easy'] == pytest.approx(0.375)


def test_voc_ap_skips_nan_precision():
    # no proposal at the top threshold: precision 0/0 is skipped, as MATLAB's max does
    assert voc_ap(np.array([0.0, 0.5, 1.0]), np.array([np.nan, 1.0, 0.5])) == pytest.approx(0.75)


def test_cli_counts_images(tmp_path: Path, gt_dir: Path, capsys):
    pred = tmp_path / 'pred'
    a, b = perfect()
    write_preds(pred, '0_a', a)
    write_preds(pred, '0_b', b)
    assert main(['wider', 'eval', '--pred', str(pred), '--gt', str(gt_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == ['images 2 of 3', 'easy AP 1.0000', 'medium AP 1.0000',
                                                    'hard AP 1.0000']


def test_cli_min_faces_keeps_the_crowded_images(tmp_path: Path, gt_dir: Path, capsys):
    pred = tmp_path / 'pred'
    a, b = perfect()
    b[0][0] += 100                              # image b's one face missed
    write_preds(pred, '0_a', a)
    write_preds(pred, '0_b', b)
    args = ['wider', 'eval', '--pred', str(pred), '--gt', str(gt_dir)]
    assert main(args) == 0
    assert 'easy AP 1.0000' not in capsys.readouterr().out
    assert main(args + ['--min-faces', '2']) == 0   # image a (4 faces) only
    assert capsys.readouterr().out.splitlines() == ['images 1 of 3', 'easy AP 1.0000', 'medium AP 1.0000',
                                                    'hard AP 1.0000']
    assert main(args + ['--min-faces', '-1']) != 0
    assert '--min-faces -1' in capsys.readouterr().err


def test_prediction_file_crlf_and_errors(tmp_path: Path):
    path = tmp_path / '0_a.txt'
    path.write_bytes(b'0--Parade/0_a.jpg\r\n2\r\n1 2 3 4 0.5\r\n5 6 7 8 0.25\r\n\r\n')
    np.testing.assert_array_equal(read_prediction_file(path), [[1, 2, 3, 4, 0.5], [5, 6, 7, 8, 0.25]])
    path.write_text('0_a\n0\n')
    assert read_prediction_file(path).shape == (0, 5)
    for text, message in [('0_a\n2\n1 2 3 4 0.5\n', r'0_a\.txt:2: expected 2 box lines after the count, found 1'),
                          ('0_a\n1\n1 2 x 4 0.5\n', r'0_a\.txt:3: expected 5 numbers `x y w h score`'),
                          ('0_b\n0\n', r"0_a\.txt:1: expected the image name '0_a'"),
                          ('0_a\nx\n', r'0_a\.txt:2: expected the number of boxes')]:
        path.write_text(text)
        with pytest.raises(DataError, match=message):
            read_prediction_file(path)


def test_unknown_image_and_missing_files(tmp_path: Path, gt_dir: Path):
    gt = load_ground_truth(gt_dir)
    write_preds(tmp_path / 'pred', '0_zzz', [])
    with pytest.raises(DataError, match=r"0_zzz\.txt: image '0--Parade/0_zzz' is not in the ground truth"):
        read_predictions(tmp_path / 'pred', gt)
    with pytest.raises(DataError, match=r"found 1 unknown, e\.g\. '0--Parade/0_a\.jpg'"):
        evaluate_wider({'0--Parade/0_a.jpg': np.zeros((0, 5))}, gt)
    (gt_dir / 'wider_hard_val.mat').unlink()
    with pytest.raises(DataError, match=r'wider_hard_val\.mat: ground-truth file not found'):
        load_ground_truth(gt_dir)


@needs_shared
def test_real_ground_truth_structure():
    gt = load_ground_truth(SHARED_GT)
    assert len(gt.boxes) == 3226
    assert sum(len(b) for b in gt.boxes.values()) == 39708   # faces in the official val set
    key = '13--Interview/13_Interview_Interview_On_Location_13_186'
    assert key in gt.boxes and gt.boxes[key].shape[1] == 4
    kept = {s: sum(len(k) for k in gt.keep[s].values()) for s in ('easy', 'medium', 'hard')}
    assert kept['easy'] < kept['medium'] < kept['hard'] <= 39708
    for setting in kept:
        for key, keep in gt.keep[setting].items():
            assert keep.dtype == np.int64 and (keep >= 0).all() and (keep < len(gt.boxes[key])).all()
