"""Training (train.py): config overrides, LR schedule, overfitting 2 real images, the `train` CLI,
exact resume, SIGKILL-resume, NaN stop, and a 2-process DistributedDataParallel run.

The runs are tiny (64-128 px, a few images, one torch thread) so the default suite stays fast
on a busy 2-core machine; the kill-resume cycles are marked slow.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ifq_tinier_yolo import train as train_mod
from ifq_tinier_yolo.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from ifq_tinier_yolo.cli import build_parser, main
from ifq_tinier_yolo.datasets.loader import WiderTrainSet, collate
from ifq_tinier_yolo.datasets.wider import read_wider
from ifq_tinier_yolo.errors import ConfigError, TrainingError
from ifq_tinier_yolo.model.loss import detection_loss, region_loss
from ifq_tinier_yolo.model.tinier_yolo import TinierYolo
from ifq_tinier_yolo.train import check_finite, config_from_args, lr_at, make_optimizer, weight_average
from ifq_tinier_yolo.train_config import TrainConfig, add_train_arguments, parse_overrides

pytestmark = pytest.mark.usefixtures('torch_one_thread')

REPO = Path(__file__).resolve().parents[1]
TIMING_FIELDS = ('train_s', 'images_per_s')


def train_argv(root: Path, out: Path, *extra: str, epochs: int = 2, size: int = 64, batch: int = 1,
               seed: int = 1) -> list[str]:
    """`train` arguments of a tiny run (the fixture set: 3 images, one without faces)."""
    return ['train', '--wider-root', str(root), '--out', str(out), '--epochs', str(epochs), '--img-size', str(size),
            '--batch', str(batch), '--workers', '0', '--no-val', '--seed', str(seed), *extra]


def state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)['model']


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f'{len(differ)} tensors differ, e.g. {differ[:3]}'


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]


def stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def temp_files(run: Path) -> list[str]:
    return [p.name for p in run.iterdir() if p.name.endswith('.tmp')]


# --- config ----------------------------------------------------------------------------------

def test_parse_overrides_values():
    base = TrainConfig()
    cfg = parse_overrides(['lr=1e-3', 'epochs=3', 'bf16=True', 'quant=float', "optimizer='sgd'", 'warmup=2',
                           'img_size=320'], base)
    assert cfg.lr == 1e-3 and cfg.epochs == 3 and cfg.bf16 is True and cfg.quant == 'float'
    assert cfg.optimizer == 'sgd' and cfg.img_size == 320
    assert cfg.warmup == 2.0 and isinstance(cfg.warmup, float)   # an int is accepted for a float field
    assert parse_overrides(['lr=1', 'lr=0.5'], base).lr == 0.5   # the last one wins
    assert parse_overrides([], base) == base
    assert base.lr == 2e-3   # frozen defaults untouched


@pytest.mark.parametrize('pair, words', [
    ('lrr=1e-3', ["unknown config key 'lrr'", "did you mean 'lr'"]),
    ('epoch=3', ["did you mean 'epochs'"]),
    ('zzzzzz=1', ["unknown config key 'zzzzzz'"]),
    ('lr', ['not KEY=VALUE']),
    ('epochs=1.5', ["'epochs' wants int"]),
    ('epochs=True', ["'epochs' wants int"]),
    ('bf16=1', ["'bf16' wants bool"]),
    ('lr=fast', ["'lr' wants float"]),
    ('img_size="64"', ["'img_size' wants int"]),
    ('quant=3', ["'quant' wants str"]),
])
def test_parse_overrides_errors(pair: str, words: list[str]):
    with pytest.raises(ConfigError) as e:
        parse_overrides([pair], TrainConfig())
    assert '\n' not in str(e.value)
    for word in words:
        assert word in str(e.value)


def test_overrides_are_never_executed(tmp_path: Path):
    marker = tmp_path / 'PWNED'
    with pytest.raises(ConfigError):
        parse_overrides([f'lr=__import__("os").system("touch {marker}")'], TrainConfig())
    text = f'[open("{marker}", "w")]'
    assert parse_overrides([f'quant={text}'], TrainConfig()).quant == text   # not a literal: kept as text
    assert not marker.exists()


def args_of(*argv: str):
    return build_parser().parse_args(['train', '--wider-root', 'W', '--out', 'O', *argv])


def test_config_from_flags_and_set():
    cfg = config_from_args(args_of('--img-size', '128', '--lr', '0.1', '--quant', 'float', '--no-val',
                                   '--set', 'lr=1e-3', 'batch=4'))
    assert cfg.img_size == 128 and cfg.quant == 'float' and cfg.lr == 1e-3 and cfg.batch == 4
    assert config_from_args(args_of()) == TrainConfig()   # the flags' defaults are the config's


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_train_arguments(parser)
    return parser


def test_train_flags_come_from_the_config_fields():
    args = train_parser().parse_args(['--wider-root', 'W', '--out', 'O'])
    assert config_from_args(args) == TrainConfig()
    help_text = train_parser().format_help()
    for f in dataclasses.fields(TrainConfig):   # every field is a flag whose help shows its default
        flag = '--' + f.name.replace('_', '-')
        assert flag in help_text and f.metadata['help']
    assert '(default: 416)' in help_text and '--no-bf16' in help_text
    cfg = config_from_args(train_parser().parse_args(
        ['--wider-root', 'W', '--out', 'O', '--ema', '0.99', '--bf16', '--net', 'v2', '--optimizer', 'sgd']))
    assert (cfg.ema, cfg.bf16, cfg.net, cfg.optimizer) == (0.99, True, 'v2', 'sgd')


def test_repeated_set_flags_all_apply():
    # a plain `store` kept only the last --set: `--set net=v2 ... --set ema=0.998` lost net=v2
    args = train_parser().parse_args(['--wider-root', 'W', '--out', 'O', '--set', 'net=v2', '--lr', '1e-3',
                                      '--set', 'ema=0.998', 'seed=3'])
    cfg = config_from_args(args)
    assert (cfg.net, cfg.ema, cfg.seed, cfg.lr) == ('v2', 0.998, 3, 1e-3)


@pytest.mark.parametrize('argv, words', [
    (['--img-size', '100'], ['100', 'multiple of 16']),
    (['--set', 'val_size=0'], ['multiple of 16']),
    (['--set', 'optimizer=adam'], ['adamw or sgd', "'adam'"]),
    (['--set', 'epochs=0'], ['epochs']),
    (['--batch', '0'], ['batch']),
])
def test_config_checks(argv: list[str], words: list[str]):
    with pytest.raises(ConfigError) as e:
        config_from_args(args_of(*argv))
    for word in words:
        assert word in str(e.value)


@pytest.mark.parametrize('sets, words', [
    (['lrr=1e-3'], ["unknown config key 'lrr'", "did you mean 'lr'"]),
    (['epochs=1.5'], ["'epochs' wants int"]),
    (['img_size=100'], ['multiple of 16']),
])
def test_cli_config_errors_are_one_line(tmp_path: Path, capsys, sets, words):
    out = tmp_path / 'run'
    rc = main(['train', '--wider-root', str(tmp_path / 'no-data'), '--out', str(out), '--set', *sets])
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert rc == 1 and len(lines) == 1 and lines[0].startswith('error: '), captured.err
    assert captured.out == ''
    for word in words:
        assert word in lines[0]
    assert not out.exists()   # nothing written


# --- schedule and optimizer ------------------------------------------------------------------

def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1.0, min_lr_ratio=0.1)
    lrs = [lr_at(s, 20, 4, cfg) for s in range(25)]
    assert lrs[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert lrs[12] == pytest.approx(0.1 + 0.9 * 0.5)   # half way through the cosine
    assert lrs[20] == pytest.approx(0.1) and lrs[24] == pytest.approx(0.1)   # floor after the end
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


@pytest.mark.parametrize('name, kind', [('adamw', torch.optim.AdamW), ('sgd', torch.optim.SGD)])
def test_optimizer_has_no_decay_on_bn_and_biases(name: str, kind):
    model = TinierYolo()
    opt = make_optimizer(model, TrainConfig(optimizer=name, weight_decay=1e-3))
    assert isinstance(opt, kind)
    decay, no_decay = opt.param_groups
    assert decay['weight_decay'] == 1e-3 and no_decay['weight_decay'] == 0.0
    conv_weights = {id(m.conv.weight) for m in [*model.blocks, model.head]}
    assert {id(p) for p in decay['params']} == conv_weights
    assert len(decay['params']) + len(no_decay['params']) == len(list(model.parameters()))
    if name == 'sgd':
        assert decay['momentum'] == 0.9 and decay['nesterov']


# --- overfitting two real images -------------------------------------------------------------

OVERFIT_SIZE = 128
OVERFIT_STEPS = 60


@pytest.fixture(scope='module')
def two_images(any_wider: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Two real WIDER training images with 3 to 8 faces each at 128 px, letterboxed without augmentation."""
    items = read_wider(any_wider, 'train')[:60]
    ds = WiderTrainSet(items, OVERFIT_SIZE, augment=False)
    picked = [i for i in range(len(ds)) if 3 <= len(ds[i][1]) <= 8][:2]
    assert len(picked) == 2, f'no two images with 3-8 faces among the first {len(items)} of {any_wider}'
    images, targets = collate([ds[i] for i in picked])
    return images.float(), targets


