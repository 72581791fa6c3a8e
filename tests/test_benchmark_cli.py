"""`fddb detect` and `wider predict`: official file formats line by line, bad images, --skip-existing, --stretch."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ifq_tinier_yolo.apps.benchmark import stretch_boxes
from ifq_tinier_yolo.evaluation.wider import read_prediction_file

from cli_helpers import run
from fddb_files import read_detections

FOLD_1 = ['2002/08/11/big/img_591', '2002/08/26/big/img_265', '2003/01/01/big/img_missing']
FOLD_2 = ['2002/07/19/big/img_130']
SIZES = {FOLD_1[0]: (60, 40), FOLD_1[1]: (32, 48), FOLD_2[0]: (50, 50)}   # (width, height)


pytestmark = pytest.mark.usefixtures('torch_one_thread')


def noise(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def fddb_tree(tmp_path: Path) -> Path:
    """folds/FDDB-fold-0{1,2}.txt (+ an ellipse list to ignore) and images/<name>.jpg; FOLD_1[2] has no image."""
    folds, images = tmp_path / 'folds', tmp_path / 'images'
    folds.mkdir()
    (folds / 'FDDB-fold-01.txt').write_text('\n'.join(FOLD_1) + '\n')
    (folds / 'FDDB-fold-02.txt').write_text('\n'.join(FOLD_2) + '\n')
    (folds / 'FDDB-fold-01-ellipseList.txt').write_text('not a fold list\n')
    for k, (name, (w, h)) in enumerate(SIZES.items()):
        path = images / f'{name}.jpg'
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), noise(w, h, k))
    return tmp_path


def fddb_args(tree: Path, *extra: str) -> list[str]:
    return ['fddb', 'detect', '--folds-dir', str(tree / 'folds'), '--images', str(tree / 'images'),
            '--out', str(tree / 'out'), *extra]


def parse_fddb(path: Path, columns: int) -> list[tuple[str, list[list[str]]]]:
    """Blocks of a detection file, checking the official layout line by line."""
    lines = path.read_text().split('\n')
    assert lines[-1] == ''   # ends with a newline, no blank lines inside
    lines, blocks, i = lines[:-1], [], 0
    while i < len(lines):
        name, count = lines[i], int(lines[i + 1])
        rows = [line.split(' ') for line in lines[i + 2:i + 2 + count]]
        assert all(len(r) == columns and all(float(v) == float(v) for v in r) for r in rows)
        blocks.append((name, rows))
        i += 2 + count
    return blocks


def test_fddb_rectangles(capsys, fddb_tree: Path, torch_flags: list[str]):
    rc, out, err = run(capsys, *fddb_args(fddb_tree), *torch_flags)
    assert rc == 1 and out == ''   # one unreadable image
    assert f'skipped: {fddb_tree / "images" / FOLD_1[2]}.jpg: no such image file (written with 0 detections)' in err
    assert 'fold 01: 3 images, ' in err and '1 failures' in err and 'fold 02: 1 images, ' in err
    assert sorted(p.name for p in (fddb_tree / 'out').iterdir()) == ['fold-01-out.txt', 'fold-02-out.txt']
    blocks = parse_fddb(fddb_tree / 'out' / 'fold-01-out.txt', 5)
    assert [name for name, _ in blocks] == FOLD_1
    assert blocks[2][1] == []
    for name, rows in blocks[:2]:
        width, height = SIZES[name]
        assert rows
        for left, top, w, h, score in (map(float, r) for r in rows):
            assert 0 <= left <= left + w <= width + 0.01 and 0 <= top <= top + h <= height + 0.01
            assert 0 <= score <= 1
        scores = [float(r[4]) for r in rows]
        assert scores == sorted(scores, reverse=True)
    parsed = read_detections(fddb_tree / 'out' / 'fold-01-out.txt')   # the evaluator's own reader
    assert [name for name, _ in parsed] == FOLD_1


def test_fddb_ellipses_inscribed_in_the_boxes(capsys, fddb_tree: Path, torch_flags: list[str]):
    run(capsys, *fddb_args(fddb_tree, '--folds', '2'), *torch_flags)
    rects = parse_fddb(fddb_tree / 'out' / 'fold-02-out.txt', 5)
    rc, _, _ = run(capsys, *fddb_args(fddb_tree, '--folds', '2', '--ellipse'), *torch_flags)
    assert rc == 0
    ellipses = parse_fddb(fddb_tree / 'out' / 'fold-02-out.txt', 6)
    assert [n for n, _ in ellipses] == FOLD_2 and len(ellipses[0][1]) == len(rects[0][1]) > 0
    for rect, ell in zip(rects[0][1], ellipses[0][1]):
        left, top, w, h, score = map(float, rect)
        ra, rb, angle, cx, cy, e_score = map(float, ell)
        # the major semi-axis first, as FDDB annotates (boxes.fddb_ellipses)
        assert ell[2] == ('1.570796' if h >= w else '0.000000') and e_score == score
        np.testing.assert_allclose([ra, rb, cx, cy], [max(w, h) / 2, min(w, h) / 2, left + w / 2, top + h / 2],
                                   atol=0.02)
    assert len(read_detections(fddb_tree / 'out' / 'fold-02-out.txt', ellipse=True)) == 1


def test_fddb_fold_selection_and_skip_existing(capsys, fddb_tree: Path, torch_flags: list[str]):
    rc, _, _ = run(capsys, *fddb_args(fddb_tree, '--folds', '2'), *torch_flags)
    assert rc == 0 and [p.name for p in (fddb_tree / 'out').iterdir()] == ['fold-02-out.txt']
    done = fddb_tree / 'out' / 'fold-02-out.txt'
    done.write_text('kept\n')
    rc, _, err = run(capsys, *fddb_args(fddb_tree, '--skip-existing'), *torch_flags)
    assert rc == 1 and done.read_text() == 'kept\n' and f'fold 02: kept {done}' in err
    assert (fddb_tree / 'out' / 'fold-01-out.txt').is_file()


@pytest.mark.parametrize('extra, message', [
    (['--folds', '7'], 'error: --folds: no FDDB-fold-07.txt in '),
    (['--folds', 'one'], "error: --folds 'one': expected comma-separated fold numbers"),
    (['--stretch', '0'], 'error: --stretch 0.0 must be a positive factor'),
    (['--ext', 'jpg'], "error: --ext 'jpg' must start with a dot"),
])
def test_fddb_bad_options(capsys, fddb_tree: Path, torch_flags: list[str], extra: list[str], message: str):
    rc, _, err = run(capsys, *fddb_args(fddb_tree, *extra), *torch_flags)
    assert rc == 1 and err.startswith(message) and err.count('\n') == 1
    assert not (fddb_tree / 'out').exists()


def test_fddb_no_folds_is_one_line_error(capsys, tmp_path: Path, torch_flags: list[str]):
    (tmp_path / 'folds').mkdir()
    (tmp_path / 'images').mkdir()
    rc, _, err = run(capsys, *fddb_args(tmp_path), *torch_flags)
    assert rc == 1 and err == f'error: {tmp_path / "folds"}: no FDDB-fold-XX.txt fold lists in this folder\n'


def test_fddb_stretch(capsys, fddb_tree: Path, torch_flags: list[str]):
    run(capsys, *fddb_args(fddb_tree, '--folds', '2'), *torch_flags)
    plain = parse_fddb(fddb_tree / 'out' / 'fold-02-out.txt', 5)[0][1]
    run(capsys, *fddb_args(fddb_tree, '--folds', '2', '--stretch', '1.3'), *torch_flags)
    tall = parse_fddb(fddb_tree / 'out' / 'fold-02-out.txt', 5)[0][1]
    for a, b in zip(plain, tall):
        left, top, w, h, _ = map(float, a)
        expected = stretch_boxes(np.array([[left, top, w, h, 0.5]]), 1.3, SIZES[FOLD_2[0]][1])[0]
        np.testing.assert_allclose([float(v) for v in b[:4]], expected[:4], atol=0.02)


def test_stretch_boxes_about_the_centre_clipped():
    boxes = np.array([[10.0, 20.0, 8.0, 10.0, 0.9], [0.0, 1.0, 4.0, 10.0, 0.5]])
    out = stretch_boxes(boxes, 1.5, height=30)   # first clipped at the bottom, second at the top
    np.testing.assert_allclose(out, [[10.0, 17.5, 8.0, 12.5, 0.9], [0.0, 0.0, 4.0, 13.5, 0.5]])
    assert stretch_boxes(boxes, 1.0, height=30) is boxes


WIDER_GT = """0--Parade/0_Parade_marchingband_1_20.jpg
1
10 12 20 24 0 0 0 0 0 0
0--Parade/0_Parade_Parade_0_904.jpg
0
0 0 0 0 0 0 0 0 0 0
1--Handshaking/1_Handshaking_Handshaking_1_94.jpg
2
1 2 3 4 0 0 0 0 0 0
5 6 7 8 0 0 0 1 0 0
"""


@pytest.fixture
def wider_tree(tmp_path: Path) -> Path:
    """A WIDER layout with three val images; the Handshaking one has no image file."""
    root = tmp_path / 'wider'
    (root / 'wider_face_split').mkdir(parents=True)
    (root / 'wider_face_split' / 'wider_face_val_bbx_gt.txt').write_text(WIDER_GT)
    for k, name in enumerate(['0--Parade/0_Parade_marchingband_1_20.jpg', '0--Parade/0_Parade_Parade_0_904.jpg']):
        path = root / 'WIDER_val' / 'images' / name
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), noise(48 + 16 * k, 40, k))
    return root


def wider_args(root: Path, *extra: str) -> list[str]:
    return ['wider', 'predict', '--wider-root', str(root), '--split', 'val', '--out', str(root.parent / 'pred'), *extra]


def test_wider_predict_files(capsys, wider_tree: Path, torch_flags: list[str]):
    pred = wider_tree.parent / 'pred'
    rc, out, err = run(capsys, *wider_args(wider_tree), *torch_flags)
    assert rc == 1 and out == ''
    missing = wider_tree / 'WIDER_val' / 'images' / '1--Handshaking' / '1_Handshaking_Handshaking_1_94.jpg'
    assert f'skipped: {missing}: no such image file' in err
    assert 'wider predict: 3 images, ' in err and '1 failures' in err
    files = sorted(p.relative_to(pred).as_posix() for p in pred.rglob('*') if p.is_file())
    assert files == ['0--Parade/0_Parade_Parade_0_904.txt', '0--Parade/0_Parade_marchingband_1_20.txt']
    for rel, width in [('0--Parade/0_Parade_marchingband_1_20.txt', 48),
                       ('0--Parade/0_Parade_Parade_0_904.txt', 64)]:
        lines = (pred / rel).read_text().split('\n')
        assert lines[0] == Path(rel).stem and lines[-1] == ''
        count = int(lines[1])
        assert count == len(lines) - 3 > 0
        for row in lines[2:-1]:
            x, y, w, h, score = map(float, row.split(' '))
            assert 0 <= x <= x + w <= width + 0.01 and 0 <= y <= y + h <= 40.01 and 0 <= score <= 1
        assert read_prediction_file(pred / rel).shape == (count, 5)   # the evaluator's own reader


def test_wider_skip_existing_fills_in_the_missing(capsys, wider_tree: Path, torch_flags: list[str]):
    pred = wider_tree.parent / 'pred'
    run(capsys, *wider_args(wider_tree), *torch_flags)
    kept = pred / '0--Parade' / '0_Parade_marchingband_1_20.txt'
    kept.write_text('kept\n')
    missing = wider_tree / 'WIDER_val' / 'images' / '1--Handshaking' / '1_Handshaking_Handshaking_1_94.jpg'
    missing.parent.mkdir(parents=True)
    assert cv2.imwrite(str(missing), noise(40, 40))
    rc, _, err = run(capsys, *wider_args(wider_tree, '--skip-existing'), *torch_flags)
    assert rc == 0 and '2 kept from before' in err
    assert kept.read_text() == 'kept\n'
    assert (pred / '1--Handshaking' / '1_Handshaking_Handshaking_1_94.txt').is_file()


def test_wider_missing_images_folder_is_one_line_error(capsys, wider_tree: Path, torch_flags: list[str]):
    (wider_tree / 'WIDER_val' / 'images').rename(wider_tree / 'elsewhere')
    rc, _, err = run(capsys, *wider_args(wider_tree), *torch_flags)
    assert rc == 1 and err.startswith('error: ') and 'images folder not found' in err and err.count('\n') == 1
