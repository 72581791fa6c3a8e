"""Shared fixtures: where the WIDER data lives, and single-threaded torch for the model tests."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_WIDER = REPO.parent / 'shared' / 'data' / 'wider'
FIXTURE_WIDER = REPO / 'tests' / 'fixtures' / 'wider'


def _has_train_split(root: Path) -> bool:
    return (root / 'wider_face_split' / 'wider_face_train_bbx_gt.txt').is_file() and \
        (root / 'WIDER_train' / 'images').is_dir()


@pytest.fixture(scope='session')
def shared_wider() -> Path:
    """The real WIDER FACE subset (../shared/data/wider); skips when it is absent."""
    if not _has_train_split(SHARED_WIDER):
        pytest.skip(f'real WIDER FACE train split not found at {SHARED_WIDER}')
    return SHARED_WIDER


@pytest.fixture(scope='session')
def fixture_wider() -> Path:
    """The committed tiny WIDER layout (tests/fixtures/wider, 3 train images); skips when absent."""
    if not _has_train_split(FIXTURE_WIDER):
        pytest.skip(f'tiny WIDER fixture not found at {FIXTURE_WIDER}')
    return FIXTURE_WIDER


@pytest.fixture(scope='session')
def any_wider() -> Path:
    """Real WIDER train images when present, else the committed fixture; skips when neither exists."""
    for root in (SHARED_WIDER, FIXTURE_WIDER):
        if _has_train_split(root):
            return root
    pytest.skip(f'no WIDER train split at {SHARED_WIDER} nor {FIXTURE_WIDER}')


@pytest.fixture
def torch_one_thread():
    """Run torch on one thread for the test: on a busy 2-core machine, 2 threads are ~10x slower."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
