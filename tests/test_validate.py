"""Training validation: the dev benchmark built from WIDER val equals the reference FDDB fold."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ifq_tinier_yolo.validate import DevBenchmark

from fddb_files import read_fold

SHARED = Path(__file__).resolve().parents[1].parent / 'shared'
REF = SHARED / 'reference' / 'fddb' / 'FDDB-folds'


@pytest.fixture(scope='module')
def bench() -> DevBenchmark:
    if not (REF / 'FDDB-fold-01.txt').is_file() or not (SHARED / 'data' / 'wider').is_dir():
        pytest.skip(f'reference dev benchmark not found under {SHARED}')
    return DevBenchmark(SHARED / 'data' / 'wider')


def test_dev_benchmark_matches_the_reference_fold(bench: DevBenchmark):
    ref = read_fold(REF / 'FDDB-fold-01.txt', REF / 'FDDB-fold-01-ellipseList.txt')
    assert [name for name, _ in ref] == [n.removesuffix('.jpg') for n in bench.names]
    assert sum(len(e) for e in bench.ellipses) == sum(len(e) for _, e in ref) == 540
    for (_, want), got in zip(ref, bench.ellipses):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_perfect_detections_score_one_and_none_score_zero(bench: DevBenchmark):
    boxes = []
    for e in bench.ellipses:   # back from ellipses to the WIDER boxes, score 1
        tall = e[:, 2] > 0
        w = np.where(tall, 2 * e[:, 1], 2 * e[:, 0])
        h = np.where(tall, 2 * e[:, 0], 2 * e[:, 1])
        boxes.append(np.column_stack([e[:, 3] - w / 2, e[:, 4] - h / 2, w, h, np.ones(len(e))]))
    assert bench.score(boxes)['tpr@100fp'] > 0.99
    assert bench.score([np.zeros((0, 5))] * len(bench.images))['tpr@100fp'] == 0.0


def test_recall_by_face_size_iou_and_confident_boxes(bench: DevBenchmark):
    """Exactly the faces taller than 32 px found (at their own boxes, score 0.9) plus one 0.6 false
    box per image: recall 0 below 32 px and 1 above, median IoU 1, two kinds of boxes counted."""
    dets = []
    for faces in bench.boxes:
        big = faces[faces[:, 3] >= 32]
        dets.append(np.vstack([np.column_stack([big, np.full(len(big), 0.9)]), [[0, 0, 3, 3, 0.6]]]))
    row = bench.score(dets)
    assert row['recall_8-16px'] == row['recall_16-24px'] == row['recall_24-32px'] == 0.0
    assert row['recall_32-64px'] == row['recall_64+px'] == 1.0 and row['median_iou'] == 1.0
    assert row['boxes@0.5'] == pytest.approx(np.mean([(f[:, 3] >= 32).sum() + 1 for f in bench.boxes]), abs=0.01)


def test_crowd_items_are_crowd_scenes_of_the_events_dev_lacks(shared_wider: Path):
    from ifq_tinier_yolo.validate import CROWD_MIN_FACES, crowd_items
    items = crowd_items(shared_wider, 20)
    names = [it.name for it in items]
    assert len(items) == 20 and names == sorted(names)
    assert all(len(it.boxes) >= CROWD_MIN_FACES for it in items)
    assert not {n.split('/')[0] for n in names} & {'13--Interview', '19--Couple'}   # the val subset's events
    few = DevBenchmark(shared_wider, crowd=5)   # a seeded draw: a smaller one is part of a larger one
    assert len(few.images) == 5 and set(few.names) <= set(names)
    assert sum(len(e) for e in few.ellipses) >= 5 * CROWD_MIN_FACES