@pytest.mark.parametrize('quant', ['float', 'hwgq'])
def test_overfits_two_real_images(two_images, quant: str):
    images, targets = two_images
    torch.manual_seed(0)
    model = TinierYolo(quant=quant).train()
    anchors = torch.tensor(model.anchors)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(OVERFIT_STEPS):
        loss, _ = region_loss(model(images)[0], targets, anchors)
        assert math.isfinite(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first = losses[0]
    # the loss falls 10x and stays there (5 steps in a row), within the step budget
    reached = next((k for k in range(4, len(losses)) if max(losses[k - 4:k + 1]) < first / 10), None)
    assert reached is not None, f'{quant}: loss {first:.3f} -> {losses[-1]:.3f} in {OVERFIT_STEPS} steps'
    if quant == 'hwgq':
        # the integer network itself (eval mode, BN running stats, integer head) has learnt the faces too
        model.eval()
        with torch.no_grad():
            eval_loss, _ = region_loss(model(images)[0], targets, anchors)
        assert eval_loss.item() < first / 5, (first, eval_loss.item())


# --- the train command -----------------------------------------------------------------------

def test_acceptance_command_on_real_wider(shared_wider: Path, tmp_path: Path, capsys):
    run = tmp_path / 'smoke'
    t0 = time.time()
    rc = main(['train', '--wider-root', str(shared_wider), '--out', str(run), '--epochs', '1', '--max-images', '16',
               '--img-size', '128', '--batch', '8', '--no-val', '--workers', '0'])
    assert rc == 0
    assert time.time() - t0 < 60
    raw = torch.load(run / 'last.pt', map_location='cpu', weights_only=True)
    ckpt = load_checkpoint(run / 'last.pt')
    assert raw.keys() == ckpt.keys()
    # img_size records the size to run the model at (the validation size), not the training crop
    assert (ckpt['epoch'], ckpt['step'], ckpt['quant'], ckpt['img_size']) == (1, 2, 'hwgq', 416)
    assert ckpt['config']['img_size'] == 128
    assert ckpt['config']['max_images'] == 16 and ckpt['config']['batch'] == 8
    model = model_from_checkpoint(ckpt)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 128, 128))[0].shape == (1, 25, 8, 8)
    rows = metrics(run / 'metrics.jsonl')
    assert len(rows) == 1 and rows[0]['epoch'] == 1 and rows[0]['step'] == 2
    assert math.isfinite(rows[0]['loss']) and rows[0]['loss'] > 0
    assert {'last.pt', 'metrics.jsonl'} <= {p.name for p in run.iterdir()} and temp_files(run) == []
    err = capsys.readouterr().err
    assert err.count('config {') == 1 and 'Traceback' not in err   # the resolved config, printed once
    config_line = next(line for line in err.splitlines() if line.startswith('config {'))
    assert json.loads(config_line[len('config '):]) == ckpt['config']


