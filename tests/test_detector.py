"""The Detector API: backend from the model file, result shapes, image kinds, errors, no torch on the int path."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ifq_tinier_yolo import Detector, Face, netdef
from ifq_tinier_yolo.apps import backends
from ifq_tinier_yolo.apps.detector import LEVEL_NMS, discount_small, scale_boxes
from ifq_tinier_yolo.errors import ConfigError, ImageError, ModelFileError

IMG_SIZE = 64   # small network input keeps each forward pass to milliseconds


pytestmark = pytest.mark.usefixtures('torch_one_thread')


@pytest.fixture(scope='module')
def detector(random_checkpoint: Path) -> Detector:
    return Detector.load(random_checkpoint, conf=0.0, img_size=IMG_SIZE)


@pytest.fixture(scope='module')
def detector_int(random_ifq: Path) -> Detector:
    return Detector.load(random_ifq, 'int', conf=0.0, img_size=IMG_SIZE)


def noise(shape: tuple[int, ...], dtype=np.uint8, high: int = 256) -> np.ndarray:
    return np.random.default_rng(0).integers(0, high, shape).astype(dtype)


def assert_inside(boxes: np.ndarray, width: int, height: int) -> None:
    assert boxes.dtype == np.float64 and boxes.shape[1] == 5
    x, y, w, h, s = boxes.T
    tol = 1e-6
    assert np.all(x >= -tol) and np.all(y >= -tol) and np.all(w >= 0) and np.all(h >= 0)
    assert np.all(x + w <= width + tol) and np.all(y + h <= height + tol)
    assert np.all((s >= 0) & (s <= 1))


def test_face_is_a_frozen_dataclass():
    face = Face(1.0, 2.0, 3.0, 4.0, 0.5)
    assert [f.name for f in dataclasses.fields(Face)] == ['x', 'y', 'w', 'h', 'score']
    with pytest.raises(dataclasses.FrozenInstanceError):
        face.x = 0.0


def test_pt_file_selects_torch_backend(detector: Detector, random_checkpoint: Path):
    assert detector.backend == 'torch' and detector.path == random_checkpoint


def test_detect_array_shape_order_and_range(detector: Detector):
    image = noise((48, 80, 3))
    boxes = detector.detect_array(image)
    assert len(boxes) > 0   # conf 0 keeps every box NMS keeps
    assert_inside(boxes, 80, 48)
    assert np.all(np.diff(boxes[:, 4]) <= 0)   # best first


def test_detect_returns_faces_matching_array(detector: Detector):
    image = noise((48, 80, 3))
    faces = detector.detect(image)
    boxes = detector.detect_array(image)
    assert all(isinstance(f, Face) and isinstance(f.score, float) for f in faces)
    np.testing.assert_allclose([dataclasses.astuple(f) for f in faces], boxes)


def test_no_faces_is_an_empty_float_array(random_checkpoint: Path):
    strict = Detector.load(random_checkpoint, conf=1.0, img_size=IMG_SIZE)
    boxes = strict.detect_array(noise((32, 32, 3)))
    assert boxes.shape == (0, 5) and boxes.dtype == np.float64
    assert strict.detect(noise((32, 32, 3))) == []


@pytest.mark.parametrize('image', [noise((40, 50)), noise((40, 50, 1)), noise((40, 50, 4)),
                                   noise((40, 50, 3), np.uint16, 65536)],
                         ids=['gray', 'gray1', 'bgra', '16bit'])
def test_any_depth_and_channel_count(detector: Detector, image: np.ndarray):
    assert_inside(detector.detect_array(image), 50, 40)


def test_oversized_array_boxes_in_its_own_pixels(detector: Detector):
    boxes = detector.detect_array(noise((10, 9000, 3)))   # shrunk to 8192 wide for detection
    assert_inside(boxes, 9000, 10)
    assert boxes[:, 0].max() + boxes[:, 2].max() > 8192 * 0.5


def test_scale_boxes():
    boxes = np.array([[10.0, 20.0, 30.0, 40.0, 0.7]])
    np.testing.assert_allclose(scale_boxes(boxes, (100, 50), (200, 25)), [[20.0, 10.0, 60.0, 20.0, 0.7]])
    assert scale_boxes(boxes, (100, 50), (100, 50)) is boxes


def test_missing_default_model_says_where(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    weights = tmp_path / 'weights'
    monkeypatch.setattr(backends, 'DEFAULT_FILE',
                        {'.ifq': weights / 'ifq_tinier_yolo.ifq', '.pt': weights / 'ifq_tinier_yolo.pt'})
    expected = r'^no trained model at weights/ifq_tinier_yolo\.ifq: see weights/README\.md$'
    with pytest.raises(ModelFileError, match=expected):
        Detector.load()
    with pytest.raises(ModelFileError, match=r'weights/ifq_tinier_yolo\.pt'):
        Detector.load(backend='torch')


def test_model_file_errors(tmp_path: Path, random_checkpoint: Path):
    with pytest.raises(ModelFileError, match='no such model file'):
        Detector.load(tmp_path / 'absent.pt')
    with pytest.raises(ConfigError, match='unknown model file type'):
        Detector.load(tmp_path / 'model.tflite')
    with pytest.raises(ConfigError, match='--backend torch'):
        backends.resolve(random_checkpoint, 'int')
    with pytest.raises(ConfigError, match='unknown backend'):
        backends.resolve(random_checkpoint, 'cuda')
    junk = tmp_path / 'junk.pt'
    junk.write_bytes(b'not a checkpoint')
    with pytest.raises(ModelFileError, match='junk.pt'):
        Detector.load(junk)


@pytest.mark.parametrize('kwargs, match', [({'conf': 1.5}, 'conf'), ({'nms': 0.0}, 'nms'),
                                           ({'img_size': 100}, 'multiple of 16'), ({'img_size': -32}, 'img_size'),
                                           ({'upscale': True}, 'upscale')])
def test_bad_settings(random_checkpoint: Path, kwargs: dict, match: str):
    with pytest.raises(ConfigError, match=match):
        Detector.load(random_checkpoint, **kwargs)


def test_not_an_array(detector: Detector):
    with pytest.raises(ImageError, match='numpy array'):
        detector.detect([[0, 0, 0]])
    with pytest.raises(ImageError):
        detector.detect(np.zeros((0, 0, 3), np.uint8))


def test_ifq_file_runs_natively_or_says_why_not(random_ifq: Path):
    """An .ifq model runs on the C runtime when it is built, else on the numpy engine with a notice;
    both give the same boxes."""
    from ifq_tinier_yolo import native
    auto = Detector.load(random_ifq, conf=0.0, img_size=IMG_SIZE)
    plain = Detector.load(random_ifq, 'int', conf=0.0, img_size=IMG_SIZE)
    if native.available():
        assert auto.backend == 'native' and auto.notice is None
    else:
        assert auto.backend == 'int' and auto.notice.startswith('notice: numpy engine runs')
    image = noise((48, 80, 3))
    np.testing.assert_array_equal(auto.detect_array(image), plain.detect_array(image))


def test_ifq_file_runs_on_the_integer_engine(detector_int: Detector):
    boxes = detector_int.detect_array(noise((48, 80, 3)))
    assert detector_int.backend == 'int' and len(boxes) > 0
    assert_inside(boxes, 80, 48)
    assert np.all(np.diff(boxes[:, 4]) <= 0)
    assert_inside(detector_int.detect_array(noise((10, 9000))), 9000, 10)


def test_integer_backend_never_imports_torch(random_ifq: Path):
    code = ('import sys, numpy as np\n'
            'from ifq_tinier_yolo import Detector\n'
            f'detector = Detector.load({str(random_ifq)!r}, conf=0.0, img_size=64)\n'
            'faces = detector.detect(np.zeros((40, 60, 3), np.uint8))\n'
            'assert faces and "torch" not in sys.modules, "torch imported"\n')
    subprocess.run([sys.executable, '-c', code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_importing_the_apps_does_not_import_torch():
    code = ('import sys\n'
            'from ifq_tinier_yolo import Detector, Face\n'
            'import ifq_tinier_yolo.apps.detect, ifq_tinier_yolo.apps.webcam, ifq_tinier_yolo.apps.benchmark\n'
            'assert "torch" not in sys.modules, "torch imported"\n')
    subprocess.run([sys.executable, '-c', code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_merge_levels_keeps_big_boxes_from_coarse_levels():
    from ifq_tinier_yolo.apps.detector import merge_levels
    fine = np.array([[10.0, 10, 20, 20, 0.9],       # a small face, only the fine level sees it
                     [300, 100, 60, 60, 0.7],       # a part of the big face below
                     [500, 500, 100, 100, 0.6]])    # seen at both levels
    # coarse level at input 256 for a 1024 px image: a box needs 2 cells = 32 input px = 128 image px
    coarse = np.array([[12.0, 12, 16, 16, 0.99],    # too small for this level: dropped
                       [250, 50, 200, 240, 0.95],   # the big face, 50 x 60 input px
                       [495, 505, 130, 127, 0.8],   # 32.5 input px: kept, duplicate of the fine box
                       [700, 700, 127, 127, 0.5]])  # 31.75 input px: dropped
    out = merge_levels([fine, coarse], [512, 256], 1024, 16, 0.45)
    # the duplicate votes: the kept coarse box becomes the score-weighted mean of the two (corners);
    # the part lies inside the big face (containment), which does not vote
    x1, y1, x2, y2 = (np.array([495, 505, 625, 632]) * 0.8 + np.array([500, 500, 600, 600]) * 0.6) / 1.4
    np.testing.assert_allclose(out, [coarse[1], fine[0], [x1, y1, x2 - x1, y2 - y1, 0.8]])
    # one level: only NMS with containment
    np.testing.assert_array_equal(merge_levels([fine], [512], 1024, 16, 0.45), fine)


@pytest.mark.parametrize('backend_fixture', ['detector', 'detector_int'])
def test_pyramid_detector_merges_its_single_level_runs(backend_fixture: str, request: pytest.FixtureRequest):
    from ifq_tinier_yolo.apps.detector import merge_levels
    one = request.getfixturevalue(backend_fixture)
    pyramid = Detector.load(one.path, conf=0.0, img_size=IMG_SIZE, levels=3, upscale='off')
    assert pyramid.sizes == [64, 32, 16] and one.sizes == [64, 32]
    image = noise((48, 80, 3))
    # each level's candidates, none suppressed: the merge's one voted NMS sees them all
    levels = [np.asarray(one._run(image, 0.0, LEVEL_NMS, s), dtype=np.float64) for s in pyramid.sizes]
    want = discount_small(merge_levels(levels, pyramid.sizes, 80, 16, pyramid.nms), 64, 80, 16)
    np.testing.assert_array_equal(pyramid.detect_array(image), want)


def test_merge_levels_keeps_small_boxes_from_the_upscaled_level():
    from ifq_tinier_yolo.apps.detector import merge_levels
    fine = np.array([[500.0, 500, 100, 100, 0.6]])
    # upscaled level at input 768 for a 1024 px image: 3 cells = 48 input px = 64 image px
    up = np.array([[10.0, 10, 20, 20, 0.9],        # a small face only the upscaled level sees: kept
                   [200, 200, 64, 60, 0.5],         # exactly 3 cells: kept
                   [700, 700, 65, 65, 0.95],        # just over 3 cells: dropped
                   [505, 505, 95, 95, 0.55]])       # too large for this level: dropped, not a duplicate
    out = merge_levels([fine], [576], 1024, 16, 0.45, upscaled=up, up_size=768)
    np.testing.assert_array_equal(out, [up[0], fine[0], up[1]])


@pytest.mark.parametrize('backend_fixture', ['detector', 'detector_int'])
def test_upscale_detector_merges_its_single_level_runs(backend_fixture: str, request: pytest.FixtureRequest):
    from ifq_tinier_yolo.apps.detector import merge_levels
    one = request.getfixturevalue(backend_fixture)
    up = Detector.load(one.path, one.backend, conf=0.0, img_size=48, levels=2, upscale='on')
    assert up.sizes == [48, 32] and up.up_size == 64
    image = noise((48, 80, 3))
    # each level's raw network output (decoded candidates, before the pyramid merge's NMS)
    runs = {s: np.asarray(one._run(image, 0.0, LEVEL_NMS, s), dtype=np.float64) for s in (48, 32, 64)}
    want = merge_levels([runs[48], runs[32]], [48, 32], 80, 16, up.nms, upscaled=runs[64], up_size=64)
    got = up.detect_array(image)
    assert len(got) > len(merge_levels([runs[48], runs[32]], [48, 32], 80, 16, up.nms))   # the extra level adds boxes
    np.testing.assert_array_equal(got, discount_small(want, 48, 80, 16))


def test_discount_small_lowers_boxes_under_two_cells_and_reorders():
    # a 1024 px image seen at input 576, stride 16: 2 cells = 32 input px = 56.9 image px
    boxes = np.array([[0.0, 0, 14.2, 10, 0.8],      # a quarter of 2 cells: 0.8 * 0.25 ** 0.1
                      [50, 50, 60, 60, 0.7],        # over 2 cells: as it was
                      [100, 100, 20, 40, 0.79]])    # the longer side counts: 0.79 * 0.703 ** 0.1
    got = discount_small(boxes, 576, 1024, 16)
    np.testing.assert_allclose(got[:, 4], [0.79 * (40 / 56.889) ** 0.1, 0.7, 0.8 * (14.2 / 56.889) ** 0.1], rtol=1e-5)
    np.testing.assert_array_equal(got[:, :4], boxes[[2, 1, 0], :4])   # best first again
    assert netdef.SMALL_BOX_CELLS == 2 and netdef.SMALL_BOX_POWER == 0.1   # the figures above assume them


def test_is_crowd_counts_confident_small_boxes():
    from ifq_tinier_yolo.apps.detector import is_crowd
    # a 1024 px image seen at input 576, stride 16: 3 cells = 48 input px = 85.3 image px
    small = np.array([[90.0 * i, 0, 80, 60, 0.5] for i in range(netdef.AUTO_UPSCALE_FACES)])
    assert is_crowd(small, 576, 1024, 16)
    assert not is_crowd(small[1:], 576, 1024, 16)   # one face short
    low, big = small.copy(), small.copy()
    low[0, 4] = netdef.AUTO_UPSCALE_SCORE - 0.01
    big[0, 2] = 90.0                                  # 3.16 cells: a face the full-size pass sees well
    assert not is_crowd(low, 576, 1024, 16) and not is_crowd(big, 576, 1024, 16)


@pytest.mark.parametrize('backend_fixture', ['detector', 'detector_int'])
@pytest.mark.parametrize('faces, like', [(0, 'on'), (10**9, 'off')], ids=['crowd', 'no-crowd'])
def test_auto_upscale_follows_is_crowd(backend_fixture: str, faces: int, like: str, request: pytest.FixtureRequest,
                                       monkeypatch: pytest.MonkeyPatch):
    one = request.getfixturevalue(backend_fixture)
    auto, on, off = (Detector.load(one.path, one.backend, conf=0.0, img_size=48, upscale=mode)
                     for mode in ('auto', 'on', 'off'))
    image = noise((48, 80, 3))
    assert len(on.detect_array(image)) > len(off.detect_array(image))   # the modes differ on this image
    monkeypatch.setattr(netdef, 'AUTO_UPSCALE_FACES', faces)   # 0: every image is a crowd; 10**9: none is
    np.testing.assert_array_equal(auto.detect_array(image), {'on': on, 'off': off}[like].detect_array(image))


@pytest.mark.parametrize('plain_crowd', [True, False], ids=['crowd', 'no-crowd'])
def test_flip_mirror_pass_follows_the_plain_pass_upscale(detector: Detector, plain_crowd: bool,
                                                         monkeypatch: pytest.MonkeyPatch):
    from ifq_tinier_yolo.apps import detector as detector_module
    auto, on, off = (Detector.load(detector.path, detector.backend, conf=0.0, img_size=48, upscale=mode, flip=True)
                     for mode in ('auto', 'on', 'off'))
    image = noise((48, 80, 3))
    assert not np.array_equal(on.detect_array(image), off.detect_array(image))   # the modes differ here
    # the plain pass decides; a mirror pass asked again would answer the opposite
    answers = iter([plain_crowd, not plain_crowd])
    monkeypatch.setattr(detector_module, 'is_crowd', lambda *args: next(answers))
    np.testing.assert_array_equal(auto.detect_array(image), (on if plain_crowd else off).detect_array(image))


@pytest.mark.parametrize('levels', [0, 5, 1.5])
def test_bad_pyramid_levels(random_ifq: Path, levels):
    with pytest.raises(ConfigError, match='levels'):
        Detector.load(random_ifq, levels=levels)


def test_fuse_mirrored_averages_matched_boxes_and_halves_lone_ones():
    from ifq_tinier_yolo.apps.detector import fuse_mirrored
    plain = np.array([[100.0, 100, 50, 50, 0.9],     # found by both passes
                      [400, 400, 40, 40, 0.8],        # plain pass only: background texture
                      [110, 110, 10, 10, 0.7]])       # inside the face: a part of it, removed
    mirrored = np.array([[104.0, 98, 50, 54, 0.7],    # the same face (IoU 0.85)
                         [10, 300, 30, 30, 0.6]])     # mirrored pass only
    out = fuse_mirrored(plain, mirrored, 0.45)
    np.testing.assert_allclose(out, [[102, 99, 50, 52, 0.8],
                                     [400, 400, 40, 40, 0.4],
                                     [10, 300, 30, 30, 0.3]])
    # a pass with no boxes: every box keeps half its score
    np.testing.assert_allclose(fuse_mirrored(plain[:2], plain[:0], 0.45), plain[:2] * [1, 1, 1, 1, 0.5])


@pytest.mark.parametrize('backend_fixture', ['detector', 'detector_int'])
def test_flip_detector_fuses_the_image_and_its_mirror(backend_fixture: str, request: pytest.FixtureRequest):
    from ifq_tinier_yolo.apps.detector import fuse_mirrored
    plain = request.getfixturevalue(backend_fixture)
    conf = 0.02   # the random network scores about 0.01-0.03
    flip = Detector.load(plain.path, conf=conf, img_size=IMG_SIZE, flip=True)
    half = Detector.load(plain.path, conf=conf / 2, img_size=IMG_SIZE)
    image = noise((48, 80, 3))
    mirrored = half.detect_array(image[:, ::-1])
    mirrored[:, 0] = 80 - mirrored[:, 0] - mirrored[:, 2]
    want = fuse_mirrored(half.detect_array(image), mirrored, half.nms)
    got = flip.detect_array(image)
    assert len(want) > len(got) > 0   # not vacuous: the threshold applies to the fused scores
    np.testing.assert_array_equal(got, want[want[:, 4] >= conf])
    assert_inside(got, 80, 48)


@pytest.mark.parametrize('backend', ['int', None])
def test_detect_from_four_threads_equals_a_serial_run(backend):
    """The shipped model on the sample images, 4 threads at once vs one after another (the numpy
    engine, and the default backend: native where it is built)."""
    from concurrent.futures import ThreadPoolExecutor
    import cv2
    images = [cv2.imread(str(p)) for p in sorted((Path(__file__).parents[1] / 'data' / 'samples').iterdir())] * 4
    serial = [Detector.load(backend=backend).detect_array(im) for im in images]
    detector = Detector.load(backend=backend)
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(detector.detect_array, images))
    assert all(np.array_equal(a, b) for a, b in zip(serial, threaded)) and len(serial[0]) > 0
