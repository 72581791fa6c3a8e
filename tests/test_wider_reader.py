"""WIDER FACE reader: fixtures, malformed files with file:line errors, the real data counts, `data stats`."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ifq_tinier_yolo.cli import main
from ifq_tinier_yolo.datasets.wider import annotation_path, read_wider
from ifq_tinier_yolo.errors import DataError

FIXTURE = Path(__file__).resolve().parent / 'fixtures' / 'wider'
SHARED_WIDER = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'wider'
needs_shared = pytest.mark.skipif(not (SHARED_WIDER / 'wider_face_split').is_dir(),
                                  reason=f'real WIDER FACE subset not found at {SHARED_WIDER}')
NAME_A = '13--Interview/13_Interview_Interview_Sequences_13_929.jpg'
NAME_B = '13--Interview/13_Interview_Interview_On_Location_13_138.jpg'


def fixture_lines() -> list[str]:
    return annotation_path(FIXTURE, 'train').read_text().splitlines()


def test_fixture_parses_with_zero_face_entry_and_dtypes():
    items = read_wider(FIXTURE, 'train')
    assert [it.name for it in items] == [NAME_A, NAME_B, '13--Interview/no_face_crop.jpg']
    for it in items:
        assert it.path.is_absolute() and it.path.is_file()
        assert it.boxes.dtype == np.float32 and it.boxes.shape[1] == 4
        assert it.attrs.dtype == np.int32 and it.attrs.shape == (len(it.boxes), 6)
    np.testing.assert_array_equal(items[0].boxes[0], [23, 48, 21, 27])
    assert items[2].boxes.shape == (0, 4) and items[2].attrs.shape == (0, 6)


def test_drop_invalid_and_min_size():
    b_all = read_wider(FIXTURE, 'train', drop_invalid=False)[1]
    b_valid = read_wider(FIXTURE, 'train')[1]
    assert len(b_all.boxes) == 7 and b_all.attrs[:, 3].sum() == 1
    assert len(b_valid.boxes) == 6 and b_valid.attrs[:, 3].sum() == 0
    b_big = read_wider(FIXTURE, 'train', drop_invalid=False, min_size=5)[1]
    # B's faces are 10x12, then 4x5 or smaller: only the first has both sides >= 5
    expected = b_all.boxes[np.minimum(b_all.boxes[:, 2], b_all.boxes[:, 3]) >= 5]
    np.testing.assert_array_equal(b_big.boxes, expected)
    assert len(b_big.boxes) == 1


def test_crlf_line_endings(wider_copy: Path):
    ann = annotation_path(wider_copy, 'train')
    ann.write_bytes(ann.read_bytes().replace(b'\n', b'\r\n'))
    items = read_wider(wider_copy, 'train', drop_invalid=False)
    assert [len(it.boxes) for it in items] == [4, 7, 0]


def test_zero_face_entry_without_placeholder_row_is_accepted(wider_copy: Path):
    lines = fixture_lines()
    ann = annotation_path(wider_copy, 'train')
    ann.write_text('\n'.join(lines[-3:-1] + lines[:-3]) + '\n')   # 0-face entry first, no zero row
    assert [len(it.boxes) for it in read_wider(wider_copy, 'train', drop_invalid=False)] == [0, 4, 7]


# (line number to edit, new text or None to delete, the error names this line, phrase in the message)
MALFORMED = {
    'count too large': (2, '5', 7, 'face row 5 of 5'),
    'count too small': (2, '3', 6, 'image path'),
    'non-integer field': (3, '23 48 21.5 27 0 0 0 0 0 0', 3, "integer w, found '21.5'"),
    'non-integer count': (2, 'four', 2, 'face count'),
    'negative count': (2, '-1', 2, 'non-negative face count'),
    'too few fields': (3, '23 48 21 27 0 0 0 0 0', 3, '9 fields'),
    'negative size': (3, '23 48 -21 27 0 0 0 0 0 0', 3, 'non-negative face size'),
    'path outside root': (1, '../13--Interview/x.jpg', 1, 'outside the dataset root'),
    'absolute path': (1, '/etc/passwd', 1, 'outside the dataset root'),
    'missing image': (1, '13--Interview/missing.jpg', 1, 'no such file'),
    'non-zero placeholder': (18, '1 1 1 1 0 0 0 0 0 0', 18, 'all-zero placeholder'),
}


@pytest.mark.parametrize('case', sorted(MALFORMED))
def test_malformed_annotation_names_file_and_line(wider_copy: Path, case: str):
    edit_line, text, error_line, phrase = MALFORMED[case]
    lines = fixture_lines()
    lines[edit_line - 1] = text
    ann = annotation_path(wider_copy, 'train')
    ann.write_text('\n'.join(lines) + '\n')
    with pytest.raises(DataError) as e:
        read_wider(wider_copy, 'train')
    assert str(e.value).startswith(f'{ann.resolve()}:{error_line}: expected ')
    assert phrase in str(e.value)


def test_truncated_file(wider_copy: Path):
    ann = annotation_path(wider_copy, 'train')
    ann.write_text('\n'.join(fixture_lines()[:9]) + '\n')   # B announces 7 faces, has 1
    with pytest.raises(DataError, match=r':9: expected face row 2 of 7 .* found end of file'):
        read_wider(wider_copy, 'train')
    ann.write_text(NAME_A + '\n')
    with pytest.raises(DataError, match=r':1: expected the face count .* end of file'):
        read_wider(wider_copy, 'train')


def test_missing_image_passes_without_check(wider_copy: Path):
    (wider_copy / 'WIDER_train' / 'images' / NAME_A).unlink()
    with pytest.raises(DataError, match=':1: expected an existing image file'):
        read_wider(wider_copy, 'train')
    assert len(read_wider(wider_copy, 'train', check_images=False)) == 3


def test_missing_annotation_file_and_images_folder(wider_copy: Path):
    with pytest.raises(DataError, match='wider_face_val_bbx_gt.txt: annotation file not found'):
        read_wider(wider_copy, 'val')
    shutil.rmtree(wider_copy / 'WIDER_train')
    with pytest.raises(DataError, match='WIDER_train/images: images folder not found'):
        read_wider(wider_copy, 'train')
    with pytest.raises(DataError, match='unknown WIDER split'):
        read_wider(wider_copy, 'test')


@needs_shared
def test_real_counts():
    train = read_wider(SHARED_WIDER, 'train', drop_invalid=False)
    assert len(train) == 3048 and sum(len(it.boxes) for it in train) == 62796
    val = read_wider(SHARED_WIDER, 'val', drop_invalid=False)
    assert len(val) == 178 and sum(len(it.boxes) for it in val) == 563
    assert sum(len(it.boxes) for it in read_wider(SHARED_WIDER, 'train')) == 61908


def test_cli_stats_on_fixture(capsys):
    assert main(['data', 'stats', '--wider-root', str(FIXTURE), '--split', 'train']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ['images 3', 'faces 11', 'valid faces 10']


@needs_shared
@pytest.mark.parametrize('split, images, faces', [('train', 3048, 62796), ('val', 178, 563)])
def test_cli_stats_real(capsys, split: str, images: int, faces: int):
    assert main(['data', 'stats', '--wider-root', str(SHARED_WIDER), '--split', split]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f'images {images}' in out and f'faces {faces}' in out


def test_cli_stats_malformed_is_one_line_error(wider_copy: Path, capsys):
    lines = fixture_lines()
    lines[2] = '23 48 21 x 0 0 0 0 0 0'
    ann = annotation_path(wider_copy, 'train')
    ann.write_text('\n'.join(lines) + '\n')
    assert main(['data', 'stats', '--wider-root', str(wider_copy), '--split', 'train']) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f'error: {ann.resolve()}:3: expected an integer h')
    assert captured.out == ''
