"""WiderTrainSet and collate: shapes, dtypes, normalised boxes, determinism, workers, errors."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ifq_tinier_yolo.datasets.augment import AugmentConfig, Augmenter, letterbox_sample, sample_rng
from ifq_tinier_yolo.datasets.loader import WiderTrainSet, collate
from ifq_tinier_yolo.datasets.wider import WiderImage, read_wider
from ifq_tinier_yolo.errors import ImageError
from ifq_tinier_yolo.imageio import read_image

FIXTURE = Path(__file__).resolve().parent / 'fixtures' / 'wider'
SIZE = 96


@pytest.fixture(scope='module')
def items() -> list[WiderImage]:
    return read_wider(FIXTURE, 'train')


@pytest.mark.parametrize('augment', [False, True])
def test_sample_shapes_and_ranges(items, augment: bool):
    ds = WiderTrainSet(items, SIZE, augment=augment, seed=1)
    assert len(ds) == 3
    for i in range(len(ds)):
        image, boxes = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (3, SIZE, SIZE)
        assert boxes.dtype == torch.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
        assert bool((boxes >= 0).all() and (boxes <= 1).all())
        half = boxes[:, 2:] / 2
        assert bool((boxes[:, :2] - half >= -1e-6).all() and (boxes[:, :2] + half <= 1 + 1e-6).all())
    assert ds[2][1].shape == (0, 4)   # the 0-face image


def test_without_augment_is_the_letterbox(items):
    ds = WiderTrainSet(items, SIZE, augment=False)
    image, boxes = ds[0]
    canvas, xyxy, _ = letterbox_sample(read_image(items[0].path), items[0].boxes, SIZE)
    assert torch.equal(image, torch.from_numpy(canvas).permute(2, 0, 1))   # (3, S, S) BGR
    cx, cy = (xyxy[:, 0] + xyxy[:, 2]) / 2 / SIZE, (xyxy[:, 1] + xyxy[:, 3]) / 2 / SIZE
    w, h = (xyxy[:, 2] - xyxy[:, 0]) / SIZE, (xyxy[:, 3] - xyxy[:, 1]) / SIZE
    np.testing.assert_allclose(boxes.numpy(), np.stack([cx, cy, w, h], 1), atol=1e-6)


def test_epochs_and_seeds(items):
    a, b = WiderTrainSet(items, SIZE, seed=3), WiderTrainSet(items, SIZE, seed=3)
    a.set_epoch(4)
    b.set_epoch(4)
    assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1], b[0][1])
    b.set_epoch(5)
    assert not torch.equal(a[0][0], b[0][0])
    assert not torch.equal(a[0][0], WiderTrainSet(items, SIZE, seed=4).__getitem__(0)[0])


def test_mosaic_views(items):
    """mosaic_p 1: every view tiles four half-size views (the first of its own image, as the augmenter makes
    it from the same draws); mosaic_p 0 draws nothing extra, so the views of earlier runs repeat."""
    plain, tiled = WiderTrainSet(items, SIZE, seed=5), WiderTrainSet(items, SIZE, seed=5,
                                                                     config=AugmentConfig(mosaic_p=1.0))
    for i in range(len(items)):
        rng = sample_rng(5, 0, i)
        canvas, boxes, _ = Augmenter()(read_image(items[i].path), items[i].boxes, SIZE, rng)
        image, targets = plain[i]
        assert torch.equal(image, torch.from_numpy(canvas).permute(2, 0, 1))
        rng = sample_rng(5, 0, i)
        rng.random()                                   # the mosaic draw, then the three other images
        rng.integers(len(items), size=3)
        quarter, _, _ = Augmenter()(read_image(items[i].path), items[i].boxes, SIZE // 2, rng)
        image, targets = tiled[i]
        assert image.shape == (3, SIZE, SIZE)
        assert torch.equal(image[:, :SIZE // 2, :SIZE // 2], torch.from_numpy(quarter).permute(2, 0, 1))
        # no box crosses a seam: each lies inside one quadrant
        x1, x2 = targets[:, 0] - targets[:, 2] / 2, targets[:, 0] + targets[:, 2] / 2
        y1, y2 = targets[:, 1] - targets[:, 3] / 2, targets[:, 1] + targets[:, 3] / 2
        assert bool((((x2 <= 0.5 + 1e-6) | (x1 >= 0.5 - 1e-6)) & ((y2 <= 0.5 + 1e-6) | (y1 >= 0.5 - 1e-6))).all())
    a = [tiled[i][1].shape[0] for i in range(len(items))]
    b = [plain[i][1].shape[0] for i in range(len(items))]
    assert sum(a) > sum(b)   # four images' faces per view


def test_two_workers_give_the_same_samples(items):
    ds = WiderTrainSet(items, SIZE, seed=2)
    ds.set_epoch(1)
    loader = DataLoader(ds, batch_size=1, num_workers=2, collate_fn=collate)
    for i, (images, targets) in enumerate(loader):
        image, boxes = ds[i]
        assert torch.equal(images[0], image) and torch.equal(targets[:, 1:], boxes)


def test_unreadable_image_names_the_file(tmp_path: Path, items):
    bad = tmp_path / 'broken.jpg'
    shutil.copy(items[0].path, bad)
    bad.write_bytes(bad.read_bytes()[:40])   # truncated JPEG
    ds = WiderTrainSet([WiderImage(bad, 'x/broken.jpg', items[0].boxes, items[0].attrs)], SIZE)
    assert isinstance(ds[0], ImageError) and 'broken.jpg' in str(ds[0])
    # through a worker process the error object itself arrives, its message unchanged
    batch = next(iter(DataLoader(ds, batch_size=1, num_workers=1, collate_fn=collate)))
    assert isinstance(batch, ImageError) and str(batch) == str(ds[0])


def sample(n_faces: int, fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    boxes = torch.arange(n_faces * 4, dtype=torch.float32).reshape(n_faces, 4) / 100
    return torch.full((3, 8, 8), fill, dtype=torch.uint8), boxes


def test_collate_zero_one_many_faces():
    images, targets = collate([sample(0, 1), sample(1, 2), sample(3, 3), sample(0, 4)])
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 8, 8)
    assert images[:, 0, 0, 0].tolist() == [1, 2, 3, 4]
    assert targets.dtype == torch.float32 and targets.shape == (4, 5)
    assert targets[:, 0].tolist() == [1, 2, 2, 2]
    assert torch.equal(targets[1:, 1:], sample(3, 0)[1])
    images, targets = collate([sample(0, 1), sample(0, 2)])
    assert images.shape == (2, 3, 8, 8) and targets.shape == (0, 5) and targets.dtype == torch.float32
