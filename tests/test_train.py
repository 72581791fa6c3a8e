"""Training (train.py): overfitting 2 real images, the `train` CLI, exact resume, NaN stop and
regressions (the config and pure functions: test_train_config.py; DDP and SIGKILL-resume
subprocesses: test_train_processes.py).

The runs are tiny (64-128 px, a few images, one torch thread) so the default suite stays fast
on a busy 2-core machine.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from ifq_tinier_yolo import train as train_mod
from ifq_tinier_yolo.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from ifq_tinier_yolo.cli import main
from ifq_tinier_yolo.datasets.loader import WiderTrainSet, collate
from ifq_tinier_yolo.datasets.wider import read_wider
from ifq_tinier_yolo.model.loss import detection_loss, region_loss
from ifq_tinier_yolo.model.tinier_yolo import TinierYolo

from train_helpers import assert_same_state, metrics, state, stderr_lines, temp_files, train_argv, without_timing

pytestmark = pytest.mark.usefixtures('torch_one_thread')


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


def test_time_limit_stops_before_an_epoch_that_would_overrun_it():
    # epochs of 10 min under a 60 min limit: after the one ending at 50 min another would end at 60
    overruns = [train_mod.next_epoch_overruns(0.0, 60.0 * (m - 10), 60.0 * m, 60) for m in (10, 40, 50, 51)]
    assert overruns == [False, False, False, True]
    assert not train_mod.next_epoch_overruns(0.0, 0.0, 1e9, 0)       # 0: no limit


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


# --- distillation ----------------------------------------------------------------------------

def test_distill_loss_is_zero_on_the_teacher_itself_and_pulls_toward_it():
    from ifq_tinier_yolo.model.loss import distill_loss
    torch.manual_seed(0)
    teacher = [torch.randn(2, 15, 4, 4), torch.randn(2, 10, 8, 8)]
    assert distill_loss([t.clone() for t in teacher], teacher).item() == 0.0
    student = [torch.randn_like(t, requires_grad=True) for t in teacher]
    loss = distill_loss(student, teacher)
    assert loss.item() > 0
    loss.backward()
    stepped = [(s - 0.1 * s.grad).detach() for s in student]
    assert distill_loss(stepped, teacher).item() < loss.item()
    assert all(t.grad is None for t in teacher)   # the teacher is not trained
    with pytest.raises(ValueError, match='differ'):
        distill_loss(student[:1], teacher[1:])


def test_distilling_from_a_teacher_logs_its_loss_and_moves_toward_it(fixture_wider: Path, tmp_path: Path):
    assert main(train_argv(fixture_wider, tmp_path / 'float', '--quant', 'float', epochs=1)) == 0
    teacher = tmp_path / 'float' / 'last.pt'
    args = ('--init', str(teacher), '--quant', 'hwgq', '--epochs', '3')
    assert main(train_argv(fixture_wider, tmp_path / 'plain', *args, epochs=3)) == 0
    assert main(train_argv(fixture_wider, tmp_path / 'taught', *args, '--teacher', str(teacher),
                           '--distill', '1.0', epochs=3)) == 0
    rows = metrics(tmp_path / 'taught' / 'metrics.jsonl')
    assert 'distill' in rows[0] and 'distill' not in metrics(tmp_path / 'plain' / 'metrics.jsonl')[0]
    assert rows[-1]['distill'] < rows[0]['distill']   # the student's heads approach the teacher's
    # the run differs from the plain one only through the distillation term
    assert not torch.equal(state(tmp_path / 'taught' / 'last.pt')['heads.0.conv.weight'],
                           state(tmp_path / 'plain' / 'last.pt')['heads.0.conv.weight'])


def test_hint_loss_compares_what_the_codes_see():
    from ifq_tinier_yolo.model.loss import hint_loss
    from ifq_tinier_yolo.netdef import HWGQ_CLIP
    torch.manual_seed(0)
    teacher = [torch.randn(2, 8, 6, 6), torch.randn(2, 4, 12, 12)]
    # below 0 and above the clip the code cannot tell values apart: no loss there
    same = [torch.where(t > HWGQ_CLIP, t + 5, torch.where(t < 0, t - 5, t)) for t in teacher]
    assert hint_loss(same, teacher).item() == 0.0
    student = [torch.randn_like(t, requires_grad=True) for t in teacher]
    loss = hint_loss(student, teacher)
    loss.backward()
    assert hint_loss([(s - 0.5 * s.grad).detach() for s in student], teacher).item() < loss.item()
    with pytest.raises(ValueError, match='differ'):
        hint_loss(student[:1], teacher[1:])


def test_feature_hints_log_their_loss_and_pull_the_blocks_toward_the_teacher(fixture_wider: Path, tmp_path: Path,
                                                                            capsys):
    assert main(train_argv(fixture_wider, tmp_path / 'float', '--quant', 'float', epochs=1)) == 0
    teacher = tmp_path / 'float' / 'last.pt'
    args = ('--quant', 'hwgq', '--teacher', str(teacher), '--distill', '0')
    assert main(train_argv(fixture_wider, tmp_path / 'hint', *args, '--hint', '100', '--lr', '1e-2', epochs=3)) == 0
    assert 'feature hints on conv1, conv2, conv3, conv4, conv5, conv6' in capsys.readouterr().err
    rows = metrics(tmp_path / 'hint' / 'metrics.jsonl')
    assert rows[-1]['hint'] < rows[0]['hint']
    assert main(train_argv(fixture_wider, tmp_path / 'none', *args, epochs=1)) == 0
    assert 'hint' not in metrics(tmp_path / 'none' / 'metrics.jsonl')[0]
    assert main(train_argv(fixture_wider, tmp_path / 'alone', '--hint', '1', epochs=1)) != 0
    assert 'hint (feature distillation) needs a teacher' in stderr_lines(capsys)[-1]


@pytest.mark.parametrize('quant', ['float', 'acts', 'hwgq'])
def test_hints_record_what_the_activation_reads_in_every_mode(quant: str):
    """Also a quantized teacher in eval mode, whose blocks compute BatchNorm as integrate's affine."""
    from ifq_tinier_yolo import netdef
    from ifq_tinier_yolo.model.quant import hwgq_codes
    torch.manual_seed(0)
    model = TinierYolo(netdef.LAYERS_V2, quant=quant).eval()
    names = [b.spec.name for b in model.blocks]
    hints, outputs = train_mod.BlockOutputs(model, names), {}
    for b in model.blocks:
        b.register_forward_hook(lambda m, i, out, name=b.spec.name: outputs.__setitem__(name, out))
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64) * 255)
    for name, value in zip(names, hints.taken()):
        want = torch.relu(value) if quant == 'float' else hwgq_codes(value)
        torch.testing.assert_close(outputs[name], want, rtol=0, atol=0)


