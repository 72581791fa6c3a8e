"""The engine-only install: `pip install .` (numpy, opencv, tqdm; no torch, scipy, matplotlib or
onnx) in a fresh venv runs `detect` on the samples, and gives the same JSON as the full install."""
from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / 'weights' / 'ifq_tinier_yolo.ifq'
SAMPLES = REPO / 'data' / 'samples'
ABSENT = ('torch', 'scipy', 'matplotlib', 'albumentations', 'onnx', 'onnxruntime')


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_engine_only_install_runs_detect(tmp_path: Path):
    env = tmp_path / 'venv'
    venv.create(env, with_pip=True)
    py = str(env / 'bin' / 'python')
    pip = run([py, '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', str(REPO)], tmp_path)
    if pip.returncode and ('Could not find a version' in pip.stderr or 'NewConnectionError' in pip.stderr):
        pytest.skip(f'the package index is not reachable: {pip.stderr.strip().splitlines()[-1]}')
    assert pip.returncode == 0, pip.stderr
    absent = run([py, '-c', 'import importlib.util as u; print([m for m in %r if u.find_spec(m)])' % (ABSENT,)],
                 tmp_path)
    assert absent.stdout.strip() == '[]', absent.stdout
    cmd = ['-m', 'ifq_tinier_yolo', 'detect', str(SAMPLES), '--model', str(MODEL), '--backend', 'int', '--json', '-']
    core = run([py, *cmd], tmp_path)                     # outside the checkout: the installed package
    assert core.returncode == 0, core.stderr
    full = run([sys.executable, *cmd], REPO)
    assert core.stdout == full.stdout and core.stdout.count('"faces": [{') == 2
