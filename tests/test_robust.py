"""Robustness: every bad input the table below lists, through `cli.main` (batch commands that
go on past a bad image: test_robust_batch.py; the builders: robust_cases.py).

Each table row builds one bad (or unusual) input under tmp_path, runs one command, and checks
what the user sees (docs/ERRORS.md is the same table in prose):
- 'error': exit status 1, stderr is exactly one line `error: ...` naming the file (and line),
  nothing on stdout, and no file under tmp_path created or changed;
- 'skipped': a per-image failure in a batch command: exit status 1, one `skipped: ...` line
  naming the file, then the command's summary line; no output written for the bad image;
- 'ok': an unusual input that works: exit status 0 and the expected result on stdout.
stderr is captured at the file-descriptor level (capfd), so anything an image library prints
itself counts too. Models are random-weight networks: the detections are arbitrary.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ifq_tinier_yolo.checkpoint import FORMAT
from ifq_tinier_yolo.cli import main

# `models` is a pytest fixture: imported, it serves this module
from robust_cases import (ANN, A_JPG, CONVERT, DETECT_TORCH, FDDB_ELLIPSES, FDDB_EVAL, FDDB_RECTS, IMG_SIZE, STATS,
                          TRAIN, WIDER_EVAL, WIDER_NAME, Case, Models, bad_kind_with_valid_crc, both,
                          checkpoint_file, cut_after, damaged, detect, detect_plain, encoded, fddb, fill,
                          flip_bit, folder, foreign_state, huge_png_header, image, model_cases, model_file,
                          models, newer_version, noise, our_checkpoint, set_line, snapshot, torch_file, wider,
                          wider_gt, write)

pytestmark = pytest.mark.usefixtures('torch_one_thread')


CASES: list[Case] = [
    # images
    Case('missing path', lambda t, m: None, detect('{t}/absent.jpg'), '{t}/absent.jpg: no such file or folder'),
    Case('zero-byte image', write('zero.jpg', b''), detect('{t}/zero.jpg'), '{t}/zero.jpg: empty file', 'skipped'),
    Case('truncated JPEG', write('cut.jpg', lambda: encoded('.jpg', noise((60, 80, 3)))[:3000]),
         detect('{t}/cut.jpg'), '{t}/cut.jpg: truncated JPEG file', 'skipped'),
    Case('truncated PNG', write('cut.png', lambda: encoded('.png', noise((60, 80, 3)))[:-20]),
         detect('{t}/cut.png'), '{t}/cut.png: truncated PNG file', 'skipped'),
    Case('PNG with damaged pixel data (CRC error)', write('crc.png', lambda: damaged('.png')),
         detect('{t}/crc.png'), '{t}/crc.png: not a readable image (libpng error', 'skipped'),
    Case('JPEG with damaged scan data (decodable)', write('bad.jpg', lambda: damaged('.jpg')),
         detect_plain('{t}/bad.jpg'), '"width": 80, "height": 60', 'ok'),
    Case('text file named .jpg', write('text.jpg', 'hello, I am text\n'), detect('{t}/text.jpg'),
         '{t}/text.jpg: not a readable image (corrupt, truncated or another format)', 'skipped'),
    Case('text file named .png', write('text.png', 'hello, I am text\n'), detect('{t}/text.png'),
         '{t}/text.png: not a readable image', 'skipped'),
    Case('PNG header claiming 40000x40000 pixels', write('huge.png', huge_png_header), detect('{t}/huge.png'),
         '{t}/huge.png: too large to decode', 'skipped'),
    Case('1x1 image', image('one.png', lambda: np.full((1, 1, 3), 128, np.uint8)), detect_plain('{t}/one.png'),
         '"width": 1, "height": 1, "faces": [', 'ok'),
    Case('10000x10000 image (shrunk to 8192 on read)', image('big.png', lambda: np.zeros((10000, 10000), np.uint8)),
         detect_plain('{t}/big.png'), '"width": 10000, "height": 10000, "faces": [', 'ok'),
    Case('grayscale PNG', image('gray.png', lambda: noise((30, 50))), detect_plain('{t}/gray.png'),
         '"width": 50, "height": 30', 'ok'),
    Case('RGBA PNG', image('rgba.png', lambda: noise((30, 50, 4))), detect_plain('{t}/rgba.png'),
         '"width": 50, "height": 30', 'ok'),
    Case('16-bit PNG', image('deep.png', lambda: noise((30, 50, 3), np.uint16, 65536)), detect_plain('{t}/deep.png'),
         '"width": 50, "height": 30', 'ok'),
    Case('16-bit grayscale PNG', image('gray16.png', lambda: noise((30, 50), np.uint16, 65536)),
         detect_plain('{t}/gray16.png'), '"width": 50, "height": 30', 'ok'),
    Case('image folder with no images', folder('docs', {'readme.txt': 'no images here'}), detect('{t}/docs'),
         '{t}/docs: no images in this folder or below'),
    Case('empty folder', folder('empty'), detect('{t}/empty'), '{t}/empty: no images in this folder or below'),
    Case('text file named .mp4', write('fake.mp4', 'not a video'), detect('{t}/fake.mp4'),
         '{t}/fake.mp4: cannot open as a video', 'skipped'),
    Case('--levels 0', A_JPG, detect('{t}/a.jpg', '--levels', '0'), 'levels 0 must be an integer from 1 to 4'),
    Case('--out under a file', both(A_JPG, write('file', 'x')),
         ('detect', '{t}/a.jpg', '--model', '{ifq}', '--img-size', IMG_SIZE, '--out', '{t}/file/ann'),
         '{t}/file'),
    Case('--skip-existing with a foreign JSON file',
         both(A_JPG, write('faces.jsonl', '{"image": "x.jpg"}\nnot json\n')),
         ('detect', '{t}/a.jpg', '--model', '{ifq}', '--json', '{t}/faces.jsonl', '--skip-existing'),
         '{t}/faces.jsonl:2: not a detect JSON record'),

    # WIDER FACE annotations (line numbers: 1 name, 2 count 4, 3-6 faces, 7 name, 8 count 7, ...)
    Case('WIDER face count too small', wider(set_line(1, '3')), STATS,
         ANN + ":6: expected an image path <event>/<file>.jpg (is the previous face count too small?)"),
    Case('WIDER face count too large', wider(set_line(1, '5')), STATS,
         ANN + ':7: expected face row 5 of 5'),
    Case('WIDER face count not an integer', wider(set_line(1, 'four')), STATS,
         ANN + ":2: expected the face count of 13--Interview/13_Interview_Interview_Sequences_13_929.jpg "
               "(one integer), found 'four'"),
    Case('WIDER non-integer face field', wider(set_line(2, '23 48 2x 27 0 0 0 0 0 0')), STATS,
         ANN + ":3: expected an integer w, found '2x'"),
    Case('WIDER fractional face field', wider(set_line(2, '23 48 21.5 27 0 0 0 0 0 0')), STATS,
         ANN + ":3: expected an integer w, found '21.5'"),
    Case('WIDER face row with 9 fields', wider(set_line(2, '23 48 21 27 0 0 0 0 0')), STATS,
         ANN + ':3: expected face row 1 of 4'),
    Case('WIDER negative face size', wider(set_line(2, '23 48 -21 27 0 0 0 0 0 0')), STATS,
         ANN + ':3: expected a non-negative face size w h, found -21 27'),
    Case('WIDER number beyond int32', wider(set_line(2, '99999999999999999999 48 21 27 0 0 0 0 0 0')), STATS,
         ANN + ":3: expected an integer x within +-2**31, found '99999999999999999999'"),
    Case('WIDER path outside the root', wider(set_line(0, '../../../etc/passwd.jpg')), STATS,
         ANN + ':1: expected an image path relative to the images folder'),
    Case('WIDER absolute path', wider(set_line(0, '/etc/passwd')), STATS,
         ANN + ':1: expected an image path relative to the images folder'),
    Case('WIDER control character in a path', wider(set_line(15, '13--Interview/no\x00face.jpg')), STATS,
         ANN + ":16: expected an image path of printable characters, found '13--Interview/no\\x00face.jpg'"),
    Case('WIDER missing image', wider(drop_image=WIDER_NAME), STATS,
         ANN + f':16: expected an existing image file {{t}}/wider/WIDER_train/images/{WIDER_NAME}, found no such file'),
    Case('WIDER truncated after a count', wider(cut_after(2)), STATS,
         ANN + ':2: expected face row 1 of 4'),
    Case('WIDER binary annotation file', both(wider(), write(ANN[4:], b'\x89PNG\r\n\x1a\n\x00\xff')), STATS,
         ANN + ': not a text annotation file'),
    Case('WIDER annotation file missing', lambda t, m: (t / 'wider').mkdir(), STATS,
         ANN + ': annotation file not found'),
    Case('WIDER bad annotation (wider predict)', wider(set_line(1, '3')),
         ('wider', 'predict', '--wider-root', '{t}/wider', '--split', 'train', '--out', '{t}/pred',
          '--model', '{ifq}', '--img-size', IMG_SIZE), ANN + ':6: expected an image path'),
    Case('WIDER CRLF line endings', wider(newline='\r\n'), STATS, 'images 3\nfaces 11\n', 'ok'),
    Case('WIDER UTF-8 byte-order mark', wider(bom=True), STATS, 'images 3\nfaces 11\n', 'ok'),
    Case('zero-byte image in the training set (data-loader worker)', wider(empty_image=WIDER_NAME),
         TRAIN[:-1] + ('1', '--out', '{t}/run'), '{t}/wider/WIDER_train/images/' + WIDER_NAME + ': empty file',
         logs=True),

    # FDDB (list.txt: a, b; ell.txt and det.txt: blocks a at line 1, b at line 4)
    Case('FDDB list and ellipse file disagree', fddb(ellipses=FDDB_ELLIPSES.replace('b\n', 'c\n')), FDDB_EVAL,
         "{t}/fddb/ell.txt:4: expected image 'b' ({t}/fddb/list.txt:2; blocks must follow the list order), found 'c'"),
    Case('FDDB ellipse file shorter than the list', fddb(ellipses='a\n1\n10 8 1.5 20 20  1\n'), FDDB_EVAL,
         "{t}/fddb/ell.txt:1: expected a block for image 'b' ({t}/fddb/list.txt:2) after this one, "
         "found the end of the annotations"),
    Case('FDDB detection file out of order', fddb(detections='b\n0\na\n1\n10 12 20 16 0.9\n'), FDDB_EVAL,
         "{t}/fddb/det.txt:1: expected image 'a' ({t}/fddb/list.txt:1; blocks must follow the list order), "
         "found 'b'"),
    Case('FDDB detection count too large', fddb(detections='a\n2\n10 12 20 16 0.9\nb\n0\n'), FDDB_EVAL,
         "{t}/fddb/det.txt:4: expected 5 numbers"),
    Case('FDDB rectangles read as ellipses', fddb(), FDDB_EVAL + ('--ellipse',),
         '{t}/fddb/det.txt:3: expected 6 numbers `ra rb angle cx cy score`'),
    Case('FDDB NaN score', fddb(detections=FDDB_RECTS.replace('0.9', 'nan')), FDDB_EVAL,
         "{t}/fddb/det.txt:3: expected a finite number for score"),
    Case('FDDB image missing', fddb(images=('a',)), FDDB_EVAL,
         "{t}/fddb/images/b.jpg: no such image file (image 'b' of {t}/fddb/list.txt:2"),
    Case('FDDB --out under a file', both(fddb(), write('file', 'x')), FDDB_EVAL[:-1] + ('{t}/file/r-',),
         '{t}/file/r-DiscROC.txt: cannot create its folder ({t}/file: '),
    Case('FDDB fold list with a space in a name', both(write('folds/FDDB-fold-01.txt', 'a\nb c\n'), folder('images')),
         ('fddb', 'detect', '--folds-dir', '{t}/folds', '--images', '{t}/images', '--out', '{t}/out',
          '--model', '{ifq}', '--img-size', IMG_SIZE),
         "{t}/folds/FDDB-fold-01.txt:2: expected one image name per line (names have no spaces), found 'b c'"),
    Case('FDDB files with CRLF line endings', fddb(newline='\r\n'), FDDB_EVAL, 'images 2\nfaces 2\n', 'ok'),

    # WIDER evaluation files
    Case('WIDER ground truth that is not a MATLAB file',
         both(wider_gt('0_a\n0\n'), write('gt/wider_face_val.mat', 'hello')), WIDER_EVAL,
         '{t}/gt/wider_face_val.mat: not a readable MATLAB file'),
    Case('WIDER prediction file with a wrong count', wider_gt('0_a\n3\n10 10 40 40 0.9\n'), WIDER_EVAL,
         '{t}/pred/0--Parade/0_a.txt:2: expected 3 box lines after the count, found 1'),

    # model files (.ifq), each through detect and report
    *model_cases('model file truncated', model_file(lambda d: d[:len(d) // 2]),
                 '{t}/m.ifq: truncated ('),
    *model_cases('model file with one bit flipped', model_file(flip_bit), '{t}/m.ifq: corrupted (CRC-32 mismatch)'),
    *model_cases('model file with a wrong magic', model_file(lambda d: b'NOTAMODL' + d[8:]),
                 '{t}/m.ifq: not an .ifq model file (wrong magic bytes)'),
    *model_cases('model file of a newer format version', model_file(newer_version),
                 '{t}/m.ifq: format version 4 is newer than this program reads (1, 2, 3)'),
    *model_cases('model file of zero bytes', model_file(lambda d: b''), '{t}/m.ifq: empty file (0 bytes)'),
    *model_cases('model file with a valid CRC but a bad layer table', model_file(bad_kind_with_valid_crc),
                 '{t}/m.ifq: layer conv1: malformed table row (kind 9'),
    *model_cases('checkpoint renamed to .ifq', lambda t, m: shutil.copy(m.pt, t / 'm.ifq'),
                 '{t}/m.ifq: not an .ifq model file (wrong magic bytes)'),
    Case('model file missing', lambda t, m: None, ('report', '--model', '{t}/absent.ifq'),
         '{t}/absent.ifq: no such model file'),
    Case('model of an unknown type', A_JPG,
         ('detect', '{t}/a.jpg', '--model', '{t}/a.jpg'), "{t}/a.jpg: unknown model file type '.jpg'"),

    # checkpoints that are not ours
    Case('foreign checkpoint (detect --backend torch)', both(A_JPG, torch_file('x.pt', foreign_state)),
         DETECT_TORCH, '{t}/x.pt: not an ifq-tinier-yolo checkpoint'),
    Case('foreign checkpoint (convert)', torch_file('x.pt', foreign_state), CONVERT,
         '{t}/x.pt: not an ifq-tinier-yolo checkpoint'),
    Case('foreign last.pt (train --resume)', both(wider(), torch_file('run/last.pt', foreign_state)),
         TRAIN + ('--out', '{t}/run', '--resume'), '{t}/run/last.pt: not an ifq-tinier-yolo checkpoint'),
    Case('foreign checkpoint (train --init)', both(wider(), torch_file('x.pt', foreign_state)),
         TRAIN + ('--out', '{t}/run', '--init', '{t}/x.pt'), '{t}/x.pt: not an ifq-tinier-yolo checkpoint'),
    Case('pickled module as checkpoint (convert)', torch_file('x.pt', lambda: torch.nn.Linear(2, 2)),
         CONVERT,
         '{t}/x.pt: not a plain checkpoint: it holds a torch.nn.modules.linear.Linear object'),
    Case('text file as checkpoint (convert)', write('x.pt', 'hello\n'), CONVERT,
         '{t}/x.pt: not a PyTorch checkpoint (neither a zip archive nor a pickle)'),
    Case('truncated checkpoint (convert)', checkpoint_file('x.pt', lambda d: d[:len(d) // 2]),
         CONVERT, '{t}/x.pt: damaged checkpoint archive (truncated'),
    Case('checkpoint with one bit flipped (detect --backend torch)', both(A_JPG, checkpoint_file('x.pt', flip_bit)),
         DETECT_TORCH, '{t}/x.pt: damaged checkpoint'),
    Case('checkpoint of a newer version (convert)', torch_file('x.pt', lambda: {'format': FORMAT, 'version': 3}),
         CONVERT, '{t}/x.pt: checkpoint version 3, this program reads 1, 2'),
    Case('float checkpoint (convert)', our_checkpoint('x.pt', quant='float'), CONVERT,
         "{t}/x.pt: trained with quant='float'; convert needs a hwgq network"),
    Case('convert --out under a file', write('file', 'x'), ('convert', '{pt}', '--out', '{t}/file/x.ifq'),
         '{t}/file/x.ifq: cannot create its folder ({t}/file: '),
    Case('train --out is a file', both(wider(), write('file', 'x')), TRAIN + ('--out', '{t}/file'), '{t}/file'),
    Case('weights-only checkpoint as last.pt (train --resume)', both(wider(), our_checkpoint('run/last.pt')),
         TRAIN + ('--out', '{t}/run', '--resume'),
         '{t}/run/last.pt: holds no resume state (optimizer, epoch, step, best missing); use --init to start from it'),
]


@pytest.mark.parametrize('case', CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, models: Models, capfd: pytest.CaptureFixture):
    case.build(tmp_path, models)
    before = snapshot(tmp_path)
    argv = [fill(a, tmp_path, models) for a in case.argv]
    expect = fill(case.expect, tmp_path, models)
    rc = main(argv)
    out, err = capfd.readouterr()
    lines = err.splitlines()
    assert 'Traceback' not in err
    if case.outcome == 'ok':
        assert rc == 0, err
        assert expect in out
        assert not any(line.startswith(('error:', 'skipped:')) for line in lines), err
        return
    assert rc == 1, (out, err)
    if case.outcome == 'error':
        errors = [line for line in lines if line.startswith('error: ')]
        assert len(errors) == 1 and (lines == errors or case.logs and lines[-1] == errors[0]), err
        assert expect in errors[0], err
        assert out == ''
    else:   # skipped: one line for the bad input, then the summary
        assert len(lines) == 2 and lines[0].startswith('skipped: ') and expect in lines[0], err
        assert lines[1].startswith('detect: 0 images, 0 faces, 1 failures'), err
        assert out == ''
    assert snapshot(tmp_path) == before   # nothing written, half-way or whole


def test_the_table_covers_the_issue():
    """The inputs issue 8 names are all in the table (the README lists the same rows)."""
    names = ' | '.join(c.name for c in CASES)
    for words in ('missing path', 'zero-byte image', 'truncated JPEG', 'text file named .jpg', '1x1 image',
                  '10000x10000 image', 'grayscale PNG', 'RGBA PNG', '16-bit PNG', 'image folder with no images',
                  'WIDER face count too small', 'WIDER non-integer', 'WIDER negative face size',
                  'WIDER path outside the root', 'WIDER missing image', 'WIDER CRLF',
                  'FDDB list and ellipse file disagree', 'FDDB detection file out of order',
                  'model file truncated (detect)', 'model file truncated (report)', 'one bit flipped (detect)',
                  'one bit flipped (report)', 'wrong magic (detect)', 'wrong magic (report)',
                  'newer format version (detect)', 'newer format version (report)', 'zero bytes (detect)',
                  'zero bytes (report)', 'foreign checkpoint (detect --backend torch)', 'foreign checkpoint (convert)',
                  'foreign last.pt (train --resume)', 'foreign checkpoint (train --init)'):
        assert words in names, words
    assert len({c.name for c in CASES}) == len(CASES)
