"""The native C runtime (csrc/, ifq_tinier_yolo/native): bit-exact with the numpy engine, head
integer for head integer and box for box, on every kernel set this CPU runs; the backend's
contract; streaming feature memory; the generated decode tables; C header export."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from ifq_tinier_yolo import native, netdef
from ifq_tinier_yolo.native import binding
from ifq_tinier_yolo.engine import modelfile as fmt
from ifq_tinier_yolo.engine import runtime
from ifq_tinier_yolo.engine.decode import (SIGMOID_LUT, SIGMOID_RANGE, decode_fixed, lut_lookup, requantize,
                                           score_threshold_q)
from ifq_tinier_yolo.engine.nms import nms_vote_at
from ifq_tinier_yolo.engine.preprocess import letterbox
from ifq_tinier_yolo.errors import ConfigError, ImageError, ModelFileError
from ifq_tinier_yolo.imageio import read_image
from ifq_tinier_yolo.native.backend import MAX_RUNNERS, NativeBackend

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / 'weights' / 'ifq_tinier_yolo.ifq'
CHAIN = REPO / 'weights' / 'v1.ifq'   # the one-head chain (the previous shipped model)
CONF, NMS = 0.05, 0.45   # a low threshold: many boxes reach NMS
DETECT_IMAGES = 12        # images that also go through detect() end to end, per kernel set
FEATURE_RATIO_GOAL = 18   # the paper's feature-memory ratio (issue 15)


def report(capsys: pytest.CaptureFixture, line: str) -> None:
    with capsys.disabled():
        print(f'\n{line}')


pytestmark = pytest.mark.usefixtures('native_built')


@pytest.fixture(scope='module')
def model() -> runtime.IntegerModel:
    return runtime.load_model(SHIPPED)


@pytest.fixture(scope='module')
def reference(model, dev_images) -> list[dict]:
    """Per dev image, what the numpy engine gives at the model's input size: canvas (as detect
    makes it: padded to multiples of the stride only, so most are not square), heads, decoded
    boxes and scores; and for the first DETECT_IMAGES the image and detect()'s result. Computed
    once for all kernel sets (the numpy engine is the slow part of these tests)."""
    out = []
    for i, path in enumerate(dev_images):
        image = read_image(path)
        canvas = letterbox(image, model.input_size, netdef.total_stride(model.specs))[0]
        heads = runtime.run_heads(model, canvas)   # every head: the shipped table may have several
        ref = dict(canvas=canvas, heads=heads, decoded=runtime.decode_heads(model.decoders, heads, CONF, NMS))
        if i < DETECT_IMAGES:
            ref.update(image=image, faces=runtime.detect(model, image, CONF, NMS))
        out.append(ref)
    return out


@pytest.mark.parametrize('kernels', ['portable', 'avx2', 'avx512', 'neon', 'amx'])
def test_native_bit_exact_on_dev_images(kernels, reference, capsys):
    if kernels not in native.supported_kernels():
        pytest.skip(f'kernel set {kernels} does not run on this CPU')
    backend = native.load(SHIPPED, kernels=kernels)
    assert backend.kernels == kernels
    same = 0
    for ref in reference:
        heads = backend.run_heads(ref['canvas'])
        boxes, scores = backend.decode_heads(ref['heads'], CONF, NMS)
        same += bool(len(heads) == len(ref['heads']) and all(map(np.array_equal, heads, ref['heads']))
                     and np.array_equal(boxes, ref['decoded'][0]) and np.array_equal(scores, ref['decoded'][1]))
        if 'image' in ref:
            np.testing.assert_array_equal(backend.detect(ref['image'], CONF, NMS), ref['faces'])
    report(capsys, f'native bit-exact {same}/{len(reference)} ({kernels})')
    assert same == len(reference)


def test_native_other_sizes_and_random_model(random_ifq: Path):
    """A random-weight model (negative signs, pooled layers) at several canvas shapes, square and
    not, every kernel set."""
    model = runtime.load_model(random_ifq)
    rng = np.random.default_rng(3)
    for kernels in native.supported_kernels():
        backend = native.load(random_ifq, kernels=kernels)
        for h, w in ((16, 16), (64, 64), (208, 208), (16, 80), (208, 48)):
            canvas = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            np.testing.assert_array_equal(backend.run(canvas), runtime.run(model, canvas), err_msg=kernels)


def test_native_threads_split_the_head_rows(random_ifq: Path):
    """threads=N: N runners compute bands of head rows in parallel; the head is the same."""
    model = runtime.load_model(random_ifq)
    rng = np.random.default_rng(4)
    for threads in (2, 3):
        backend = native.load(random_ifq, threads=threads)
        for h, w in ((16, 16), (48, 48), (160, 160), (160, 64)):
            canvas = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            np.testing.assert_array_equal(backend.run(canvas), runtime.run(model, canvas))
    with pytest.raises(ConfigError):
        native.load(random_ifq, threads=0)


def test_native_tiny_table(tiny_ifq_bytes: bytes):
    """The 4-layer fuzz seed table (4 and 6 channels, a pool after a stride-2 first layer)."""
    model = fmt.from_bytes(tiny_ifq_bytes)
    canvas = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for kernels in native.supported_kernels():
        backend = NativeBackend(tiny_ifq_bytes, 'tiny', kernels)
        np.testing.assert_array_equal(backend.run(canvas), runtime.run(model, canvas))


def test_native_decode_with_containment(reference):
    """ifq_decode's containment option and box voting equal nms_vote_at's, on the one-head chain
    (weights/v1.ifq) whose single decoder this compares with."""
    chain = runtime.load_model(CHAIN)
    backend = native.load(CHAIN)
    head = runtime.run(chain, reference[0]['canvas'])
    boxes_q, scores_q, obj = decode_fixed(head, chain.anchors_q16, chain.stride, chain.out_multiplier,
                                          chain.out_shift, score_threshold_q(0.01))
    keep, voted = nms_vote_at(boxes_q, obj, scores_q, 0.45, contain=0.8)
    boxes, scores = backend.decode_head(head, 0.01, 0.45, contain=0.8)
    np.testing.assert_array_equal((boxes * 256).astype(np.int64), voted)
    np.testing.assert_array_equal((scores * 65536).astype(np.int64), scores_q[keep])
    assert (voted != boxes_q[keep]).any(axis=1).sum() > 10   # the votes moved boxes
    # IoU 1 suppresses nothing (the pyramid's levels): every candidate, unmoved, in rank order
    keep, voted = nms_vote_at(boxes_q, obj, scores_q, 1.0)
    boxes, _ = backend.decode_head(head, 0.01, 1.0)
    assert len(keep) == len(boxes_q)
    np.testing.assert_array_equal((boxes * 256).astype(np.int64), voted)
    np.testing.assert_array_equal(voted, boxes_q[np.lexsort((np.arange(len(obj)), -obj))])


def test_native_detect_contract(model):
    backend = native.load(SHIPPED, kernels='portable')
    assert backend.input_size == model.input_size and backend.specs == model.specs
    empty = backend.detect(np.zeros((40, 30, 3), np.uint8), 0.99, 0.45, img_size=64)
    assert empty.shape == (0, 5) and empty.dtype == np.float64
    with pytest.raises(ConfigError):
        backend.detect(np.zeros((40, 30, 3), np.uint8), 0.3, 0.45, img_size=100)
    with pytest.raises(ConfigError):
        backend.detect(np.zeros((40, 30, 3), np.uint8), 1.5, 0.45)
    with pytest.raises(ImageError):
        backend.detect(np.zeros((40, 30), np.uint8), 0.3, 0.45)
    with pytest.raises(ImageError):   # sides must be multiples of the stride
        backend.run_heads(np.zeros((64, 40, 3), np.uint8))
    for w in range(16, 16 * (MAX_RUNNERS + 3), 16):   # one runner per canvas shape, the last few kept
        backend.run_heads(np.zeros((16, w, 3), np.uint8))
    assert list(backend._runners)[-MAX_RUNNERS:] == [((16, w), None) for w in range(16 * 3, 16 * (MAX_RUNNERS + 3), 16)]
    assert len(backend._runners) == MAX_RUNNERS
    with pytest.raises(ConfigError):
        native.load(SHIPPED, kernels='vax')
    with pytest.raises(ValueError):   # heads the runner of their size does not make
        backend.decode_heads([np.zeros((20, 4, 4), np.int32)] * backend.num_heads, 0.3, 0.45)
    # over 2**23 anchors x cells (here 46 M) the NMS vote sums could overflow int64: refused
    # before anything is allocated
    with pytest.raises(ValueError, match=r'more than 2\^23 candidate boxes'):
        binding.Runner(backend._model, 1 << 15, 1 << 15)


def lowest_objectness(dec, conf_q: int) -> int:
    """The lowest int32 objectness whose fixed-point score reaches conf_q (2**31 if none), by bisection."""
    def score(h: int) -> int:
        return int(lut_lookup(requantize(np.array([h]), dec.out_multiplier, dec.out_shift), SIGMOID_LUT,
                              *SIGMOID_RANGE)[0])
    lo, hi = -2**31, 2**31 - 1
    if score(hi) < conf_q:
        return 2**31
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if score(mid) >= conf_q else (mid + 1, hi)
    return lo


@pytest.mark.parametrize('conf', [0.0, 1e-5, 0.3, 0.5, 0.9, 0.99999, 1.0])
def test_native_decode_thresholds_like_numpy(model, conf):
    """The C decoder compares each objectness integer with the lowest one whose score reaches
    conf (found once per call) instead of scoring every cell: the same boxes as numpy at any
    threshold, on heads of random integers spread over the whole int32 range and near zero."""
    backend = native.load(SHIPPED)
    rng = np.random.default_rng(12)
    shapes = backend._runner((model.input_size, model.input_size // 2)).head_shapes
    for spread in (2**31 - 2, 2**18, 0):
        heads = [rng.integers(-spread, spread + 1, shape, dtype=np.int64).astype(np.int32) for shape in shapes]
        if not spread:   # objectness integers next to the lowest one that reaches conf
            for head, dec in zip(heads, model.decoders):
                edge = lowest_objectness(dec, score_threshold_q(conf))
                head[4::5] = np.clip(edge + rng.integers(-3, 4, head[4::5].shape), -2**31, 2**31 - 1)
        boxes, scores = backend.decode_heads(heads, conf, NMS)
        want_boxes, want_scores = runtime.decode_heads(model.decoders, heads, conf, NMS)
        np.testing.assert_array_equal(boxes, want_boxes)
        np.testing.assert_array_equal(scores, want_scores)


def test_native_refuses_a_damaged_file(tmp_path: Path):
    bad = tmp_path / 'm.ifq'
    bad.write_bytes(SHIPPED.read_bytes()[:100])
    with pytest.raises(ModelFileError, match=r'm\.ifq: truncated \('):
        native.load(bad)


def test_native_feature_memory_ratio(capsys):
    """Line buffers: the streaming runner holds far less than the float network's peak."""
    backend = native.load(SHIPPED)
    mem = backend.feature_memory()
    report(capsys, f'native feature memory ratio {mem.ratio:.1f} ({mem.native_bytes} bytes at {mem.size} px, '
                   f'float {mem.float_bytes})')
    assert mem.ratio >= FEATURE_RATIO_GOAL
    canvas = mem.size * mem.size * 3
    assert mem.native_bytes < canvas   # not even the uint8 input image is held whole
    assert native.feature_memory(SHIPPED.read_bytes(), mem.size) == mem == native.feature_memory(SHIPPED)