def test_validation_each_epoch_keeps_best_pt(shared_wider: Path, tmp_path: Path):
    if not (shared_wider / 'wider_face_split' / 'wider_face_val_bbx_gt.txt').is_file():
        pytest.skip(f'no WIDER val split under {shared_wider}')
    run = tmp_path / 'val'
    argv = ['train', '--wider-root', str(shared_wider), '--out', str(run), '--epochs', '2', '--max-images', '4',
            '--img-size', '64', '--batch', '2', '--workers', '0', '--max-val-images', '4', '--val-size', '64']
    assert main(argv) == 0
    rows = metrics(run / 'metrics.jsonl')
    assert [r['epoch'] for r in rows] == [1, 2]
    for r in rows:
        assert 0.0 <= r['tpr@100fp'] <= 1.0 and 0.0 <= r['tpr@500fp'] <= 1.0
    best = load_checkpoint(run / 'best.pt')
    assert best['best'] == max(r['tpr@100fp'] for r in rows)
    assert best['epoch'] == next(r['epoch'] for r in rows if r['tpr@100fp'] == best['best'])


@pytest.mark.parametrize('ema', [(), ('--set', 'ema=0.9')], ids=['plain', 'ema'])
@pytest.mark.parametrize('pause', [('--time-limit', '1e-9'), ('--stop-after', '1')], ids=['time-limit', 'stop-after'])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(fixture_wider: Path, tmp_path: Path, capsys, pause, ema):
    full, parts = tmp_path / 'full', tmp_path / 'parts'
    assert main(train_argv(fixture_wider, full, *ema)) == 0
    # the first of 2 epochs, then stop (a spent time limit, or --stop-after 1)
    assert main(train_argv(fixture_wider, parts, *pause, *ema)) == 0
    assert 'stopped after epoch 1 of 2' in capsys.readouterr().err
    first = load_checkpoint(parts / 'last.pt')
    assert first['epoch'] == 1 and len(metrics(parts / 'metrics.jsonl')) == 1
    assert main(train_argv(fixture_wider, parts, '--resume', *ema)) == 0
    assert 'resumed' in capsys.readouterr().err

    final, whole = load_checkpoint(parts / 'last.pt'), load_checkpoint(full / 'last.pt')
    assert final['epoch'] == 2 and final['step'] == whole['step'] == 6
    assert_same_state(final['model'], whole['model'])
    assert without_timing(metrics(parts / 'metrics.jsonl')) == without_timing(metrics(full / 'metrics.jsonl'))
    # not vacuous: the second epoch changed the weights
    assert not torch.equal(first['model']['blocks.2.conv.weight'], final['model']['blocks.2.conv.weight'])
    if ema:   # the raw weights resume too, and the saved model is their average, not a copy
        assert_same_state(final['train_model'], whole['train_model'])
        assert not torch.equal(final['model']['blocks.2.conv.weight'], final['train_model']['blocks.2.conv.weight'])
    else:
        assert 'train_model' not in final


