"""ONNX / QONNX export (export/): graphs equal to the engine on small random models and the shipped
model, the onnxruntime backend's detect contract, the CLI handler, bad inputs."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from ifq_tinier_yolo import netdef
from ifq_tinier_yolo.engine import modelfile, runtime
from ifq_tinier_yolo.engine.model import IntegerModel
from ifq_tinier_yolo.errors import ConfigError, ConversionError, ImageError, ModelFileError, OutputError
from ifq_tinier_yolo.imageio import read_image
from ifq_tinier_yolo.netdef import LayerSpec, head_layer

from int_models import random_integer_model

onnx = pytest.importorskip('onnx', reason='the export extra (pip install .[export]) is not installed')
ort = pytest.importorskip('onnxruntime', reason='the export extra (pip install .[export]) is not installed')

from ifq_tinier_yolo.export import backend, meta, qonnx as xq   # noqa: E402  (needs onnx)
from ifq_tinier_yolo.export import onnx as xo                  # noqa: E402
from ifq_tinier_yolo.export.cli import add_arguments, cli_export, export_model   # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# the one-head chain (the previous shipped model): the structure tests count its nodes; the
# shipped two-head model's exports are checked end to end in test_export_dev.py
CHAIN = REPO / 'weights' / 'v1.ifq'
SAMPLES = REPO / 'data' / 'samples'
# pool on the first layer and after a binary layer, a stride-2 and a 1x1 hidden layer
TABLE = (LayerSpec('c1', 'first', 8, 3, 1, pool=2), LayerSpec('c2', 'hidden', 12, 3, 1, pool=2),
         LayerSpec('c3', 'hidden', 16, 3, 2), LayerSpec('c4', 'hidden', 8, 1, 1),
         LayerSpec('head', 'head', 10, 1, 1))
# every kind of a layer graph: a lateral 1x1 reading a named layer, an upsample, a concatenation of
# two inputs, an int8 layer on codes, two heads of different strides and anchor counts (stride 8
# first, then stride 4, on a concatenation)
TWO_HEADS = (LayerSpec('c1', 'first', 6, 3, 1, pool=2), LayerSpec('c2', 'hidden', 8, 3, 1, pool=2),
             LayerSpec('c3', 'hidden', 12, 3, 2), head_layer(((1.0, 1.5), (2.0, 2.5)), 'head8'),
             LayerSpec('lat', 'hidden', 6, 1, 1, inputs=('c3',)), LayerSpec('up', 'upsample', 6),
             LayerSpec('c4', 'hidden', 8, 3, 1, inputs=('up', 'c2')), LayerSpec('c5', 'fixed', 8, 3, 1),
             head_layer(((0.5, 0.75),), 'head4', inputs=('c5', 'c4')))


def ort_session(proto: onnx.ModelProto):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options, providers=['CPUExecutionProvider'])


@pytest.fixture(scope='module')
def shipped() -> IntegerModel:
    return runtime.load_model(CHAIN)


@pytest.fixture(scope='module')
def shipped_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model exported by the CLI handler."""
    out = tmp_path_factory.mktemp('export') / 'model.onnx'
    export_model(CHAIN, out, 'onnx')
    return out


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_onnx_equals_engine_on_random_models(seed: int):
    model = random_integer_model(TABLE, seed)
    session = ort_session(xo.build(model))
    rng = np.random.default_rng(100 + seed)
    for h, w in ((32, 32), (48, 80)):                                  # batch of 2, non-square too
        x = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        (head,) = session.run(None, {meta.INPUT: x})
        want = runtime.run_batch(model, x)
        assert head.dtype == np.int32 and np.array_equal(head, want)
        assert len(np.unique(want)) > 20                              # not a degenerate all-equal output


