"""Checkpoints (checkpoint.py): round trip, atomic save, and every damaged or foreign file -> one-line ModelFileError."""
from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest
import torch

from ifq_tinier_yolo import netdef
from ifq_tinier_yolo.checkpoint import FORMAT, VERSION, load_checkpoint, model_from_checkpoint, save_checkpoint
from ifq_tinier_yolo.errors import ModelFileError
from ifq_tinier_yolo.model.tinier_yolo import TinierYolo

pytestmark = pytest.mark.usefixtures('torch_one_thread')


def trained_model() -> tuple[TinierYolo, torch.optim.Optimizer]:
    """A hwgq model after one optimizer step (non-default weights, BN stats and optimizer state)."""
    torch.manual_seed(0)
    model = TinierYolo(quant='hwgq').train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.rand(2, 3, 32, 32) * 255)[0].square().mean().backward()
    opt.step()
    return model, opt


@pytest.fixture(scope='module')
def saved(tmp_path_factory) -> tuple[Path, TinierYolo]:
    model, opt = trained_model()
    path = tmp_path_factory.mktemp('ckpt') / 'last.pt'
    save_checkpoint(path, model, 64, dict(lr=0.01, quant='hwgq'), optimizer=opt.state_dict(), epoch=3,
                    best=0.25, step=7)
    return path, model


def assert_one_line_error(excinfo, path: Path, *words: str) -> None:
    message = str(excinfo.value)
    assert '\n' not in message and '\x1b' not in message, message
    assert str(path) in message, message
    for word in words:
        assert word in message, message


# --- round trip -------------------------------------------------------------------------------

