"""The convert / verify / report commands end to end on a small random-weight checkpoint."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from ifq_tinier_yolo import netdef
from ifq_tinier_yolo.cli import main

IMG_SIZE = 64        # small inputs keep the end-to-end checks fast


@pytest.fixture(scope='module')
def files(tmp_path_factory) -> dict[str, Path]:
    """A hwgq checkpoint of the netdef table, a float one, its .ifq model and an image folder."""
    import torch
    from ifq_tinier_yolo.checkpoint import save_checkpoint
    from quant_nets import random_quant_network
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp('verify')
    net = random_quant_network(seed=21, calib_size=32)
    save_checkpoint(d / 'net.pt', net, IMG_SIZE, {})
    other = random_quant_network(seed=22, calib_size=32)
    save_checkpoint(d / 'other.pt', other, IMG_SIZE, {})
    other.set_quant('float')
    save_checkpoint(d / 'float.pt', other, IMG_SIZE, {})
    images = d / 'images' / 'event'
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(50, 70), (90, 40), (64, 64)]):
        cv2.imwrite(str(images / f'img{i}.png'), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    (images / 'notes.txt').write_text('not an image')
    return {'ckpt': d / 'net.pt', 'other': d / 'other.pt', 'float': d / 'float.pt',
            'images': d / 'images', 'dir': d}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([*argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope='module')
def model_file(files) -> Path:
    out = files['dir'] / 'net.ifq'
    assert main(['convert', str(files['ckpt']), '--out', str(out)]) == 0
    return out


def test_convert_writes_the_model(files, model_file, capsys):
    rc, out, _ = run_cli(capsys, 'convert', str(files['ckpt']), '--out', str(files['dir'] / 'again.ifq'))
    assert rc == 0 and out.strip() == f'model bytes {model_file.stat().st_size}'
    assert (files['dir'] / 'again.ifq').read_bytes() == model_file.read_bytes()   # deterministic
    from ifq_tinier_yolo.engine.modelfile import read
    assert read(model_file).input_size == IMG_SIZE


def test_convert_refuses_a_float_checkpoint(files, capsys):
    rc, out, err = run_cli(capsys, 'convert', str(files['float']), '--out', str(files['dir'] / 'f.ifq'))
    assert rc == 1 and out == '' and err.count('\n') == 1 and 'hwgq' in err
    assert not (files['dir'] / 'f.ifq').exists()


def test_verify_is_bit_exact(files, model_file, capsys):
    rc, out, err = run_cli(capsys, 'verify', '--model', str(model_file), '--checkpoint', str(files['ckpt']),
                           str(files['images']))
    assert (rc, out) == (0, 'bit-exact 3/3\n'), err


def test_verify_counts_unreadable_images_as_failures(files, model_file, capsys, tmp_path):
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'\xff\xd8\xff\xe0 truncated')
    rc, out, err = run_cli(capsys, 'verify', '--model', str(model_file), '--checkpoint', str(files['ckpt']),
                           str(files['images']), str(bad), str(tmp_path / 'missing.png'))
    assert rc == 1 and out == 'bit-exact 3/5\n'
    assert 'broken.jpg' in err and 'missing.png' in err


def test_verify_reports_a_wrong_model(files, model_file, capsys):
    rc, out, err = run_cli(capsys, 'verify', '--model', str(model_file), '--checkpoint', str(files['other']),
                           str(files['images']))
    assert rc == 1 and out == 'bit-exact 0/3\n' and 'head values differ' in err


def test_verify_compares_with_the_separated_conversion(files, model_file, capsys):
    rc, out, _ = run_cli(capsys, 'verify', '--model', str(model_file), '--checkpoint', str(files['ckpt']),
                         '--compare-separated', '--conf', '0.02', str(files['images']))
    lines = out.splitlines()
    assert rc == 0 and lines[0] == 'bit-exact 3/3' and lines[1] == 'integrated bit-exact 3/3'
    assert re.fullmatch(r'integrated head values differing 0/\d+ \(0\.000%, max \|diff\| 0\)', lines[2])
    assert re.fullmatch(r'integrated detections agreeing (\d+)/\1 \(100\.0%\)', lines[3])
    assert lines[4].startswith('separated bit-exact ') and lines[5].startswith('separated head values differing ')
    assert lines[6].startswith('separated detections agreeing ')


def test_verify_rejects_a_model_of_another_table(files, capsys, tmp_path):
    from ifq_tinier_yolo.integrate.convert import convert_model
    from quant_nets import random_quant_network
    from ifq_tinier_yolo.integrate.modelfile import save
    layers = (*netdef.LAYERS[:-2], netdef.LAYERS[-1])
    save(convert_model(random_quant_network(layers, seed=1, calib_size=16), IMG_SIZE), tmp_path / 'x.ifq')
    rc, out, err = run_cli(capsys, 'verify', '--model', str(tmp_path / 'x.ifq'), '--checkpoint',
                           str(files['ckpt']), str(files['images']))
    assert rc == 1 and 'different layer tables' in err and out == ''


def test_report(model_file, capsys):
    rc, out, _ = run_cli(capsys, 'report', '--model', str(model_file), '--img-size', '416')
    assert rc == 0
    assert f'model bytes {model_file.stat().st_size}' in out.splitlines()
    ratio = re.search(r'^feature memory ratio (\d+\.\d+)$', out, re.M)
    assert ratio and float(ratio.group(1)) > 4
    assert [line.split()[0] for line in out.splitlines()[1:8]] == [s.name for s in netdef.LAYERS]
    from ifq_tinier_yolo import native
    if native.available():   # the C runtime streams the canvas: the paper's 18x and more
        assert float(re.search(r'^native feature memory ratio (\d+\.\d+) ', out, re.M).group(1)) >= 18
    else:
        assert 'native feature memory ratio unavailable' in out


def test_convert_emits_a_c_header(files, model_file, capsys):
    header = files['dir'] / 'model.h'
    rc, _, err = run_cli(capsys, 'convert', str(files['ckpt']), '--out', str(files['dir'] / 'c.ifq'),
                         '--emit-c', str(header))
    text = header.read_text()
    assert rc == 0 and f'wrote {header}' in err
    values = [int(v, 16) for v in re.findall(r'0x([0-9a-f]{2})', text)]
    assert bytes(values) == model_file.read_bytes()     # the same bytes as the .ifq file


def test_report_table_without_a_model(capsys):
    rc, out, _ = run_cli(capsys, 'report', '--table')
    n = int(re.search(r'^model bytes (\d+)$', out, re.M).group(1))
    assert rc == 0 and n <= 246_000


def test_report_numbers():
    from ifq_tinier_yolo.integrate import report as R
    assert R.tiny_yolo_bytes() == 63_471_540                    # 15,867,885 float32 parameters
    mem = R.feature_memory(netdef.LAYERS, 416)
    assert mem['float'] == (4 * (3 * 416 * 416 + 16 * 208 * 208), 'conv1')
    assert mem['packed'] == (3 * 416 * 416 + 4 * 208 * 208, 'conv1')


@pytest.mark.parametrize('net', sorted(netdef.NETWORKS))
def test_float_parameter_bytes_are_the_float_networks(net):
    # every float32 the float PyTorch network of the table holds (weights, BatchNorm affine and
    # running statistics, head bias); an upsample layer holds none
    from ifq_tinier_yolo.integrate import report as R
    from ifq_tinier_yolo.model.tinier_yolo import TinierYolo
    state = TinierYolo(netdef.NETWORKS[net], quant='float').state_dict()
    assert R.float_param_bytes(netdef.NETWORKS[net]) == 4 * sum(
        v.numel() for k, v in state.items() if not k.endswith('num_batches_tracked'))


def test_missing_model_is_a_one_line_error(tmp_path, capsys):
    rc, out, err = run_cli(capsys, 'report', '--model', str(tmp_path / 'none.ifq'))
    assert rc == 1 and err.startswith('error: ') and err.count('\n') == 1
