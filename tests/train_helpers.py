"""Helpers of the training tests: the argv of a tiny run and checks on its run folder."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ifq_tinier_yolo.checkpoint import load_checkpoint

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
