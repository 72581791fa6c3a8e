"""examples/c: the Makefile builds `detect`, which reads a PPM and prints the faces as a JSON line;
on an image that needs no resize its faces equal the Python native backend's, for the shipped
chain and for a two-head layer graph (netdef.LAYERS_V2, random parameters)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from ifq_tinier_yolo import native

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / 'examples' / 'c'
SHIPPED = REPO / 'weights' / 'ifq_tinier_yolo.ifq'
SAMPLES = REPO / 'data' / 'samples'
CONF, NMS = 0.5, 0.45


@pytest.fixture(scope='module')
def detect_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which('make') is None or not native.available():
        pytest.skip(f'no make or no C compiler: {native.unavailable_reason() or "make not found"}')
    out = tmp_path_factory.mktemp('example')
    subprocess.run(['make', '-s', '-C', str(EXAMPLE), f'BUILD={out}'], check=True, capture_output=True)
    return out / 'detect'


def write_ppm(path: Path, bgr: np.ndarray) -> None:
    h, w = bgr.shape[:2]
    path.write_bytes(b'P6\n# made by the test\n%d %d\n255\n' % (w, h) + bgr[:, :, ::-1].tobytes())


def sample_image() -> np.ndarray:
    paths = sorted(SAMPLES.glob('*.jpg'))
    if not paths:
        pytest.skip(f'no sample images in {SAMPLES}')
    return cv2.imread(str(paths[0]))


def run(exe: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize('which', ['shipped', 'v2'])
def test_example_matches_the_backend_without_resize(detect_exe: Path, tmp_path: Path, which: str):
    model_path = SHIPPED
    if which == 'v2':
        from test_native_graph import v2_bytes
        model_path = tmp_path / 'v2.ifq'
        model_path.write_bytes(v2_bytes())
    backend = native.load(model_path)
    image = sample_image()
    s = backend.input_size / max(image.shape[:2])
    image = cv2.resize(image, (round(image.shape[1] * s), round(image.shape[0] * s)))   # longer side = input size
    write_ppm(tmp_path / 'a.ppm', image)
    done = run(detect_exe, str(model_path), str(tmp_path / 'a.ppm'), str(CONF), str(NMS))
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record['width'], record['height']) == (image.shape[1], image.shape[0])
    got = [[f['x'], f['y'], f['w'], f['h'], f['score']] for f in record['faces']]
    want = backend.detect(image, CONF, NMS)
    assert len(got) == len(want) > 0
    np.testing.assert_allclose(np.array(got)[:, :4], want[:, :4], atol=0.006)
    np.testing.assert_allclose(np.array(got)[:, 4], want[:, 4], atol=0.00006)


def test_example_resizes_and_refuses_bad_input(detect_exe: Path, tmp_path: Path):
    image = sample_image()
    write_ppm(tmp_path / 'a.ppm', image)
    done = run(detect_exe, str(SHIPPED), str(tmp_path / 'a.ppm'), '0.3', '0.45', '320')
    assert done.returncode == 0, done.stderr
    for face in json.loads(done.stdout)['faces']:
        assert 0 <= face['x'] <= face['x'] + face['w'] <= image.shape[1] + 0.01
    (tmp_path / 'bad.ppm').write_bytes(b'P6\n4 4\n255\n' + bytes(10))
    done = run(detect_exe, str(SHIPPED), str(tmp_path / 'bad.ppm'))
    assert done.returncode == 1 and done.stdout == ''
    assert done.stderr.strip().splitlines() == [f'error: {tmp_path / "bad.ppm"}: truncated PPM pixel data']
    (tmp_path / 'm.ifq').write_bytes(SHIPPED.read_bytes()[:50])
    done = run(detect_exe, str(tmp_path / 'm.ifq'), str(tmp_path / 'a.ppm'))
    assert done.returncode == 1 and 'truncated (50 bytes' in done.stderr


def test_no_compiler_is_a_clear_fallback(monkeypatch: pytest.MonkeyPatch):
    """Without a C compiler the builder says so in one line (callers then run the numpy engine)."""
    from ifq_tinier_yolo.native import build
    monkeypatch.setenv('PATH', '/nonexistent')
    monkeypatch.delenv('CC', raising=False)
    with pytest.raises(build.NativeUnavailable, match='no C compiler found'):
        build.find_compiler()