def test_tables_file_is_generated_from_decode():
    from ifq_tinier_yolo.native.tables import TABLES_C, tables_source
    assert TABLES_C.read_text() == tables_source(), 'run python -m ifq_tinier_yolo.native.tables'


def test_emit_c_header(tmp_path: Path, tiny_ifq_bytes: bytes):
    """The header holds the file's bytes; a C program loading it from the array reads the same model."""
    from ifq_tinier_yolo.native import build
    from ifq_tinier_yolo.native.emit import emit_c_header
    header = tmp_path / 'model.h'
    emit_c_header(tiny_ifq_bytes, header, name='tiny_model')
    main = tmp_path / 'main.c'
    main.write_text('#include <stdio.h>\n#include "ifq.h"\n#include "model.h"\n'
                    'int main(void) { ifq_model *m; ifq_error e;\n'
                    '  if (ifq_model_load(tiny_model, tiny_model_len, &m, &e)) { puts(e.message); return 1; }\n'
                    '  printf("%d %d\\n", ifq_model_input_size(m), ifq_model_num_layers(m));\n'
                    '  ifq_model_free(m); return 0; }\n')
    exe = tmp_path / 'main'
    cc = build.find_compiler()
    subprocess.run([cc, '-std=c99', f'-I{build.CSRC}', f'-I{tmp_path}', str(main),
                    *map(str, build.library_sources()), '-o', str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    model = fmt.from_bytes(tiny_ifq_bytes)
    assert out == [str(model.input_size), str(len(model.layers))]


def test_selftest_program(random_ifq: Path):
    """csrc/tools/ifq_selftest.c: every kernel set of this CPU equals the portable one (the porting check)."""
    from ifq_tinier_yolo.native.build import CSRC, build_program
    exe = build_program(CSRC / 'tools' / 'ifq_selftest.c', 'ifq_selftest')
    for model in (SHIPPED, random_ifq):
        done = subprocess.run([str(exe), str(model), '32', '96', '96x48'], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and ': 12/12 heads equal' in done.stdout, done.stdout + done.stderr


@pytest.mark.slow
def test_neon_under_emulation(random_ifq: Path, tmp_path: Path, capsys):
    """The NEON set, cross-compiled for AArch64 and run under qemu, equals the portable one."""
    import shutil
    from ifq_tinier_yolo.native.build import CSRC, library_sources
    cc, qemu = shutil.which('aarch64-linux-gnu-gcc'), shutil.which('qemu-aarch64')
    if not cc or not qemu:
        pytest.skip('needs aarch64-linux-gnu-gcc and qemu-aarch64 (apt: gcc-aarch64-linux-gnu qemu-user)')
    exe = tmp_path / 'selftest'
    subprocess.run([cc, '-static', '-std=c99', '-O2', f'-I{CSRC}', str(CSRC / 'tools' / 'ifq_selftest.c'),
                    *map(str, library_sources()), '-o', str(exe)], check=True, capture_output=True)
    for model in (SHIPPED, random_ifq):
        done = subprocess.run([qemu, str(exe), str(model), '32', '64'], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and 'neon: 8/8' in done.stdout, done.stdout + done.stderr
    report(capsys, f'neon (qemu-aarch64): {done.stdout.strip()}')