def test_onnx_graph_structure(shipped: IntegerModel):
    proto = xo.build(shipped)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count('Conv') == len(shipped.layers) and ops.count('MaxPool') == 1
    assert ops.count('Greater') == 3 * (len(shipped.layers) - 1) and 'Mul' not in ops   # no negative pooled sign
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT32
    assert [o.name for o in proto.graph.output] == ['head']             # as in exports before layer graphs
    props = {p.key: p.value for p in proto.metadata_props}
    params = meta.from_props(props, 'x')
    assert params.specs == shipped.specs and params.input_size == shipped.input_size
    assert params.heads == ('head',) and same_decoders(params.decoders, shipped.decoders)


def same_decoders(got, want) -> bool:
    return len(got) == len(want) and all(
        np.array_equal(g.anchors_q16, w.anchors_q16) and g.anchors_q16.dtype == np.int64
        and (g.out_multiplier, g.out_shift, g.stride) == (w.out_multiplier, w.out_shift, w.stride)
        for g, w in zip(got, want))


@pytest.fixture(scope='module')
def two_heads() -> IntegerModel:
    return random_integer_model(TWO_HEADS, 5)


def test_onnx_two_heads_equal_engine_on_every_head(two_heads: IntegerModel):
    proto = xo.build(two_heads)
    assert [o.name for o in proto.graph.output] == ['head8', 'head4']
    session = ort_session(proto)
    rng = np.random.default_rng(6)
    for h, w in ((32, 32), (48, 80)):                                  # batch of 2, non-square too
        x = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        got, want = session.run(None, {meta.INPUT: x}), runtime.run_heads_batch(two_heads, x)
        assert [g.shape for g in got] == [(2, 10, h // 8, w // 8), (2, 5, h // 4, w // 4)]
        assert all(g.dtype == np.int32 and np.array_equal(g, v) for g, v in zip(got, want))
        assert all(len(np.unique(v)) > 20 for v in want)              # not degenerate


def test_two_head_graph_structure(two_heads: IntegerModel):
    nodes = {n.name: n for n in xo.build(two_heads).graph.node}
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes['up.up'].attribute}
    assert nodes['up.up'].op_type == 'Resize' and list(nodes['up.up'].input) == ['lat.code', 'up.roi', 'up.scales']
    assert attrs == {'mode': b'nearest', 'coordinate_transformation_mode': b'asymmetric', 'nearest_mode': b'floor'}
    assert nodes['c4.in'].op_type == 'Concat' and list(nodes['c4.in'].input) == ['up.up', 'c2.code']
    assert list(nodes['lat.acc'].input)[0] == 'c3.code'                 # one named input: no Concat
    assert list(nodes['head4.in'].input) == ['c5.code', 'c4.code']   # a head on two inputs
    assert [n.name for n in nodes.values() if n.op_type == 'Concat'] == ['c4.in', 'head4.in']


def test_backend_on_two_heads_equals_engine(two_heads: IntegerModel, tmp_path: Path):
    model_file, path = tmp_path / 'two.ifq', tmp_path / 'two.onnx'
    model_file.write_bytes(modelfile.to_bytes(two_heads))
    export_model(model_file, path, 'onnx')
    b = backend.load(path, threads=1)
    assert b.heads == ('head8', 'head4') and b.specs == two_heads.specs and b.input_size == 32
    assert same_decoders(b.decoders, two_heads.decoders) and [d.stride for d in b.decoders] == [8, 4]
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for size in (32, 48):
        canvas = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        assert all(np.array_equal(g, w) for g, w in zip(b.run_heads(canvas), runtime.run_heads(two_heads, canvas)))
        got = b.detect(image, 0.3, 0.45, size)
        assert len(got) > 1 and np.array_equal(got, runtime.detect(two_heads, image, 0.3, 0.45, size))
    with pytest.raises(ValueError, match='2 heads'):
        b.run(canvas)


def test_opencv_dnn_runs_two_heads(two_heads: IntegerModel, tmp_path: Path):
    import cv2

    path = tmp_path / 'two.onnx'
    onnx.save(xo.build(two_heads), path)
    net = cv2.dnn.readNetFromONNX(str(path))
    net.enableWinograd(False)
    x = np.random.default_rng(8).integers(0, 256, (1, 48, 80, 3), dtype=np.uint8)
    net.setInput(x)
    got = net.forward(['head8', 'head4'])                              # int32 in OpenCV 5, float32 in 4
    assert all(np.array_equal(np.asarray(g), w) for g, w in zip(got, runtime.run_heads_batch(two_heads, x)))


def test_qonnx_two_heads_execute_equal_to_engine(two_heads: IntegerModel):
    """Upsample (Resize) and Concat through qonnx's executor, its conv lowering and channels-last
    conversion: every head exact; the codes they carry keep UINT2."""
    pytest.importorskip('qonnx', reason='qonnx (export extra) is not installed')
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul
    from qonnx.util.cleanup import cleanup_model

    clean = cleanup_model(ModelWrapper(xq.build(two_heads, 48))).transform(InferDataTypes())
    kinds = {n.op_type: clean.get_tensor_datatype(n.output[0]).name for n in clean.graph.node}
    assert kinds['Resize'] == kinds['Concat'] == 'UINT2'
    assert [clean.get_tensor_datatype(o.name).name for o in clean.graph.output] == ['INT32', 'INT32']
    x = np.random.default_rng(9).integers(0, 256, (1, 48, 48, 3), dtype=np.uint8)
    want = runtime.run_heads_batch(two_heads, x)
    for wrapped in (clean, clean.transform(LowerConvsToMatMul()), clean.transform(ConvertToChannelsLastAndClean())):
        out = execute_onnx(wrapped, {wrapped.graph.input[0].name: x.transpose(0, 3, 1, 2).astype(np.float32)})
        assert all(np.array_equal(out[o.name].astype(np.int64), w) for o, w in zip(wrapped.graph.output, want))


def version_1_props(model: IntegerModel) -> dict[str, str]:
    """metadata_props as single-head exports wrote them before layer graphs (export version 1)."""
    props = {k: v for k, v in meta.to_props(model, 'onnx').items() if k != 'ifq.heads'}
    props.update({'ifq.version': '1', 'ifq.anchors_q16': json.dumps(model.anchors_q16.tolist()),
                  'ifq.out_multiplier': str(model.out_multiplier), 'ifq.out_shift': str(model.out_shift),
                  'ifq.layers': json.dumps([asdict(s) for s in model.specs])})
    return props


def test_backend_reads_version_1_exports(shipped: IntegerModel, shipped_onnx: Path, tmp_path: Path):
    proto = onnx.load(shipped_onnx)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, version_1_props(shipped))
    old = tmp_path / 'old.onnx'
    onnx.save(proto, old)
    b = backend.load(old, threads=1)
    assert b.heads == ('head',) and same_decoders(b.decoders, shipped.decoders)
    image = read_image(sorted(SAMPLES.iterdir())[0])
    assert np.array_equal(b.detect(image, 0.3, 0.45, 288), runtime.detect(shipped, image, 0.3, 0.45, 288))