def test_round_trip(saved):
    path, model = saved
    raw = torch.load(path, map_location='cpu', weights_only=True)   # plain data: no pickle needed
    ckpt = load_checkpoint(path)
    assert raw.keys() == ckpt.keys()
    assert ckpt['format'] == FORMAT and ckpt['version'] == VERSION and ckpt['quant'] == 'hwgq'
    assert ckpt['layers'] == netdef.layers_to_list() and ckpt['img_size'] == 64
    assert netdef.layers_from_list(ckpt['layers'])[-1].anchors == netdef.ANCHORS
    assert ckpt['config'] == dict(lr=0.01, quant='hwgq')
    assert (ckpt['epoch'], ckpt['best'], ckpt['step']) == (3, 0.25, 7)
    assert ckpt['optimizer']['state'], 'optimizer state saved for resuming'

    loaded = model_from_checkpoint(ckpt)
    assert not loaded.training and loaded.quant == 'hwgq'
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    x = torch.rand(1, 3, 32, 32) * 255
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], model(x)[0])
    assert model_from_checkpoint(ckpt, 'float').quant == 'float'


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path, monkeypatch):
    model, _ = trained_model()
    path = tmp_path / 'last.pt'
    save_checkpoint(path, model, 64, {})
    before = path.read_bytes()
    assert os.listdir(tmp_path) == ['last.pt']

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(before[: len(before) // 2])
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(torch, 'save', dies_half_way)
    with pytest.raises(OSError):
        save_checkpoint(path, model, 128, {})
    assert path.read_bytes() == before            # the previous checkpoint is intact
    assert os.listdir(tmp_path) == ['last.pt']    # and the temp file is gone


# --- damaged and foreign files ----------------------------------------------------------------

class Foreign:
    """Not an allowed type for the weights-only unpickler."""


class Evil:
    """Would run a command if it were ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_missing_and_directory(tmp_path: Path):
    for path in (tmp_path / 'nope.pt', tmp_path):
        with pytest.raises(ModelFileError) as e:
            load_checkpoint(path)
        assert_one_line_error(e, path, 'no such checkpoint')


@pytest.mark.parametrize('content', [b'', b'hello, not a checkpoint\n', bytes(range(256)) * 4,
                                     b'PK\x03\x04' + b'\0' * 100])
def test_foreign_bytes(tmp_path: Path, content: bytes):
    path = tmp_path / 'x.pt'
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as e:
        load_checkpoint(path)
    assert_one_line_error(e, path)


@pytest.mark.parametrize('obj, words', [
    ({'a': torch.zeros(2)}, ['not an ifq-tinier-yolo checkpoint']),
    ([1, 2, 3], ['not an ifq-tinier-yolo checkpoint']),
    ({'format': FORMAT, 'version': VERSION + 1}, [f'version {VERSION + 1}', 'reads 1, 2']),
    ({'format': FORMAT}, ['version None']),
])
def test_torch_files_that_are_not_our_checkpoints(tmp_path: Path, obj, words):
    path = tmp_path / 'x.pt'
    torch.save(obj, path)
    with pytest.raises(ModelFileError) as e:
        load_checkpoint(path)
    assert_one_line_error(e, path, *words)


@pytest.mark.filterwarnings('ignore:Detected pickle protocol')
def test_non_allowed_objects_are_refused_and_never_run(tmp_path: Path):
    marker = tmp_path / 'PWNED'
    cases = {'foreign.pt': {'format': FORMAT, 'version': VERSION, 'x': Foreign()},
             'evil.pt': {'format': FORMAT, 'version': VERSION, 'model': Evil(marker)}}
    for name, obj in cases.items():
        path = tmp_path / name
        torch.save(obj, path)
        with pytest.raises(ModelFileError) as e:
            load_checkpoint(path)
        assert_one_line_error(e, path, 'not a plain checkpoint')
    path = tmp_path / 'evil.pkl'   # a bare pickle, not a torch zip
    path.write_bytes(pickle.dumps(Evil(marker)))
    with pytest.raises(ModelFileError) as e:
        load_checkpoint(path)
    assert_one_line_error(e, path)
    assert not marker.exists()


def test_refused_object_is_named(tmp_path: Path):
    path = tmp_path / 'foreign.pt'
    torch.save({'x': Foreign()}, path)
    with pytest.raises(ModelFileError) as e:
        load_checkpoint(path)
    assert_one_line_error(e, path, 'Foreign')


def test_truncated_checkpoints(saved, tmp_path: Path):
    data = saved[0].read_bytes()
    path = tmp_path / 'cut.pt'
    for n in (1, 100, 1000, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1):
        path.write_bytes(data[:n])
        with pytest.raises(ModelFileError) as e:
            load_checkpoint(path)
        assert_one_line_error(e, path)


def test_flipped_bits_in_the_tensor_data_are_detected(saved, tmp_path: Path):
    """Regression: torch.load does not check the zip CRCs, so bit rot in the weights loaded silently."""
    data = saved[0].read_bytes()
    path = tmp_path / 'flipped.pt'
    rng = random.Random(0)
    for _ in range(8):
        flipped = bytearray(data)
        i = rng.randrange(len(data) // 4, len(data) - 4096)   # inside the tensor records
        flipped[i] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(flipped))
        with pytest.raises(ModelFileError) as e:
            load_checkpoint(path)
        assert_one_line_error(e, path, 'damaged')


def test_library_errors_with_empty_messages_still_give_one_line(saved, monkeypatch):
    """Regression: str(e).splitlines()[0] raised IndexError (a traceback) for an exception without message."""
    path = saved[0]

    def fails(*args, **kwargs):
        raise RuntimeError()

    monkeypatch.setattr(torch, 'load', fails)
    with pytest.raises(ModelFileError) as e:
        load_checkpoint(path)
    assert_one_line_error(e, path, 'RuntimeError')


def ckpt_with(saved, **changes):
    ckpt = load_checkpoint(saved[0])
    ckpt.update(changes)
    return ckpt


def test_version_1_checkpoints_load(saved):
    """Version 1 kept the anchors beside the table and named the single head `head.`."""
    good = load_checkpoint(saved[0])
    v1 = dict(good, version=1, anchors=[list(a) for a in netdef.ANCHORS],
              layers=[{k: v for k, v in r.items() if k != 'anchors'} for r in good['layers']],
              model={k.replace('heads.0.', 'head.'): v for k, v in good['model'].items()})
    a, b = model_from_checkpoint(good), model_from_checkpoint(v1)
    assert a.layers == b.layers and a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_checkpoints_describing_another_network(saved):
    path = saved[0]
    good = load_checkpoint(path)
    model = dict(good['model'])
    del model['heads.0.conv.bias']
    bad_shape = dict(good['model'])
    bad_shape['blocks.1.conv.weight'] = torch.zeros(3, 3, 3, 3)
    layers = [dict(r) for r in good['layers']]
    layers[-1]['out_ch'] = 20
    one_anchor = [dict(r) for r in good['layers']]
    one_anchor[-1]['anchors'] = [[1.0, 1.0]]
    v1 = dict(good, version=1, layers=[{k: v for k, v in r.items() if k != 'anchors'} for r in good['layers']])
    cases = [dict(model=model), dict(model=bad_shape), dict(layers=layers), dict(layers=[{'name': 'x'}]),
             dict(layers=5), dict(layers=one_anchor), dict(v1, anchors=[[1.0, 1.0]]), v1,
             dict(quant='int3'), dict(model=[1])]
    for changes in cases:
        ckpt = dict(good, **changes)
        with pytest.raises(ModelFileError) as e:
            model_from_checkpoint(ckpt, path=path)
        assert_one_line_error(e, path, 'does not describe a valid network')
    no_model = dict(good)
    del no_model['model']
    with pytest.raises(ModelFileError):
        model_from_checkpoint(no_model, path=path)
