"""Batch commands (detect on folders, fddb detect, wider predict) go on past a bad image, then
--skip-existing fills in only what is missing (docs/ERRORS.md, "Batch commands")."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ifq_tinier_yolo.cli import main

# `models` is a pytest fixture: imported, it serves this module
from robust_cases import FIXTURE_WIDER, IMG_SIZE, WIDER_NAME, Models, encoded, models, noise

pytestmark = pytest.mark.usefixtures('torch_one_thread')


def mtimes(paths: list[Path]) -> list[int]:
    return [p.stat().st_mtime_ns for p in paths]


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob('*') if p.name.endswith('.tmp')]


def test_detect_folder_goes_on_and_skip_existing_fills_in(tmp_path: Path, models: Models, capfd):
    src, ann, jsonl = tmp_path / 'in', tmp_path / 'ann', tmp_path / 'faces.jsonl'
    good = ['a.jpg', 'b.png', 'sub/e.png']
    for k, name in enumerate(good):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(encoded(Path(name).suffix, noise((30 + 8 * k, 40, 3), seed=k)))
    (src / 'c.jpg').write_bytes(b'')
    (src / 'd.jpg').write_bytes(encoded('.jpg', noise((30, 40, 3)))[:500])
    argv = ['detect', str(src), '--out', str(ann), '--json', str(jsonl), '--model', str(models.ifq),
            '--img-size', IMG_SIZE]
    assert main(argv) == 1
    err = capfd.readouterr().err.splitlines()
    assert err == [f'skipped: {src / "c.jpg"}: empty file', f'skipped: {src / "d.jpg"}: truncated JPEG file '
                   f'(its end is missing)', err[-1]]
    assert err[-1].startswith('detect: 3 images, ') and ', 2 failures, ' in err[-1]
    assert sorted(p.relative_to(ann).as_posix() for p in ann.rglob('*') if p.is_file()) == sorted(good)
    first = jsonl.read_text()
    assert [line.split('"')[3] for line in first.splitlines()] == [str(src / n) for n in sorted(good)]
    assert no_temp_files(tmp_path)

    (ann / 'b.png').unlink()
    kept = [ann / 'a.jpg', ann / 'sub' / 'e.png']
    kept_times = mtimes(kept)
    assert main(argv + ['--skip-existing']) == 1   # the two bad files fail again
    err = capfd.readouterr().err.splitlines()
    assert err[-1].startswith('detect: 1 images, ') and '2 skipped (done before)' in err[-1]
    assert (ann / 'b.png').is_file() and mtimes(kept) == kept_times
    assert jsonl.read_text() == first
    assert no_temp_files(tmp_path)


def test_fddb_detect_goes_on_and_skip_existing_fills_in(tmp_path: Path, models: Models, capfd):
    folds, images, out = tmp_path / 'folds', tmp_path / 'images', tmp_path / 'out'
    folds.mkdir()
    (folds / 'FDDB-fold-01.txt').write_text('2002/a\n2002/bad\n2002/b\n')
    (folds / 'FDDB-fold-02.txt').write_text('2003/c\n')
    (images / '2002').mkdir(parents=True)
    (images / '2003').mkdir()
    for k, name in enumerate(('2002/a', '2002/b', '2003/c')):
        (images / f'{name}.jpg').write_bytes(encoded('.jpg', noise((40, 48, 3), seed=k)))
    (images / '2002' / 'bad.jpg').write_text('not a jpeg')
    argv = ['fddb', 'detect', '--folds-dir', str(folds), '--images', str(images), '--out', str(out),
            '--model', str(models.ifq), '--img-size', IMG_SIZE, '--conf', '0.3']
    assert main(argv) == 1
    err = capfd.readouterr().err
    assert f'skipped: {images / "2002" / "bad.jpg"}: not a readable image' in err and 'Traceback' not in err
    assert 'fold 01: 3 images, ' in err and '1 failures' in err
    fold1, fold2 = out / 'fold-01-out.txt', out / 'fold-02-out.txt'
    lines = fold1.read_text().splitlines()
    names = [line for line in lines if line.startswith('2002/')]
    assert names == ['2002/a', '2002/bad', '2002/b'] and lines[lines.index('2002/bad') + 1] == '0'
    second = fold2.read_text()
    assert second.startswith('2003/c\n')
    assert no_temp_files(tmp_path)

    fold2.unlink()
    kept = mtimes([fold1])
    assert main(argv + ['--skip-existing']) == 0   # fold 01 (with the bad image) is kept, not redone
    err = capfd.readouterr().err
    assert f'fold 01: kept {fold1}' in err
    assert mtimes([fold1]) == kept and fold2.read_text() == second


def test_wider_predict_goes_on_and_skip_existing_fills_in(tmp_path: Path, models: Models, capfd):
    root = tmp_path / 'wider'
    shutil.copytree(FIXTURE_WIDER, root)
    (root / 'WIDER_train' / 'images' / WIDER_NAME).write_bytes(b'')
    pred = tmp_path / 'pred'
    argv = ['wider', 'predict', '--wider-root', str(root), '--split', 'train', '--out', str(pred),
            '--model', str(models.ifq), '--img-size', IMG_SIZE]
    assert main(argv) == 1
    err = capfd.readouterr().err
    assert f'skipped: {root / "WIDER_train" / "images" / WIDER_NAME}: empty file' in err
    assert 'wider predict: 3 images, ' in err and '1 failures' in err
    event = pred / '13--Interview'
    written = sorted(p.name for p in event.iterdir())
    assert written == ['13_Interview_Interview_On_Location_13_138.txt', '13_Interview_Interview_Sequences_13_929.txt']
    assert no_temp_files(tmp_path)

    redo, keep = event / written[0], event / written[1]
    content = redo.read_text()
    redo.unlink()
    kept = mtimes([keep])
    assert main(argv + ['--skip-existing']) == 1   # the empty image fails again
    err = capfd.readouterr().err
    assert '1 kept from before' in err and '1 failures' in err
    assert redo.read_text() == content and mtimes([keep]) == kept
    assert sorted(p.name for p in event.iterdir()) == written