def test_pooled_negative_signs_become_a_mul():
    proto = xo.build(random_integer_model(TABLE, 0))
    muls = [n.name for n in proto.graph.node if n.op_type == 'Mul']
    assert muls == ['c1.signed', 'c2.signed']                          # only the pooled layers


def test_head_bias_beyond_float32_is_exact_in_onnx_refused_in_qonnx():
    model = random_integer_model(TABLE, 3, bias_max=1 << 29)
    session = ort_session(xo.build(model))
    x = np.random.default_rng(3).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    assert np.array_equal(session.run(None, {meta.INPUT: x})[0], runtime.run_batch(model, x))
    with pytest.raises(ConversionError, match='layer head: worst-case accumulator'):
        xq.build(model)


def test_accumulator_beyond_float32_is_refused():
    table = (LayerSpec('big', 'first', 4, 15, 1), LayerSpec('head', 'head', 10, 1, 1))   # 3*225*255*127 > 2**24
    with pytest.raises(ConversionError, match='layer big: worst-case accumulator 21859875 ') as e:
        xo.build(random_integer_model(table, 0))
    assert '\n' not in str(e.value)


def test_qonnx_structure_with_onnx_alone(shipped: IntegerModel):
    proto = xq.build(shipped, 288)
    onnx.checker.check_model(proto)
    nodes = proto.graph.node
    mts = [n for n in nodes if n.op_type == 'MultiThreshold']
    assert len(mts) == len(shipped.layers) - 1 and all(n.domain == xq.QONNX_DOMAIN for n in mts)
    dtypes = {a.tensor_name: a.quant_parameter_tensor_names[0].value for a in proto.graph.quantization_annotation}
    assert dtypes['global_in'] == 'UINT8' and dtypes['head'] == 'INT32'
    assert dtypes['conv1.weight'] == 'INT8' and dtypes['head.weight'] == 'INT8'
    assert all(dtypes[f'{s.name}.weight'] == 'BIPOLAR' for s in shipped.specs if s.kind == 'hidden')
    assert all(dtypes[n.output[0]] == 'UINT2' for n in mts)
    init = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    for layer in shipped.layers[:-1]:
        assert np.array_equal(init[f'{layer.spec.name}.thresholds'], layer.thresholds.astype(np.float32) + 1)
    assert list(proto.graph.input[0].type.tensor_type.shape.dim)[2].dim_value == 288


