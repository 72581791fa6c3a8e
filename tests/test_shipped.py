"""The shipped model: it loads, matches its checkpoint bit for bit, and finds the demo faces."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ifq_tinier_yolo.cli import DEFAULT_CHECKPOINT, DEFAULT_MODEL
from ifq_tinier_yolo.engine import runtime
from ifq_tinier_yolo.engine.nms import iou_matrix
from ifq_tinier_yolo.engine.preprocess import letterbox
from ifq_tinier_yolo.imageio import read_image

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / 'data' / 'samples'
HOPPER_FACE = (180, 120, 355, 335)   # x1, y1, x2, y2 of the portrait's face, by eye

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason=f'no shipped model at {DEFAULT_MODEL}')


def area(a) -> float:
    return (a[2] - a[0]) * (a[3] - a[1])


def intersection(a, b) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


@pytest.mark.parametrize('extra', [[], ['--flip']], ids=['plain', 'flip'])
def test_demo_command_finds_grace_hopper(extra: list[str]):
    proc = subprocess.run([sys.executable, '-m', 'ifq_tinier_yolo', 'detect', 'data/samples/grace_hopper.jpg',
                           '--json', '-', *extra], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    [record] = [json.loads(line) for line in proc.stdout.splitlines()]
    best = record['faces'][0]
    box = (best['x'], best['y'], best['x'] + best['w'], best['y'] + best['h'])
    assert iou_matrix(np.array([box], dtype=np.float64), np.array([HOPPER_FACE], dtype=np.float64))[0, 0] > 0.5
    # the pyramid sees the face whole, and parts of it (eyes, mouth) are not reported as faces
    for face in record['faces'][1:]:
        part = (face['x'], face['y'], face['x'] + face['w'], face['y'] + face['h'])
        assert intersection(part, box) < 0.5 * area(part)


def test_shipped_files_agree_bit_for_bit(torch_one_thread):
    from ifq_tinier_yolo.checkpoint import load_checkpoint, model_from_checkpoint
    from ifq_tinier_yolo.model.predict import to_input
    model = runtime.load_model(DEFAULT_MODEL)
    net = model_from_checkpoint(load_checkpoint(DEFAULT_CHECKPOINT))
    size = model.input_size
    for path in sorted(SAMPLES.iterdir()):
        canvas = letterbox(read_image(path), size)[0]
        want = [h[0].numpy().astype(np.int64) for h in net.head_integers(to_input([canvas]))]
        got = runtime.run_heads(model, canvas)   # every head: the shipped table may have several
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_shipped_model_fits_the_paper_budget():
    assert DEFAULT_MODEL.stat().st_size <= 246_000


def test_auto_upscale_runs_on_a_crowd_and_not_on_a_portrait(shared_wider: Path):
    from ifq_tinier_yolo import Detector
    crowd = read_image(shared_wider / 'WIDER_train' / 'images' / '0--Parade' / '0_Parade_Parade_0_52.jpg')  # 214 faces
    portrait = read_image(SAMPLES / 'grace_hopper.jpg')
    auto, on, off = (Detector.load(conf=0.01, upscale=mode) for mode in ('auto', 'on', 'off'))
    for image, like, unlike in ((crowd, on, off), (portrait, off, on)):
        got = auto.detect_array(image)
        np.testing.assert_array_equal(got, like.detect_array(image))
        assert not np.array_equal(got, unlike.detect_array(image))   # the two modes differ on this image