def test_a_teacher_of_another_table_is_a_clean_error(fixture_wider: Path, tmp_path: Path, capsys):
    assert main(train_argv(fixture_wider, tmp_path / 'v1', '--quant', 'float', epochs=1)) == 0
    code = main(train_argv(fixture_wider, tmp_path / 'v2', '--net', 'v2', '--teacher', str(tmp_path / 'v1' / 'last.pt'),
                           epochs=1))
    assert code != 0
    lines = stderr_lines(capsys)
    assert lines[-1].startswith('error:') and 'heads (strides or anchors) differ' in lines[-1]
    assert not (tmp_path / 'v2').exists()   # refused before the run folder is made


def test_a_teacher_needs_the_same_heads_only(tmp_path: Path):
    """The float v3 teaches v4 (the same heads; conv8 binary there, int8 here); v1's one head cannot."""
    from ifq_tinier_yolo import netdef
    from ifq_tinier_yolo.errors import ConfigError
    from ifq_tinier_yolo.train_config import TrainConfig
    for net in ('v3', 'v1'):
        save_checkpoint(tmp_path / f'{net}.pt', TinierYolo(netdef.NETWORKS[net], quant='float'), 64, {})
    cfg = TrainConfig(teacher=str(tmp_path / 'v3.pt'))
    teacher = train_mod.load_teacher(cfg, netdef.LAYERS_V4, torch.device('cpu'), lambda m: None)
    assert teacher.layers == netdef.LAYERS_V3 and not teacher.training
    with pytest.raises(ConfigError, match='heads'):
        train_mod.load_teacher(TrainConfig(teacher=str(tmp_path / 'v1.pt')), netdef.LAYERS_V4, torch.device('cpu'),
                               lambda m: None)


@pytest.mark.parametrize('changes, field, default, changed', [
    # 3 in 10 views turn, so some sample of the first epoch differs once rotated
    (dict(rotate=15.0), 'max_angle', 0.0, 15.0),
    # every cropped window zooms out, so the views differ from the default's
    (dict(crop_min=1.5, crop_max=2.0), 'window_range', (0.25, 1.25), (1.5, 2.0)),
])
def test_augment_flags_reach_the_training_views(fixture_wider: Path, changes: dict, field: str, default, changed):
    """--rotate (largest angle; 0, the default, leaves views unrotated) and --crop-min / --crop-max
    (the crop window's range) set the augmentation; their defaults are the augmenter's own."""
    from dataclasses import replace

    from ifq_tinier_yolo.datasets.augment import AugmentConfig
    from ifq_tinier_yolo.train_config import TrainConfig
    cfg = TrainConfig(img_size=64, batch=1, workers=0)
    plain = train_mod.build_data(fixture_wider, cfg, 0, 1).dataset
    varied = train_mod.build_data(fixture_wider, replace(cfg, **changes), 0, 1).dataset
    assert getattr(plain.config, field) == default == getattr(AugmentConfig(), field)
    assert getattr(varied.config, field) == changed
    assert any(not torch.equal(varied[i][0], plain[i][0]) for i in range(len(plain)))


@pytest.mark.parametrize('quant', ['float', 'hwgq'])
def test_channels_last_trains_the_same_network(fixture_wider: Path, tmp_path: Path, quant: str):
    # NHWC changes only the convolutions' summation order: the losses agree to rounding, and the
    # checkpoint holds plain (contiguous) tensors that convert like any other
    for name, extra in (('nchw', ()), ('nhwc', ('--channels-last',))):
        assert main(train_argv(fixture_wider, tmp_path / name, '--quant', quant, *extra, epochs=2)) == 0
    losses = [[row['loss'] for row in metrics(tmp_path / name / 'metrics.jsonl')] for name in ('nchw', 'nhwc')]
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)
    nchw, nhwc = state(tmp_path / 'nchw' / 'last.pt'), state(tmp_path / 'nhwc' / 'last.pt')
    assert nchw.keys() == nhwc.keys()
    assert all(t.is_contiguous() for t in nhwc.values())