@pytest.mark.parametrize('seed', [0, 4])
def test_qonnx_executes_equal_to_engine_on_random_models(seed: int):
    pytest.importorskip('qonnx', reason='qonnx (export extra) is not installed')
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    model = random_integer_model(TABLE, seed)
    wrapped = cleanup_model(ModelWrapper(xq.build(model, 48)))
    x = np.random.default_rng(seed).integers(0, 256, (1, 48, 48, 3), dtype=np.uint8)
    x_nchw = x.transpose(0, 3, 1, 2).astype(np.float32)                # (1, 3, H, W)
    out = execute_onnx(wrapped, {'global_in': x_nchw})[wrapped.graph.output[0].name]
    assert np.array_equal(out.astype(np.int64), runtime.run_batch(model, x))


def test_qonnx_survives_finn_style_lowering(shipped: IntegerModel):
    """qonnx's conv lowering (FINN's route to matrix-vector units) and channels-last conversion
    accept the graph, infer the integer datatypes FINN maps, and keep the head exact."""
    pytest.importorskip('qonnx', reason='qonnx (export extra) is not installed')
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul
    from qonnx.util.cleanup import cleanup_model

    x = np.random.default_rng(5).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    want = runtime.run_batch(shipped, x)
    clean = cleanup_model(ModelWrapper(xq.build(shipped, 64)))
    lowered = clean.transform(LowerConvsToMatMul()).transform(InferDataTypes())
    pairs = [(lowered.get_tensor_datatype(n.input[0]).name, lowered.get_tensor_datatype(n.input[1]).name)
             for n in lowered.graph.node if n.op_type == 'MatMul']
    hidden = sum(s.kind == 'hidden' for s in shipped.specs)
    assert pairs == [('UINT8', 'INT8')] + [('UINT2', 'BIPOLAR')] * hidden + [('UINT2', 'INT8')]
    for wrapped in (lowered, clean.transform(ConvertToChannelsLastAndClean())):
        inp, out = wrapped.graph.input[0].name, wrapped.graph.output[0].name
        head = execute_onnx(wrapped, {inp: x.transpose(0, 3, 1, 2).astype(np.float32)})[out]
        assert np.array_equal(head.astype(np.int64), want)


