"""Training in subprocesses: a 2-process DistributedDataParallel run, and SIGKILL at random
moments then --resume (slow: `pytest -m slow`)."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ifq_tinier_yolo.checkpoint import load_checkpoint, model_from_checkpoint

from train_helpers import REPO, assert_same_state, metrics, state, temp_files, train_argv

pytestmark = pytest.mark.usefixtures('torch_one_thread')

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