def test_weight_average_averages_weights_and_bn_statistics_and_copies_counters():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    avg = weight_average(model, decay=0.9, step=100)
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    # step 100: decay min(0.9, 101/110) = 0.9, so the average moves a tenth of the way
    avg.update_parameters(model)
    state = avg.module.state_dict()
    torch.testing.assert_close(state['0.weight'], start['0.weight'] + 0.1)
    torch.testing.assert_close(state['1.running_mean'], start['1.running_mean'] + 0.1)   # buffers too
    assert state['1.num_batches_tracked'].item() == 7
    # early steps ramp the decay: at step 0 it is 1/10, the average moves 90% of the way
    lin = torch.nn.Linear(1, 1)
    avg0 = weight_average(lin, decay=0.999)
    avg0.module.load_state_dict({k: torch.zeros_like(v) for k, v in lin.state_dict().items()})
    avg0.update_parameters(lin)
    torch.testing.assert_close(avg0.module.weight, lin.weight.detach() * 0.9)
    assert avg0.n_averaged.item() == 2   # the initial weights count as the first update


def test_a_non_finite_loss_is_a_training_error(tmp_path: Path):
    with pytest.raises(TrainingError, match='loss became nan at epoch 3 step 7; no checkpoint written yet'):
        check_finite(SimpleNamespace(world=1), torch.tensor(float('nan')), 2, 7, tmp_path / 'last.pt')
    check_finite(SimpleNamespace(world=1), torch.tensor(1.5), 2, 7, tmp_path / 'last.pt')