def test_backend_detect_equals_engine_on_samples(shipped: IntegerModel, shipped_onnx: Path):
    b = backend.load(shipped_onnx, threads=1)
    assert b.input_size == shipped.input_size and b.specs == shipped.specs
    for path in sorted(SAMPLES.iterdir()):
        image = read_image(path)
        for size in (shipped.input_size, shipped.input_size // 2):   # the two pyramid levels
            got = b.detect(image, 0.3, 0.45, size)
            assert got.dtype == np.float64 and np.array_equal(got, runtime.detect(shipped, image, 0.3, 0.45, size))
        assert b.detect(image, 1.0, 0.45).shape == (0, 5)              # empty is (0, 5)


def test_backend_checks_inputs_like_the_engine(shipped_onnx: Path):
    b = backend.load(shipped_onnx, threads=1)
    with pytest.raises(ImageError, match='must be a positive multiple of 16'):
        b.run(np.zeros((40, 48, 3), np.uint8))
    with pytest.raises(ImageError):
        b.run(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ImageError):
        b.detect(np.zeros((0, 5, 3), np.uint8), 0.5, 0.45)
    with pytest.raises(ConfigError, match='img_size'):
        b.detect(np.zeros((20, 20, 3), np.uint8), 0.5, 0.45, 100)
    with pytest.raises(ConfigError, match='conf'):
        b.detect(np.zeros((20, 20, 3), np.uint8), 1.5, 0.45)


def test_cli_handler_writes_both_formats(tmp_path: Path, capsys: pytest.CaptureFixture):
    for fmt in ('onnx', 'qonnx'):
        out = tmp_path / 'sub' / f'{fmt}.onnx'
        assert cli_export(parse(str(CHAIN), '--format', fmt, '--out', str(out))) == 0
        assert f'wrote {out} ({fmt}, ' in capsys.readouterr().out
        assert {p.key: p.value for p in onnx.load(out).metadata_props}['ifq.graph'] == fmt
    assert sorted(p.name for p in (tmp_path / 'sub').iterdir()) == ['onnx.onnx', 'qonnx.onnx']   # no temp files


def one_line_error(kind: type, fn, *args, match: str) -> None:
    with pytest.raises(kind, match=match) as e:
        fn(*args)
    assert '\n' not in str(e.value)


def test_bad_inputs_are_one_line_errors(tmp_path: Path):
    pt = tmp_path / 'model.pt'
    pt.write_bytes(b'PK\x03\x04 a torch zip')
    one_line_error(ModelFileError, export_model, pt, tmp_path / 'a.onnx',
                   match='float checkpoint.*convert it first')
    damaged = tmp_path / 'damaged.ifq'
    data = bytearray(CHAIN.read_bytes())
    data[200] ^= 0xFF
    damaged.write_bytes(bytes(data))
    one_line_error(ModelFileError, export_model, damaged, tmp_path / 'a.onnx', match='corrupted')
    damaged.write_bytes(CHAIN.read_bytes()[:1000])
    one_line_error(ModelFileError, export_model, damaged, tmp_path / 'a.onnx', match='truncated')
    one_line_error(ModelFileError, export_model, tmp_path / 'none.ifq', tmp_path / 'a.onnx', match='no such')
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    one_line_error(OutputError, export_model, CHAIN, blocker / 'a.onnx', match='a.onnx: cannot write')
    one_line_error(ConfigError, export_model, CHAIN, tmp_path, match='is a folder')
    one_line_error(ConfigError, export_model, CHAIN, tmp_path / 'a.onnx', 'onnx', 288, match='qonnx only')
    one_line_error(ConfigError, export_model, CHAIN, tmp_path / 'a.onnx', 'qonnx', 100, match='multiple of 16')
    one_line_error(ConfigError, export_model, CHAIN, tmp_path / 'a.onnx', 'tflite', match='--format')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['damaged.ifq', 'file', 'model.pt']   # nothing written


def test_backend_refuses_foreign_files(tmp_path: Path):
    one_line_error(ModelFileError, backend.load, CHAIN, match='onnxruntime cannot load it')
    qonnx_file = tmp_path / 'model.qonnx.onnx'
    export_model(CHAIN, qonnx_file, 'qonnx', 64)
    one_line_error(ModelFileError, backend.load, qonnx_file, match='a QONNX export .* export --format onnx')
    one_line_error(ModelFileError, backend.load, tmp_path / 'none.onnx', match='no such model file')
    plain = tmp_path / 'plain.onnx'
    graph = onnx.helper.make_graph([onnx.helper.make_node('Identity', ['image'], ['y'])], 'g',
                                   [onnx.helper.make_tensor_value_info('image', onnx.TensorProto.UINT8, [1])],
                                   [onnx.helper.make_tensor_value_info('y', onnx.TensorProto.UINT8, [1])])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid('', 17)], ir_version=8), plain)
    one_line_error(ModelFileError, backend.load, plain, match='not an ifq-tinier-yolo export')


