"""The exports of the shipped model on the real dev images (../shared/data/wider/WIDER_val/images):
head integers equal to the engine's in onnxruntime (all 178), OpenCV DNN and qonnx's executor;
the two-head v2 table (random integer parameters) in onnxruntime on a handful."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ifq_tinier_yolo import netdef
from ifq_tinier_yolo.engine import runtime
from ifq_tinier_yolo.engine.model import IntegerModel
from ifq_tinier_yolo.engine.preprocess import letterbox
from ifq_tinier_yolo.imageio import read_image

pytest.importorskip('onnxruntime', reason='the export extra (pip install .[export]) is not installed')
from ifq_tinier_yolo.export import backend   # noqa: E402  (needs onnxruntime)
from ifq_tinier_yolo.export.cli import export_model   # noqa: E402
from ifq_tinier_yolo.export.onnx import build as build_onnx   # noqa: E402
from int_models import random_integer_model                  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / 'weights' / 'ifq_tinier_yolo.ifq'
HANDFUL = 3           # images for the slower executors (qonnx runs MultiThreshold in numpy)


@pytest.fixture(scope='module')
def model() -> IntegerModel:
    return runtime.load_model(SHIPPED)


@pytest.fixture(scope='module')
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped model in both formats, written by the CLI handler's function."""
    root = tmp_path_factory.mktemp('export_dev')
    out = {'onnx': root / 'model.onnx', 'qonnx': root / 'model.qonnx.onnx'}
    export_model(SHIPPED, out['onnx'], 'onnx')
    export_model(SHIPPED, out['qonnx'], 'qonnx')
    return out


def canvas(path: Path, size: int) -> np.ndarray:
    return letterbox(read_image(path), size)[0]


def count_equal(run_heads, model: IntegerModel, paths: list[Path], size: int) -> int:
    """Images whose head integers from `run_heads(canvas)` (every head) equal the engine's."""
    same = 0
    for path in paths:
        c = canvas(path, size)
        got, want = run_heads(c), runtime.run_heads(model, c)
        same += bool(len(got) == len(want) and all(map(np.array_equal, got, want)))
    return same


def report(capsys: pytest.CaptureFixture, line: str) -> None:
    with capsys.disabled():
        print(f'\n{line}')


def test_onnx_bit_exact_on_dev_images(model, exported, dev_images, capsys):
    b = backend.load(exported['onnx'], threads=1)
    same = count_equal(b.run_heads, model, dev_images, model.input_size)
    report(capsys, f'onnx bit-exact {same}/{len(dev_images)}')
    assert same == len(dev_images)


@pytest.mark.slow
def test_onnx_bit_exact_on_dev_images_half_size(model, exported, dev_images, capsys):
    b = backend.load(exported['onnx'], threads=1)
    same = count_equal(b.run_heads, model, dev_images, model.input_size // 2)
    report(capsys, f'onnx bit-exact at {model.input_size // 2} px {same}/{len(dev_images)}')
    assert same == len(dev_images)


def test_opencv_dnn_gives_the_same_integers(model, exported, dev_images, capsys):
    import cv2

    net = cv2.dnn.readNetFromONNX(str(exported['onnx']))
    net.enableWinograd(False)   # OpenCV 4's Winograd F(6x6, 3x3) rounds in float32: off before the first forward

    def run(c: np.ndarray) -> list[np.ndarray]:
        net.setInput(c[None])
        heads = [h[0] for h in net.forward([h.spec.name for h in model.heads])]   # int32 in OpenCV 5, float32 in 4
        assert all(np.array_equal(h, np.round(h)) for h in heads)
        return [h.astype(np.int64) for h in heads]

    sizes = (model.input_size, model.input_size // 2)
    same = sum(count_equal(run, model, dev_images[:HANDFUL], size) for size in sizes)
    report(capsys, f'opencv {cv2.__version__} dnn bit-exact {same}/{HANDFUL * len(sizes)}')
    assert same == HANDFUL * len(sizes)


def test_qonnx_execute_bit_exact_on_dev_images(model, exported, dev_images, capsys):
    pytest.importorskip('qonnx', reason='qonnx (export extra) is not installed')
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.util.cleanup import cleanup_model

    wrapped = cleanup_model(ModelWrapper(str(exported['qonnx']))).transform(InferDataTypes())
    inp, outs = wrapped.graph.input[0].name, [o.name for o in wrapped.graph.output]   # one a head, table order
    assert wrapped.get_tensor_datatype(inp).name == 'UINT8'
    assert {wrapped.get_tensor_datatype(o).name for o in outs} == {'INT32'}

    def run(c: np.ndarray) -> list[np.ndarray]:
        x = c.transpose(2, 0, 1)[None].astype(np.float32)                # (1, 3, S, S)
        result = execute_onnx(wrapped, {inp: x})
        return [result[o][0].astype(np.int64) for o in outs]

    same = count_equal(run, model, dev_images[:HANDFUL], model.input_size)
    report(capsys, f'qonnx bit-exact {same}/{HANDFUL}')
    assert same == HANDFUL


def test_v2_table_onnx_bit_exact_on_dev_images(dev_images, tmp_path, capsys):
    """The v2 table (stride-16 and stride-8 heads, upsample, concatenation) with random integer
    parameters: every head and the detections equal the engine's at the shipped input size."""
    model = random_integer_model(netdef.LAYERS_V2, 0)
    path = tmp_path / 'v2.onnx'
    path.write_bytes(build_onnx(model).SerializeToString())
    b = backend.load(path, threads=1)
    size, same = netdef.INPUT_SIZE, 0
    for p in dev_images[:HANDFUL]:
        c = letterbox(read_image(p), size)[0]
        same += all(np.array_equal(g, w) for g, w in zip(b.run_heads(c), runtime.run_heads(model, c)))
    report(capsys, f'v2 onnx bit-exact {same}/{HANDFUL}')
    assert same == HANDFUL
    image = read_image(dev_images[0])
    got = b.detect(image, 0.99, 0.45, size)                       # a threshold that keeps a few boxes
    assert len(got) and np.array_equal(got, runtime.detect(model, image, 0.99, 0.45, size))