def test_same_seed_same_weights_other_seed_other_weights(fixture_wider: Path, tmp_path: Path):
    for name, seed in (('a', 1), ('b', 1), ('c', 2)):
        assert main(train_argv(fixture_wider, tmp_path / name, epochs=1, seed=seed)) == 0
    assert_same_state(state(tmp_path / 'a' / 'last.pt'), state(tmp_path / 'b' / 'last.pt'))
    c = state(tmp_path / 'c' / 'last.pt')
    assert not torch.equal(c['heads.0.conv.weight'], state(tmp_path / 'a' / 'last.pt')['heads.0.conv.weight'])


def test_resume_without_a_checkpoint_starts_from_the_beginning(fixture_wider: Path, tmp_path: Path, capsys):
    # a run killed before its first checkpoint must be restartable with the same command line
    assert main(train_argv(fixture_wider, tmp_path / 'a', '--resume', epochs=1)) == 0
    assert 'starting from the beginning' in capsys.readouterr().err
    assert main(train_argv(fixture_wider, tmp_path / 'b', epochs=1)) == 0
    assert_same_state(state(tmp_path / 'a' / 'last.pt'), state(tmp_path / 'b' / 'last.pt'))


def test_resume_with_a_different_config_is_refused(fixture_wider: Path, tmp_path: Path, capsys):
    run = tmp_path / 'run'
    assert main(train_argv(fixture_wider, run, epochs=1)) == 0
    before = (run / 'last.pt').read_bytes()
    rc = main(train_argv(fixture_wider, run, '--resume', '--set', 'lr=0.5', epochs=2))
    lines = stderr_lines(capsys)
    assert rc == 1 and 'different config' in lines[-1] and 'lr' in lines[-1]
    assert (run / 'last.pt').read_bytes() == before


def test_float_warmup_initialises_a_hwgq_run(fixture_wider: Path, tmp_path: Path):
    assert main(train_argv(fixture_wider, tmp_path / 'float', '--quant', 'float', epochs=1)) == 0
    init = tmp_path / 'float' / 'last.pt'
    # lr 0: the hwgq run must end with exactly the float run's parameters (BN statistics still move)
    assert main(train_argv(fixture_wider, tmp_path / 'hwgq', '--init', str(init), '--set', 'lr=0.0', epochs=1)) == 0
    ckpt = load_checkpoint(tmp_path / 'hwgq' / 'last.pt')
    assert ckpt['quant'] == 'hwgq' and load_checkpoint(init)['quant'] == 'float'
    params = {n for n, _ in TinierYolo().named_parameters()}
    assert_same_state({k: v for k, v in ckpt['model'].items() if k in params},
                      {k: v for k, v in state(init).items() if k in params})


# --- NaN -------------------------------------------------------------------------------------

def nan_detection_loss(outs, targets, anchors, cfg):
    loss, parts = detection_loss(outs, targets, anchors, cfg)
    return loss * float('nan'), parts


def run_one_good_epoch(root: Path, run: Path) -> tuple[bytes, bytes]:
    assert main(train_argv(root, run, '--time-limit', '1e-9')) == 0
    return (run / 'last.pt').read_bytes(), (run / 'metrics.jsonl').read_bytes()


