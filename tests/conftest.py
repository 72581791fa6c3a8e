"""Shared fixtures: where the WIDER data lives, and single-threaded torch for the model tests."""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_WIDER = REPO.parent / 'shared' / 'data' / 'wider'
FIXTURE_WIDER = REPO / 'tests' / 'fixtures' / 'wider'


def _has_train_split(root: Path) -> bool:
    return (root / 'wider_face_split' / 'wider_face_train_bbx_gt.txt').is_file() and \
        (root / 'WIDER_train' / 'images').is_dir()


@pytest.fixture(scope='session')
def native_built() -> None:
    """Skips unless the native library builds and loads here (the native test modules use it)."""
    from ifq_tinier_yolo import native
    reason = native.unavailable_reason()
    if reason:
        pytest.skip(f'native library unavailable: {reason}')


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


@pytest.fixture
def wider_copy(tmp_path: Path, fixture_wider: Path) -> Path:
    """A writable copy of the tiny WIDER layout (tmp_path/wider), for tests that damage it."""
    root = tmp_path / 'wider'
    shutil.copytree(fixture_wider, root)
    return root


@pytest.fixture(scope='session')
def any_wider() -> Path:
    """Real WIDER train images when present, else the committed fixture; skips when neither exists."""
    for root in (SHARED_WIDER, FIXTURE_WIDER):
        if _has_train_split(root):
            return root
    pytest.skip(f'no WIDER train split at {SHARED_WIDER} nor {FIXTURE_WIDER}')


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread inside the block: on a busy 2-core machine, 2 threads are ~10x slower."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def torch_one_thread():
    """Run torch on one thread for the test."""
    with one_torch_thread():
        yield


@pytest.fixture(scope='module')
def torch_one_thread_module():
    """Run torch on one thread for a whole test module (for module-scoped fixtures that run torch)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope='session')
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight hwgq checkpoint of the netdef table (arbitrary but deterministic detections)."""
    import torch
    from ifq_tinier_yolo.checkpoint import save_checkpoint
    from ifq_tinier_yolo.model.tinier_yolo import TinierYolo
    with one_torch_thread():
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp('random_model') / 'random.pt'
        save_checkpoint(path, TinierYolo(quant='hwgq').eval(), img_size=416, config={})
    return path


@pytest.fixture(scope='session')
def random_ifq(random_checkpoint: Path) -> Path:
    """`random_checkpoint` converted to an integer model file (.ifq beside it)."""
    from ifq_tinier_yolo.integrate.convert import convert
    from ifq_tinier_yolo.integrate.modelfile import save
    path = random_checkpoint.with_suffix('.ifq')
    with one_torch_thread():
        save(convert(random_checkpoint), path)
    return path


@pytest.fixture(scope='session')
def tiny_ifq_bytes() -> bytes:
    """The bytes of a valid .ifq file of a 4-layer table (about 1 KB): the seed of the loader fuzz tests."""
    from ifq_tinier_yolo.engine import modelfile as fmt
    from ifq_tinier_yolo.integrate.convert import convert_model
    from quant_nets import random_quant_network
    from ifq_tinier_yolo.netdef import LayerSpec
    tiny = (LayerSpec('c1', 'first', 4, 3, 2), LayerSpec('c2', 'hidden', 6, 3, 1, pool=2),
            LayerSpec('c3', 'hidden', 5, 3, 1), LayerSpec('head', 'head', 10, 1, 1))
    anchors = ((0.5, 0.75), (2.0, 3.0))
    with one_torch_thread():
        return fmt.to_bytes(convert_model(random_quant_network(tiny, anchors, seed=5, calib_size=16), 32))


@pytest.fixture(scope='session')
def torch_flags(random_checkpoint: Path) -> list[str]:
    """CLI flags running `random_checkpoint` on the torch backend on a small input; conf 0 keeps every
    box NMS keeps, so the box checks have boxes to check."""
    return ['--backend', 'torch', '--model', str(random_checkpoint), '--img-size', '64', '--conf', '0']


DEV_IMAGES = SHARED_WIDER / 'WIDER_val' / 'images'


@pytest.fixture(scope='session')
def dev_images() -> list[Path]:
    """The 178 dev benchmark images (WIDER val subset in ../shared); skips, naming the path, without them."""
    paths = sorted(DEV_IMAGES.rglob('*.jpg'))
    if not paths:
        pytest.skip(f'dev images not found at {DEV_IMAGES}')
    return paths