def test_malformed_metadata_is_refused(shipped: IntegerModel):
    props = meta.to_props(shipped, 'onnx')
    heads = json.loads(props['ifq.heads'])
    with pytest.raises(ValueError, match="export version '3', this program reads 1 and 2"):
        meta.from_props({**props, 'ifq.version': '3'}, 'x')
    with pytest.raises(ValueError, match='malformed export metadata'):
        meta.from_props({**props, 'ifq.layers': '[{"name": 1}]'}, 'x')
    with pytest.raises(ValueError, match='malformed export metadata'):
        meta.from_props({**props, 'ifq.heads': '[{"name": "head"}]'}, 'x')
    with pytest.raises(ValueError, match=r"describes heads \['h'\], the layer table has \['head'\]"):
        meta.from_props({**props, 'ifq.heads': json.dumps([{**heads[0], 'name': 'h'}])}, 'x')
    with pytest.raises(ValueError, match='anchors of head head'):
        meta.from_props({**props, 'ifq.heads': json.dumps([{**heads[0], 'anchors_q16': [[0, 1]]}])}, 'x')
    with pytest.raises(ValueError, match='output scale .* of head head'):
        meta.from_props({**props, 'ifq.heads': json.dumps([{**heads[0], 'out_shift': 3}])}, 'x')
    with pytest.raises(ValueError, match='anchors of head head'):
        meta.from_props({**version_1_props(shipped), 'ifq.anchors_q16': '[[0, 1]]'}, 'x')
    bad_size = replace(shipped, input_size=100)
    with pytest.raises(ValueError, match='multiple of 16'):
        meta.from_props(meta.to_props(bad_size, 'onnx'), 'x')


def test_numpy_path_imports_no_onnx():
    code = ('import sys; import ifq_tinier_yolo; from ifq_tinier_yolo.engine import runtime; '
            'from ifq_tinier_yolo.apps import detector; '
            'bad = [m for m in ("onnx", "onnxruntime", "qonnx") if m in sys.modules]; assert not bad, bad')
    subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO)


def test_export_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture):
    from ifq_tinier_yolo.cli import main
    out = tmp_path / 'model.onnx'
    assert main(['export', str(CHAIN), '--format', 'onnx', '--out', str(out)]) == 0 and out.is_file()
    pt = tmp_path / 'model.pt'
    pt.write_bytes(b'PK\x03\x04')
    for argv in ([str(pt), '--out', str(out)], [str(CHAIN), '--out', str(pt / 'x.onnx')]):
        capsys.readouterr()
        assert main(['export', *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith('error: ') and err.count('\n') == 1


def test_detect_gives_the_same_json_on_the_onnx_export(shipped_onnx: Path, capsys: pytest.CaptureFixture):
    from ifq_tinier_yolo.cli import main
    outputs = []
    for model in (CHAIN, shipped_onnx):
        assert main(['detect', str(SAMPLES), '--model', str(model), '--json', '-']) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and '"faces": [{' in outputs[0]