def test_nan_loss_stops_and_keeps_the_last_checkpoint(fixture_wider: Path, tmp_path: Path, capsys, monkeypatch):
    run = tmp_path / 'run'
    last, rows = run_one_good_epoch(fixture_wider, run)
    capsys.readouterr()
    monkeypatch.setattr(train_mod, 'detection_loss', nan_detection_loss)
    rc = main(train_argv(fixture_wider, run, '--resume'))
    err = capsys.readouterr().err
    assert rc == 1 and 'Traceback' not in err
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and 'loss became nan at epoch 2' in lines[0] and str(run / 'last.pt') in lines[0]
    assert err.rstrip().endswith(lines[0])
    assert (run / 'last.pt').read_bytes() == last and (run / 'metrics.jsonl').read_bytes() == rows
    assert temp_files(run) == []


def test_exploding_lr_stops_with_a_clear_message(fixture_wider: Path, tmp_path: Path, capsys):
    run = tmp_path / 'run'
    last, _ = run_one_good_epoch(fixture_wider, run)
    capsys.readouterr()
    # a resume may not change the config, so the exploding run starts from the good weights
    rc = main(train_argv(fixture_wider, tmp_path / 'boom', '--init', str(run / 'last.pt'), '--set', 'lr=1e30'))
    lines = stderr_lines(capsys)
    assert rc == 1 and lines[-1].startswith('error: loss became ') and 'epoch 1' in lines[-1]
    assert (run / 'last.pt').read_bytes() == last
    assert not (tmp_path / 'boom' / 'last.pt').exists()


def test_nan_in_the_first_epoch_writes_no_checkpoint(fixture_wider: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr(train_mod, 'detection_loss', nan_detection_loss)
    run = tmp_path / 'run'
    rc = main(train_argv(fixture_wider, run))
    lines = stderr_lines(capsys)
    assert rc == 1 and lines[-1].startswith('error: loss became nan at epoch 1 step 0')
    assert not (run / 'last.pt').exists() and not (run / 'metrics.jsonl').exists()


# --- regressions of defects found in train.py ------------------------------------------------

class Killed(BaseException):
    """Stands for SIGKILL at one chosen point."""


def test_kill_between_checkpoint_and_metrics_keeps_every_row(fixture_wider: Path, tmp_path: Path, monkeypatch):
    run = tmp_path / 'run'

    def killed(*args, **kwargs):
        raise Killed()

    monkeypatch.setattr(train_mod, 'atomic_write_text', killed)
    with pytest.raises(Killed):
        main(train_argv(fixture_wider, run))
    assert not (run / 'last.pt').exists()   # last.pt is written last: epoch 1 is not committed
    monkeypatch.undo()
    assert main(train_argv(fixture_wider, run, '--resume')) == 0
    assert [r['epoch'] for r in metrics(run / 'metrics.jsonl')] == [1, 2]


def test_no_val_run_writes_best_pt(fixture_wider: Path, tmp_path: Path):
    run = tmp_path / 'run'
    assert main(train_argv(fixture_wider, run, epochs=1)) == 0
    assert metrics(run / 'metrics.jsonl')[0]['loss'] > 1   # the case at issue
    assert (run / 'best.pt').is_file()


def test_set_quant_is_checked(fixture_wider: Path, tmp_path: Path, capsys):
    rc = main(train_argv(fixture_wider, tmp_path / 'run', '--set', 'quant=binary'))
    lines = stderr_lines(capsys)
    assert rc == 1 and len(lines) == 1 and 'quant' in lines[0]


def test_resume_from_a_weights_only_checkpoint_is_a_clean_error(fixture_wider: Path, tmp_path: Path, capsys):
    run = tmp_path / 'run'
    save_checkpoint(run / 'last.pt', TinierYolo(), 64, {})
    assert main(train_argv(fixture_wider, run, '--resume')) == 1
    assert stderr_lines(capsys)[-1].startswith('error: ')


# --- subprocesses: DDP and SIGKILL ------------------------------------------------------------

def subprocess_env() -> dict[str, str]:
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}


def test_ddp_two_cpu_processes(fixture_wider: Path, tmp_path: Path):
    run = tmp_path / 'ddp'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           '-m', 'ifq_tinier_yolo', *train_argv(fixture_wider, run, epochs=3, batch=2)]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
    ckpt = load_checkpoint(run / 'last.pt')
    # 3 images, 2 processes, 1 image each per step (drop_last): one step per epoch
    assert (ckpt['epoch'], ckpt['step']) == (3, 3)
    assert [r['epoch'] for r in metrics(run / 'metrics.jsonl')] == [1, 2, 3]
    assert proc.stderr.count('config {') == 1   # only rank 0 logs
    model_from_checkpoint(ckpt)


