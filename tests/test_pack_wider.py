"""scripts/pack_wider.py: a shrunken WIDER copy in the official layout, read by read_wider unchanged."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ifq_tinier_yolo.datasets.wider import read_wider
from ifq_tinier_yolo.imageio import read_image

from script_modules import load_script

pack = load_script('pack_wider')


def test_packed_copy_has_the_same_faces_at_the_new_scale(fixture_wider: Path, tmp_path: Path, capsys):
    side = 96
    assert pack.main(['--wider-root', str(fixture_wider), '--out', str(tmp_path), '--side', str(side),
                      '--quality', '70']) == 0
    assert 'train: 3 images' in capsys.readouterr().out
    before, after = (read_wider(root, 'train', drop_invalid=False) for root in (fixture_wider, tmp_path))
    assert [it.name for it in after] == [it.name for it in before]
    for old, new in zip(before, after):
        h, w = read_image(old.path).shape[:2]
        image = read_image(new.path)
        scale = min(1.0, side / max(h, w))
        assert max(image.shape[:2]) == round(max(h, w) * scale) <= side
        assert np.array_equal(new.attrs, old.attrs)                 # invalid faces and attributes kept
        assert np.abs(new.boxes - old.boxes * scale).max(initial=0) <= 0.5   # whole pixels, as in the format
    assert any(len(it.boxes) == 0 for it in after)                  # the face-less image's placeholder row


def test_small_images_are_not_enlarged(fixture_wider: Path, tmp_path: Path):
    assert pack.main(['--wider-root', str(fixture_wider), '--out', str(tmp_path), '--side', '4096']) == 0
    for old, new in zip(*(read_wider(root, 'train', drop_invalid=False) for root in (fixture_wider, tmp_path))):
        assert read_image(new.path).shape == read_image(old.path).shape
        assert np.array_equal(new.boxes, old.boxes)


def test_a_missing_image_is_a_one_line_error(fixture_wider: Path, tmp_path: Path, capsys):
    root = tmp_path / 'wider'
    shutil.copytree(fixture_wider, root)
    next((root / 'WIDER_train' / 'images').rglob('*.jpg')).unlink()
    assert pack.main(['--wider-root', str(root), '--out', str(tmp_path / 'out')]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and 'no such file' in err and '\n' not in err


def test_packing_over_the_source_is_refused(fixture_wider: Path):
    with pytest.raises(SystemExit):
        pack.parse_args(['--wider-root', str(fixture_wider), '--out', str(fixture_wider)])
