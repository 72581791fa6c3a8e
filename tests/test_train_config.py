"""Training config and pure training functions (train_config.py, train.py): overrides, the flags
made from TrainConfig, config checks, LR schedule, optimizer groups, the weight average, the
non-finite loss check."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ifq_tinier_yolo.cli import build_parser, main
from ifq_tinier_yolo.errors import ConfigError, TrainingError
from ifq_tinier_yolo.model.tinier_yolo import TinierYolo
from ifq_tinier_yolo.train import check_finite, config_from_args, lr_at, make_optimizer, weight_average
from ifq_tinier_yolo.train_config import TrainConfig, add_train_arguments, parse_overrides

pytestmark = pytest.mark.usefixtures('torch_one_thread')


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
    (['--mosaic', '1.5'], ['mosaic is a probability', '1.5']),
    (['--tiny-faces', '-1'], ['tiny_faces is a size in pixels', '-1']),
    (['--crop-min', '0'], ['0 < crop_min <= crop_max', '0.0, 1.25']),
    (['--crop-min', '0.5', '--crop-max', '0.4'], ['0 < crop_min <= crop_max', '0.5, 0.4']),
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
