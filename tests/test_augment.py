"""Augmentation: boxes stay on the faces (checked on real pixels), box rules, padding, determinism."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from ifq_tinier_yolo.datasets.augment import (AugmentConfig, Augmenter, crop_window, letterbox_sample,
                                              map_boxes, mosaic, rotate_sample, sample_rng)
from ifq_tinier_yolo.datasets.wider import read_wider
from ifq_tinier_yolo.engine.preprocess import letterbox
from ifq_tinier_yolo.imageio import read_image

FIXTURE = Path(__file__).resolve().parent / 'fixtures' / 'wider'
SHARED_WIDER = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'wider'
NO_COLOUR = AugmentConfig(brightness_contrast_p=0, hsv_p=0, blur_p=0, gray_p=0)
CFG = AugmentConfig()


def fixture_image(k: int = 0):
    item = read_wider(FIXTURE, 'train')[k]
    return read_image(item.path), item.boxes


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two equal-size grey patches."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


def face_scores(image, boxes, canvas, out, kept, size, min_px=12):
    """NCC of each fully visible output box against its source face, and against a shifted window."""
    grey, cgrey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY)
    hits, shifted = [], []
    for (x1, y1, x2, y2), k in zip(out, kept):
        w, h = round(x2 - x1), round(y2 - y1)
        if min(w, h) < min_px or x1 < 1 or y1 < 1 or x2 > size - 1 or y2 > size - 1:
            continue   # clipped or too small to compare reliably
        fx, fy, fw, fh = (int(round(v)) for v in boxes[k])
        face = cv2.resize(grey[fy:fy + fh, fx:fx + fw], (w, h), interpolation=cv2.INTER_AREA)
        patch = cgrey[round(y1):round(y1) + h, round(x1):round(x1) + w]
        # the sample may be mirrored: score the better orientation
        hits.append(max(ncc(patch, face), ncc(patch, face[:, ::-1])))
        sx = round(x1) + w if round(x1) + 2 * w <= size else round(x1) - w
        if sx >= 0:
            other = cgrey[round(y1):round(y1) + h, sx:sx + w]
            shifted.append(max(ncc(other, face), ncc(other, face[:, ::-1])))
    return hits, shifted


@pytest.mark.parametrize('cfg', [NO_COLOUR, CFG], ids=['geometry', 'full'])
def test_boxes_stay_on_faces_fixture(cfg: AugmentConfig):
    image, boxes = fixture_image(0)
    aug = Augmenter(cfg)
    hits, shifted = [], []
    for seed in range(40):
        canvas, out, kept = aug(image, boxes, 160, sample_rng(seed, 0, 0))
        h, s = face_scores(image, boxes, canvas, out, kept, 160)
        hits += h
        shifted += s
    assert len(hits) >= 40
    threshold = 0.9 if cfg is NO_COLOUR else 0.8   # a 6 px box shift scores about 0.5
    assert np.median(hits) > threshold and np.mean(np.array(hits) > 0.5) > 0.9
    assert np.median(shifted) < np.median(hits) - 0.3   # the check can tell a face from its neighbourhood


@pytest.mark.skipif(not (SHARED_WIDER / 'WIDER_val').is_dir(),
                    reason=f'real WIDER FACE subset not found at {SHARED_WIDER}')
def test_boxes_stay_on_faces_real_val_image():
    items = [it for it in read_wider(SHARED_WIDER, 'val') if len(it.boxes) >= 2][:3]
    aug = Augmenter(NO_COLOUR)
    hits = []
    for index, item in enumerate(items):
        image = read_image(item.path)
        for epoch in range(6):
            canvas, out, kept = aug(image, item.boxes, 320, sample_rng(0, epoch, index))
            hits += face_scores(image, item.boxes, canvas, out, kept, 320)[0]
    assert len(hits) >= 10 and np.median(hits) > 0.85


def test_letterbox_sample_matches_letterbox_arithmetic():
    image, boxes = fixture_image(0)
    canvas, out, kept = letterbox_sample(image, boxes, 192)
    ref, scale, pad_x, pad_y = letterbox(image, 192)
    np.testing.assert_array_equal(canvas, ref)
    np.testing.assert_array_equal(kept, np.arange(len(boxes)))
    expected = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1) * scale + [pad_x, pad_y] * 2
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_map_boxes_visibility_and_size_rules():
    # image 100x100, window = the whole image at scale 1 shifted left by 50: x < 50 falls off the canvas
    boxes = np.array([[40, 10, 20, 20],     # half visible -> kept
                      [35, 10, 20, 20],     # 25% visible -> dropped
                      [60, 10, 1, 10],      # 1 px wide -> dropped
                      [70, 10, 0, 0],       # zero size -> dropped
                      [60, 90, 20, 20]],    # overhangs the image bottom: area inside the image counts
                     np.float32)
    out, kept = map_boxes(boxes, 100, 100, 50, 0, 1.0, 0, 0, 100, CFG)
    assert kept.tolist() == [0, 4]
    np.testing.assert_allclose(out, [[0, 10, 10, 30], [10, 90, 30, 100]])
    out, kept = map_boxes(boxes[:0], 100, 100, 0, 0, 1.0, 0, 0, 100, CFG)
    assert out.shape == (0, 4) and out.dtype == np.float32 and kept.shape == (0,)


def test_crop_window_contains_the_face_and_zooms_both_ways():
    boxes = np.array([[300, 200, 30, 40]], np.float32)
    sides = []
    for seed in range(300):
        x0, y0, side = crop_window(640, 480, boxes, sample_rng(seed, 0, 0), CFG)
        assert x0 <= 300 and y0 <= 200 and x0 + side >= 330 and y0 + side >= 240
        # the window and the image overlap on every axis: never an empty view
        assert x0 < 640 and y0 < 480 and x0 + side > 0 and y0 + side > 0
        sides.append(side)
    assert min(sides) < 0.4 * 640 and max(sides) > 640   # zoom in and zoom out both happen


def test_padding_keeps_letterbox_fill_under_colour_jitter():
    image, boxes = fixture_image(0)    # 288 x 162: letterboxing pads top and bottom
    cfg = replace(CFG, crop_p=0, brightness=0.5, brightness_contrast_p=1, hsv_p=1, flip_p=0)
    canvas, out, _ = Augmenter(cfg)(image, boxes, 128, sample_rng(3, 0, 0))
    ref, _, _, pad_y = letterbox(image, 128)
    assert pad_y > 10
    assert not canvas[:pad_y].any() and not canvas[-pad_y:].any()
    assert not np.array_equal(canvas, ref)   # the jitter did change the image part


def test_flip_mirrors_image_and_boxes():
    image, boxes = fixture_image(0)
    cfg = replace(NO_COLOUR, crop_p=0, flip_p=1)
    canvas, out, _ = Augmenter(cfg)(image, boxes, 128, sample_rng(0, 0, 0))
    ref, ref_boxes, _ = letterbox_sample(image, boxes, 128)
    np.testing.assert_array_equal(canvas, ref[:, ::-1])
    np.testing.assert_allclose(out[:, [0, 2]], 128 - ref_boxes[:, [2, 0]], atol=1e-4)
    np.testing.assert_allclose(out[:, [1, 3]], ref_boxes[:, [1, 3]], atol=1e-4)


def test_deterministic_per_seed_epoch_index():
    image, boxes = fixture_image(0)
    a = Augmenter(CFG)(image, boxes, 128, sample_rng(7, 2, 5))
    b = Augmenter(CFG)(image, boxes, 128, sample_rng(7, 2, 5))
    c = Augmenter(CFG)(image, boxes, 128, sample_rng(7, 3, 5))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_image_without_faces():
    image, boxes = fixture_image(2)
    assert len(boxes) == 0
    canvas, out, kept = Augmenter(CFG)(image, boxes, 96, sample_rng(0, 0, 0))
    assert canvas.shape == (96, 96, 3) and canvas.dtype == np.uint8
    assert out.shape == (0, 4) and out.dtype == np.float32 and len(kept) == 0


@pytest.mark.parametrize('degrees', [-45.0, 12.0, 90.0])
def test_rotation_moves_each_box_with_its_face(degrees: float):
    """Faces drawn as filled ellipses in their boxes, each its own colour: after the rotation each
    output box is the bounding box of its ellipse's pixels (to 2 px); a face rotated off the
    canvas is dropped."""
    size = 200
    boxes = np.array([[40, 50, 80, 110], [120, 30, 150, 70], [90, 120, 170, 180], [0, 0, 24, 24]], np.float32)
    canvas = np.zeros((size, size, 3), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        cv2.ellipse(canvas, ((float(x1 + x2) / 2, float(y1 + y2) / 2), (float(x2 - x1), float(y2 - y1)), 0),
                    (40 * (i + 1),) * 3, -1)
    out, kept = rotate_sample(canvas, boxes, degrees, CFG)[1:]
    rotated = cv2.warpAffine(canvas, cv2.getRotationMatrix2D((size / 2, size / 2), degrees, 1.0), (size, size),
                             flags=cv2.INTER_NEAREST)
    # the corner face's centre swings off the canvas, except at 90 degrees (into another corner)
    assert kept.tolist() == ([0, 1, 2, 3] if degrees == 90.0 else [0, 1, 2])
    for box, i in zip(out, kept):
        ys, xs = np.nonzero(rotated[..., 0] == 40 * (i + 1))
        seen = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        np.testing.assert_allclose(box, np.clip(seen, 0, size), atol=2.0)   # rasterised ellipses


def test_rotation_only_when_asked_and_deterministic():
    image, boxes = fixture_image(0)
    plain = Augmenter(CFG)(image, boxes, 128, sample_rng(3, 0, 1))
    # max_angle 0 (the default) draws nothing more from the generator: older runs repeat exactly
    same = Augmenter(replace(CFG, rotate_p=1.0))(image, boxes, 128, sample_rng(3, 0, 1))
    turned = Augmenter(replace(CFG, max_angle=20.0, rotate_p=1.0))
    a, b = turned(image, boxes, 128, sample_rng(3, 0, 1)), turned(image, boxes, 128, sample_rng(3, 0, 1))
    for x, y, z, w in zip(plain, same, a, b):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(z, w)
    assert not np.array_equal(plain[0], a[0])


def test_mosaic_tiles_four_views_in_reading_order():
    rng = np.random.default_rng(0)
    views = [(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), np.float32([[1, 2, 11, 12]] * k).reshape(-1, 4))
             for k in range(4)]   # 0, 1, 2, 3 faces
    canvas, boxes = mosaic(views)
    assert canvas.shape == (64, 64, 3) and boxes.dtype == np.float32
    for k, (view, _) in enumerate(views):
        y, x = 32 * (k // 2), 32 * (k % 2)
        np.testing.assert_array_equal(canvas[y:y + 32, x:x + 32], view)
    np.testing.assert_array_equal(boxes, [[33, 2, 43, 12], [1, 34, 11, 44], [1, 34, 11, 44],
                                          [33, 34, 43, 44], [33, 34, 43, 44], [33, 34, 43, 44]])
    with pytest.raises(ValueError, match='4 views'):
        mosaic(views[:3])
