"""The integer engine: golden bit-exactness against torch, kernels, input checks, torch-free import."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ifq_tinier_yolo import netdef
from ifq_tinier_yolo.engine import layers as L
from ifq_tinier_yolo.engine import runtime
from ifq_tinier_yolo.errors import ConfigError, ImageError
from ifq_tinier_yolo.imageio import read_image
from ifq_tinier_yolo.netdef import LayerSpec

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / 'shared' / 'data' / 'samples'
# pool on the first layer, odd maps, a 1x1 hidden layer, a pool after a Winograd layer
ODD = (LayerSpec('c1', 'first', 8, 3, 1, pool=2), LayerSpec('c2', 'hidden', 12, 3, 1, pool=2),
       LayerSpec('c3', 'hidden', 16, 3, 2), LayerSpec('c4', 'hidden', 8, 1, 1),
       LayerSpec('c5', 'hidden', 16, 3, 1, pool=2), LayerSpec('head', 'head', 5, 1, 1))


@pytest.fixture(scope='module')
def torch_mod():
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    yield torch
    torch.set_grad_enabled(True)
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def full(torch_mod):
    """(random hwgq network of the netdef table, its integer model)."""
    from ifq_tinier_yolo.integrate.convert import convert_model
    from quant_nets import random_quant_network
    net = random_quant_network(seed=11, calib_size=64)
    return net, convert_model(net, netdef.INPUT_SIZE)


@pytest.fixture(scope='module')
def odd(torch_mod):
    from ifq_tinier_yolo.integrate.convert import convert_model
    from quant_nets import random_quant_network
    net = random_quant_network(ODD, ((1.0, 1.5),), seed=2, calib_size=32)
    return net, convert_model(net, 64)


def torch_heads(net, canvases: np.ndarray) -> np.ndarray:
    import torch
    x = torch.from_numpy(canvases).permute(0, 3, 1, 2).float()          # (B, 3, S, S)
    return net.head_integers(x)[0].numpy()


def sample_canvases(size: int) -> list[np.ndarray]:
    from ifq_tinier_yolo.engine.preprocess import letterbox
    paths = sorted(p for p in SAMPLES.glob('*') if p.suffix.lower() in ('.jpg', '.png'))
    return [letterbox(read_image(p), size)[0] for p in paths]


# --- the golden test ------------------------------------------------------------------------

def test_golden_random_and_real_images_at_416(full):
    """Engine head == torch head_integers, bit for bit, on random and real images at 416."""
    net, model = full
    rng = np.random.default_rng(0)
    canvases = [rng.integers(0, 256, (416, 416, 3), dtype=np.uint8)] + sample_canvases(416)
    for canvas in canvases:
        out = runtime.run(model, canvas)
        assert out.dtype == np.int32 and out.shape == (25, 26, 26)
        assert np.array_equal(out, torch_heads(net, canvas[None])[0])


@pytest.mark.parametrize('size', [48, 80, 128])
def test_golden_other_sizes_and_batches(odd, full, size):
    rng = np.random.default_rng(size)
    for net, model in (odd, full):
        stride = model.stride
        s = size // stride * stride or stride
        canvases = rng.integers(0, 256, (2, s, s, 3), dtype=np.uint8)
        out = runtime.run_batch(model, canvases)
        assert np.array_equal(out, torch_heads(net, canvases))
        assert np.array_equal(out[1], runtime.run(model, canvases[1]))


def test_extreme_inputs(full):
    """All-black, all-white and saturated-channel canvases (largest accumulators) stay exact."""
    net, model = full
    canvases = np.zeros((3, 64, 64, 3), dtype=np.uint8)
    canvases[1] = 255
    canvases[2, :, :, 1] = 255
    assert np.array_equal(runtime.run_batch(model, canvases), torch_heads(net, canvases))


def test_packed_codes_give_the_same_head(odd, full):
    rng = np.random.default_rng(3)
    for _, model in (odd, full):
        c = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
        assert np.array_equal(runtime.run_batch(model, c, packed=True), runtime.run_batch(model, c))


def test_int64_fallback_is_exact(odd, monkeypatch):
    """With the float32 bound forced to 1 every layer runs on int64 im2col GEMMs: same result."""
    net, model = odd
    c = np.random.default_rng(4).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    expected = runtime.run_batch(model, c)
    monkeypatch.setattr(L, 'FLOAT32_EXACT', 1)
    monkeypatch.setattr(runtime, '_PLANS', {})
    plan = runtime.prepare(model)
    assert all(s.weights.dtype == np.int64 and s.method != 'winograd' for s in plan)
    assert np.array_equal(runtime.run_batch(model, c), expected)


def test_plan_uses_winograd_for_3x3_stride1_binary_layers(full):
    plan = runtime.prepare(full[1])
    assert [s.method for s in plan] == ['im2col', 'im2col', 'im2col', 'winograd', 'winograd', 'winograd', 'head']
    assert all(s.weights.dtype == np.float32 for s in plan)
    assert runtime.prepare(full[1]) is plan                               # cached


# --- kernels ----------------------------------------------------------------------------------

@pytest.mark.parametrize('h, w', [(6, 6), (7, 5), (1, 1), (2, 9)])
def test_winograd_matches_direct_convolution(h, w):
    rng = np.random.default_rng(h * 10 + w)
    x = rng.integers(0, 4, (2, h, w, 5), dtype=np.uint8)
    wt = rng.choice(np.array([-1, 1], dtype=np.int8), (7, 5, 3, 3))
    tiles = L.winograd_conv3x3(x, L.winograd_filters(wt))                # (4, B, th, tw, O)
    got = L.interleave_tiles(tiles, h, w)                                 # (B, h, w, O), gain 4
    mat = wt.transpose(0, 2, 3, 1).reshape(7, -1).astype(np.int64)
    direct = L.im2col_gemm(x, mat, 3, 1).transpose(1, 2, 3, 0)
    assert np.array_equal(got, L.WINO_GAIN * direct)
    assert L.winograd_bound(192, 3, 1) < L.FLOAT32_EXACT


def test_pack_unpack_round_trip():
    rng = np.random.default_rng(0)
    for c in (1, 3, 4, 16, 17):
        codes = rng.integers(0, 4, (2, 3, 5, c), dtype=np.uint8)
        packed = L.pack_codes(codes)
        assert packed.dtype == np.uint8 and packed.shape == (2, 3, 5, -(-c // 4))
        assert np.array_equal(L.unpack_codes(packed, c), codes)


def test_maxpool_and_thresholds():
    acc = np.arange(2 * 1 * 5 * 4, dtype=np.float32).reshape(2, 1, 5, 4)    # (O, B, H, W)
    pooled = L.maxpool2(acc)
    assert pooled.shape == (2, 1, 2, 2) and pooled[0, 0, 0, 0] == acc[0, 0, 1, 1]
    t = np.array([[0], [5], [9]], dtype=np.float32)                        # (3, 1)
    codes = L.threshold_codes(np.array([[-1], [0], [1], [5], [6], [10]], np.float32), t)
    assert codes.dtype == np.uint8 and codes[:, 0].tolist() == [0, 0, 1, 1, 2, 3]


# --- inputs and detection -----------------------------------------------------------------------

def test_bad_inputs(full):
    model = full[1]
    with pytest.raises(ImageError):
        runtime.run(model, np.zeros((64, 64, 3), dtype=np.float32))
    with pytest.raises(ImageError, match='multiple of 16'):
        runtime.run(model, np.zeros((60, 64, 3), dtype=np.uint8))
    with pytest.raises(ImageError):
        runtime.run(model, np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(ConfigError, match='img_size'):
        runtime.detect(model, np.zeros((50, 70, 3), dtype=np.uint8), 0.3, 0.45, img_size=100)
    with pytest.raises(ImageError):
        runtime.detect(model, np.zeros((0, 70, 3), dtype=np.uint8), 0.3, 0.45)


@pytest.mark.parametrize('width, height, want', [
    (1024, 683, (384, 576)),    # landscape: 576 x 384 exactly, no padding rows
    (1024, 700, (400, 576)),    # 394 rows padded to 400 (3 above, 3 below)
    (512, 600, (576, 496)),     # portrait: the height is the longer side
    (576, 576, (576, 576)),
    (2000, 20, (16, 576)),      # a strip keeps at least one stride
])
def test_letterbox_pads_to_multiples_of_the_stride(width, height, want):
    """letterbox(..., multiple): the longer side `size`, the other rounded up to the stride, the
    image centred; multiple=None keeps the square canvas the training batches use."""
    from ifq_tinier_yolo.engine.preprocess import letterbox, unletterbox_boxes
    image = np.random.default_rng(0).integers(1, 256, (height, width, 3), dtype=np.uint8)
    canvas, scale, pad_x, pad_y = letterbox(image, 576, 16)
    assert canvas.shape == (*want, 3) and scale == 576 / max(width, height)
    new_h, new_w = (canvas[..., 0] > 0).any(1).sum(), (canvas[..., 0] > 0).any(0).sum()   # image pixels are >= 1
    assert (pad_x, pad_y) == ((want[1] - new_w) // 2, (want[0] - new_h) // 2)
    assert canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w].min() >= 1
    corners = unletterbox_boxes(np.array([[pad_x, pad_y, pad_x + new_w, pad_y + new_h]], float), scale, pad_x,
                                pad_y, width, height)
    np.testing.assert_allclose(corners, [[0, 0, width, height]], atol=1 / scale)
    square = letterbox(image, 576)[0]
    assert square.shape == (576, 576, 3)


def test_detect_runs_on_the_padded_canvas(full):
    """detect letterboxes to multiples of the stride only: its faces are the decoded heads of that
    (not square) canvas, mapped back."""
    from ifq_tinier_yolo.engine.preprocess import letterbox, unletterbox_boxes
    model = full[1]
    image = np.random.default_rng(5).integers(0, 256, (90, 200, 3), dtype=np.uint8)
    canvas, scale, pad_x, pad_y = letterbox(image, 128, netdef.total_stride(model.specs))
    assert canvas.shape == (64, 128, 3)
    boxes, scores = runtime.decode_heads(model.decoders, runtime.run_heads(model, canvas), 0.01, 0.45)
    faces = runtime.detect(model, image, 0.01, 0.45, img_size=128)
    assert len(faces) == len(boxes) > 0
    xyxy = unletterbox_boxes(boxes, scale, pad_x, pad_y, 200, 90)
    np.testing.assert_allclose(faces[:, :2], xyxy[:, :2])
    np.testing.assert_allclose(faces[:, 4], scores)


def test_detect_matches_the_torch_path(full):
    """Same faces as model.predict.detect_batch, boxes within 1 network pixel."""
    from ifq_tinier_yolo.model.predict import detect_batch
    net, model = full
    image = read_image(SAMPLES / 'grace_hopper.jpg') if (SAMPLES / 'grace_hopper.jpg').is_file() else \
        np.random.default_rng(1).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    size = 128
    for conf in (0.01, 0.02, 1.0):
        ours = runtime.detect(model, image, conf, 0.45, img_size=size)
        ref = detect_batch(net, [image], size, conf, 0.45)[0]
        assert ours.dtype == np.float64 and ours.shape[1] == 5
        assert ours.shape == ref.shape, conf
        scale = size / max(image.shape[:2])                               # network px per original px
        assert np.abs(ours[:, :4] - ref[:, :4]).max(initial=0) * scale <= 1.0
        assert np.abs(ours[:, 4] - ref[:, 4]).max(initial=0) < 1e-4
    assert runtime.detect(model, image, 1.0, 0.45, img_size=size).shape == (0, 5)


def test_engine_runs_without_torch(odd, tmp_path):
    """In a process where `import torch` fails, the engine loads an .ifq and reproduces torch."""
    from ifq_tinier_yolo.integrate.modelfile import save
    net, model = odd
    path = tmp_path / 'odd.ifq'
    save(model, path)
    canvas = np.random.default_rng(7).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    np.save(tmp_path / 'canvas.npy', canvas)
    np.save(tmp_path / 'expected.npy', torch_heads(net, canvas[None])[0])
    code = f'''
import sys
sys.modules['torch'] = None
import numpy as np
from ifq_tinier_yolo.engine import runtime
m = runtime.load_model({str(path)!r})
out = runtime.run(m, np.load({str(tmp_path / 'canvas.npy')!r}))
assert np.array_equal(out, np.load({str(tmp_path / 'expected.npy')!r})), 'engine differs from torch'
dets = runtime.detect(m, np.zeros((40, 50, 3), np.uint8), 0.01, 0.45)
assert dets.dtype == np.float64 and dets.shape[1] == 5
assert sys.modules['torch'] is None
print('ok')
'''
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr
