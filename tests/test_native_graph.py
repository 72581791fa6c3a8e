"""The native C runtime on layer graphs (format version 2): named inputs concatenated along
channels, upsampling, several heads, one decode + NMS over all heads. Every head integer and
every box equal to the numpy engine's, on every kernel set this CPU runs, at two input sizes."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from ifq_tinier_yolo import native, netdef
from ifq_tinier_yolo.engine import modelfile as fmt
from ifq_tinier_yolo.engine import runtime
from ifq_tinier_yolo.native import binding
from ifq_tinier_yolo.native.backend import NativeBackend

from int_models import random_integer_model
from test_two_heads import SMALL

CONF, NMS = 0.05, 0.45                        # a low threshold: many boxes of both heads reach NMS
SMALL_CONF = 0.0                              # the converted SMALL network scores low: every candidate
V2_SIZES = (64, 96)                           # small canvases keep the numpy reference quick
SMALL_SIZES = (32, 48)
FEATURE_RATIO_GOAL = 18                       # the paper's feature-memory ratio (issue 15)


pytestmark = pytest.mark.usefixtures('native_built')


@functools.cache
def small_graph_bytes() -> bytes:
    """The .ifq bytes of tests/test_two_heads.py's SMALL graph (every kind of layer), converted
    from a random quantization network: the graph seed of the loader tests too."""
    from conftest import one_torch_thread
    from quant_nets import random_quant_network
    from ifq_tinier_yolo.integrate.convert import convert_model
    with one_torch_thread():
        return fmt.to_bytes(convert_model(random_quant_network(SMALL, seed=2, calib_size=32), 32))


@functools.cache
def v2_bytes() -> bytes:
    """A random integer model of the two-scale table that ships (netdef.LAYERS_V2)."""
    return fmt.to_bytes(random_integer_model(netdef.LAYERS_V2, seed=11, size=V2_SIZES[0]))


@functools.cache
def v4_bytes() -> bytes:
    """A random integer model of netdef.LAYERS_V4: a 'fixed' layer (int8 weights on codes), format version 3."""
    return fmt.to_bytes(random_integer_model(netdef.LAYERS_V4, seed=12, size=V2_SIZES[0]))


def cases() -> list[tuple[str, bytes, tuple[int, ...], float]]:
    """(name, .ifq bytes, input sizes, score threshold) of each graph model tested."""
    return [('small', small_graph_bytes(), SMALL_SIZES, SMALL_CONF), ('v2', v2_bytes(), V2_SIZES, CONF),
            ('v4', v4_bytes(), V2_SIZES, CONF)]


@pytest.fixture(scope='module')
def references() -> dict[str, list[dict]]:
    """Per model and input size: a random canvas, its heads and decoded boxes by the numpy
    engine, and detect() on a random image (computed once for all kernel sets)."""
    rng = np.random.default_rng(5)
    out = {}
    for name, data, sizes, conf in cases():
        model = fmt.from_bytes(data)
        out[name] = []
        for size in sizes:
            canvas = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            image = rng.integers(0, 256, (size * 3 // 2, size, 3), dtype=np.uint8)   # letterboxed, resized
            heads = runtime.run_heads(model, canvas)
            out[name].append(dict(size=size, canvas=canvas, heads=heads, image=image, conf=conf,
                                  decoded=runtime.decode_heads(model.decoders, heads, conf, NMS),
                                  faces=runtime.detect(model, image, conf, NMS, size)))
    return out


@pytest.mark.parametrize('kernels', ['portable', 'avx2', 'avx512', 'neon', 'amx'])
def test_graph_heads_and_boxes_bit_exact(kernels, references, capsys):
    if kernels not in native.supported_kernels():
        pytest.skip(f'{kernels} does not run on this CPU')
    counts = []
    for name, data, _, _ in cases():
        backend = NativeBackend(data, name, kernels)
        same = 0
        for ref in references[name]:
            heads = backend.run_heads(ref['canvas'])
            assert [h.shape for h in heads] == [h.shape for h in ref['heads']]
            assert all(np.array_equal(g, w) for g, w in zip(heads, ref['heads'])), (name, ref['size'])
            boxes, scores = backend.decode_heads(heads, ref['conf'], NMS)
            want_boxes, want_scores = ref['decoded']
            assert len(want_boxes) > 1
            np.testing.assert_array_equal(boxes, want_boxes)
            np.testing.assert_array_equal(scores, want_scores)
            np.testing.assert_array_equal(backend.detect(ref['image'], ref['conf'], NMS, ref['size']), ref['faces'])
            same += 1
        counts.append(f'{name} {same}/{len(references[name])}')
    with capsys.disabled():
        print(f'\nnative graph bit-exact ({kernels}): {", ".join(counts)} sizes, every head, boxes, detect')


@pytest.mark.parametrize('kernels', ['portable', 'avx2', 'avx512', 'neon', 'amx'])
def test_graph_runner_of_some_heads(kernels, references):
    """A runner made for some heads only (ifq_runner_create_heads) gives those heads' integers
    (the full run's, in the order asked for) and the boxes and faces of the numpy engine asked for
    the same heads; so does a runner per thread."""
    if kernels not in native.supported_kernels():
        pytest.skip(f'{kernels} does not run on this CPU')
    for name, data, _, conf in cases():
        model = fmt.from_bytes(data)
        backend, threaded = NativeBackend(data, name, kernels), NativeBackend(data, name, kernels, threads=2)
        for ref in references[name]:
            for heads in ((0,), (1,), (1, 0)):                          # in the order asked for
                want = [ref['heads'][h] for h in heads]
                for got in (runtime.run_heads(model, ref['canvas'], heads=heads),
                            backend.run_heads(ref['canvas'], heads), threaded.run_heads(ref['canvas'], heads)):
                    assert len(got) == len(heads) and all(np.array_equal(g, w) for g, w in zip(got, want)), \
                        (name, ref['size'], heads)
                faces = runtime.detect(model, ref['image'], conf, NMS, ref['size'], heads)
                np.testing.assert_array_equal(backend.detect(ref['image'], conf, NMS, ref['size'], heads), faces)
                np.testing.assert_array_equal(threaded.detect(ref['image'], conf, NMS, ref['size'], heads), faces)
    model = binding.Model(v2_bytes())
    full, coarse = binding.Runner(model, 64, 64), binding.Runner(model, 64, 64, heads=(0,))
    assert coarse.max_boxes == 3 * 4 * 4 < full.max_boxes                 # head16 only: 3 anchors x 4 x 4
    with pytest.raises(ValueError, match='no head'):
        binding.Runner(model, 64, 64, heads=(2,))


def test_graph_boxes_come_from_both_heads(references):
    """The reference cases exercise the cross-head ranking: kept boxes of both strides."""
    model = fmt.from_bytes(v2_bytes())
    for ref in references['v2']:
        per_head = [runtime.decode_heads([d], [h], CONF, NMS)[0] for d, h in zip(model.decoders, ref['heads'])]
        assert all(len(b) for b in per_head)


def test_graph_backend_contract():
    backend = NativeBackend(v2_bytes(), 'v2')
    model = fmt.from_bytes(v2_bytes())
    canvas = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert backend.num_heads == 2
    with pytest.raises(ValueError, match='2 heads'):
        backend.run(canvas)
    heads = backend.run_heads(canvas)
    with pytest.raises(ValueError):
        backend.decode_heads(heads[:1], CONF, NMS)
    with pytest.raises(ValueError):
        backend.decode_heads([heads[1], heads[0]], CONF, NMS)
    threaded = NativeBackend(v2_bytes(), 'v2', threads=2)   # a graph runs on one runner: the same heads
    assert all(np.array_equal(a, b) for a, b in zip(threaded.run_heads(canvas), runtime.run_heads(model, canvas)))


def test_graph_chain_still_one_head():
    """A single-head model keeps run() and decode_head(); run_heads gives the one head in a list."""
    model = random_integer_model(netdef.LAYERS, seed=3, size=64)
    backend = NativeBackend(fmt.to_bytes(model), 'v1')
    canvas = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    head = backend.run(canvas)
    np.testing.assert_array_equal(head, runtime.run(model, canvas))
    assert len(backend.run_heads(canvas)) == 1
    np.testing.assert_array_equal(backend.decode_head(head, CONF, NMS)[0],
                                  runtime.decode_head(model, head, CONF, NMS)[0])


def test_graph_feature_memory(capsys):
    """v2 at 576 px streams too: line buffers of every map (conv3 kept only for the rows conv7
    has still to read) plus both int32 heads, against the float network's peak."""
    data = fmt.to_bytes(random_integer_model(netdef.LAYERS_V2, seed=1, size=576))
    mem = native.feature_memory(data, 576)
    with capsys.disabled():
        print(f'\nnative v2 feature memory at 576: {mem.native_bytes} bytes, float {mem.float_bytes}, '
              f'ratio {mem.ratio:.1f}')
    assert mem.ratio >= FEATURE_RATIO_GOAL


def test_graph_detector_native_equals_numpy(tmp_path):
    """The product path: a v2 model file in Detector (pyramid, flip) on the native backend gives the
    faces of the numpy engine."""
    from ifq_tinier_yolo.apps.detector import Detector
    path = tmp_path / 'v2.ifq'
    path.write_bytes(v2_bytes())
    image = np.random.default_rng(6).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    want = Detector.load(path, backend='int', conf=CONF, flip=True).detect_array(image)
    got = Detector.load(path, backend='native', conf=CONF, flip=True)
    assert got.backend == 'native'
    np.testing.assert_array_equal(got.detect_array(image), want)
    assert len(want)


def blank_canvases(size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Canvases with blank (letterbox fill) regions of many shapes: the runner copies the output of
    windows that see only blank pixels (csrc/ifq_run.c), so each shape must still give numpy's heads."""
    fill = netdef.LETTERBOX_FILL
    def image():
        return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    whole = np.full((size, size, 3), fill, np.uint8)
    bands, pillars, holes, dark = image(), image(), image(), image()
    bands[:size // 3], bands[-size // 4:] = fill, fill                   # a landscape photo letterboxed
    pillars[:, :size // 3], pillars[:, -size // 5:] = fill, fill         # a portrait photo
    holes[size // 4:size // 2, size // 8:size // 2] = fill               # a blank block inside the image
    dark[..., 0] = fill                                                  # one channel blank: never blank pixels
    dark[::7, ::5] = fill                                                # scattered blank pixels
    return [whole, bands, pillars, holes, dark]


def test_threads_split_every_head():
    """threads=N on a graph: N runners fill bands of every head's rows (the stride-8 head's rows in
    the same proportion), each map starting at the lowest row its band reads; the heads equal the
    numpy engine's on canvases of several shapes, bands of one head row included."""
    rng = np.random.default_rng(11)
    for name, data, sizes, _ in cases():
        model = fmt.from_bytes(data)
        for threads in (2, 3):
            backend = NativeBackend(data, name, threads=threads)
            for h, w in [(s, s) for s in sizes] + [(sizes[-1] // 2, sizes[-1]), (sizes[0] + 32, 32)]:
                canvas = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                got, want = backend.run_heads(canvas), runtime.run_heads(model, canvas)
                assert all(np.array_equal(g, x) for g, x in zip(got, want)), (name, threads, h, w)


@pytest.mark.parametrize('kernels', ['portable', 'avx512', 'amx'])
def test_a_layers_first_blank_pixels_are_computed(kernels):
    """On a fresh runner a layer's blank pixel is unknown until computed once. Here conv2's first
    blank positions (row 1, columns 32..) fill a whole 32-position block of the AMX set, after a
    block without any: that block must be computed, not copied from a blank pixel never made."""
    if kernels not in native.supported_kernels():
        pytest.skip(f'{kernels} does not run on this CPU')
    data = v2_bytes()
    model, backend = fmt.from_bytes(data), NativeBackend(data, 'v2', kernels)
    canvas = np.random.default_rng(9).integers(1, 256, (32, 272, 3), dtype=np.uint8)
    # conv2 position x (two stride-2 3x3 layers) reads canvas columns 4x-3 .. 4x+3: the fill from
    # column 125 on makes x = 32 .. 66 blank and leaves every x < 32 touching the image
    canvas[:, 125:] = netdef.LETTERBOX_FILL
    want = runtime.run_heads(model, canvas)
    assert all(np.array_equal(g, w) for g, w in zip(backend.run_heads(canvas), want))


@pytest.mark.parametrize('kernels', ['portable', 'avx512', 'amx'])
def test_blank_regions_are_bit_exact(kernels):
    if kernels not in native.supported_kernels():
        pytest.skip(f'{kernels} does not run on this CPU')
    rng = np.random.default_rng(8)
    for name, data, sizes, _ in cases():
        model, backend = fmt.from_bytes(data), NativeBackend(data, name, kernels)
        for size in sizes:
            for canvas in blank_canvases(size, rng):
                want = runtime.run_heads(model, canvas)
                # twice: the second run copies the blank pixels the first one computed
                for _ in range(2):
                    assert all(np.array_equal(g, w) for g, w in zip(backend.run_heads(canvas), want)), (name, size)


@pytest.mark.parametrize('kernels', ['portable', 'avx512', 'amx'])
def test_narrow_inputs_on_odd_widths(kernels):
    """Layers reading 16 and 32 channels on maps whose widths are not multiples of 4 and 2: the
    AMX set unpacks such rows 64 / C pixels a store and the last pixels one at a time."""
    if kernels not in native.supported_kernels():
        pytest.skip(f'{kernels} does not run on this CPU')
    table = (netdef.LayerSpec('c1', 'first', 16, 3, 1), netdef.LayerSpec('c2', 'hidden', 32, 3, 1, pool=2),
             netdef.LayerSpec('c3', 'hidden', 8, 3, 1), netdef.head_layer(((1.0, 1.5),), 'h'))
    model = random_integer_model(table, seed=5, size=34)
    backend = NativeBackend(fmt.to_bytes(model), 'narrow', kernels)
    rng = np.random.default_rng(5)
    for h, w in ((34, 34), (12, 30), (8, 38)):   # c2 reads 34 / 30 / 38 pixels a row, c3 17 / 15 / 19
        canvas = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert all(np.array_equal(g, x) for g, x in zip(backend.run_heads(canvas), runtime.run_heads(model, canvas)))