KILL_EPOCHS = 8
STARTUP_KILL_P = 0.25   # share of kills aimed at start-up (imports, data, resume) rather than training


def kill_argv(root: Path, run: Path, *extra: str) -> list[str]:
    """A subprocess run of KILL_EPOCHS epochs with one data loader worker process (the later flag wins)."""
    return [sys.executable, '-m', 'ifq_tinier_yolo',
            *train_argv(root, run, '--workers', '1', *extra, epochs=KILL_EPOCHS, seed=4)]


def wait_for(proc: subprocess.Popen, log: Path, text: str, count: int = 1, timeout: float = 120) -> None:
    """Wait until `text` appears `count` times in the process's stderr log (or it ends, or time runs out)."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline and log.read_text().count(text) < count:
        time.sleep(0.01)


def launch(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, 'w') as f:
        return subprocess.Popen(argv, cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=f)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(fixture_wider: Path, tmp_path: Path):
    ref, run = tmp_path / 'ref', tmp_path / 'run'
    t0 = time.time()
    proc = launch(kill_argv(fixture_wider, ref), tmp_path / 'ref.log')
    wait_for(proc, tmp_path / 'ref.log', 'config {')
    startup = time.time() - t0
    assert proc.wait(timeout=300) == 0, (tmp_path / 'ref.log').read_text()[-2000:]
    epoch_time = (time.time() - t0 - startup) / KILL_EPOCHS

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    kills, resumed_from = 0, []
    for cycle in range(3):
        extra = ('--resume',) if (run / 'last.pt').exists() else ()
        done = load_checkpoint(run / 'last.pt')['epoch'] if extra else 0
        resumed_from.append(done)
        log = tmp_path / f'cycle{cycle}.log'
        proc = launch(kill_argv(fixture_wider, run, *extra), log)
        if rng.random() < STARTUP_KILL_P:
            time.sleep(rng.uniform(0, startup))
        else:   # after some completed epochs of this run, anywhere in the next one (its save included)
            wait_for(proc, log, 'config {')
            wait_for(proc, log, 'metrics {', rng.randint(0, max(0, KILL_EPOCHS - 3 - done)))
            time.sleep(rng.uniform(0, epoch_time))
        proc.send_signal(signal.SIGKILL)
        kills += proc.wait(timeout=60) == -signal.SIGKILL
        if (run / 'last.pt').exists():   # never a truncated checkpoint, whatever the moment
            ckpt = load_checkpoint(run / 'last.pt')
            assert 1 <= ckpt['epoch'] <= KILL_EPOCHS, f'kill seed {seed}'
            model_from_checkpoint(ckpt)
        if (run / 'metrics.jsonl').exists():
            metrics(run / 'metrics.jsonl')   # whole JSON lines only
    assert kills >= 2, f'kill seed {seed}: only {kills} of 3 processes were still running when killed'

    extra = ('--resume',) if (run / 'last.pt').exists() else ()
    resumed_from.append(load_checkpoint(run / 'last.pt')['epoch'] if extra else 0)
    proc = launch(kill_argv(fixture_wider, run, *extra), tmp_path / 'final.log')
    assert proc.wait(timeout=300) == 0, (tmp_path / 'final.log').read_text()[-2000:]
    final = load_checkpoint(run / 'last.pt')
    assert final['epoch'] == KILL_EPOCHS
    assert_same_state(final['model'], state(ref / 'last.pt'))
    print(f'kill seed {seed}: {kills} kills, runs started from epochs {resumed_from}, '
          f'leftover temp files {temp_files(run)}')
    # not vacuous: at least one run continued from a mid-run checkpoint
    assert any(0 < d < KILL_EPOCHS for d in resumed_from), f'kill seed {seed}: resumed from {resumed_from}'
