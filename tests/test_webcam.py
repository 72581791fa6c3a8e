"""`webcam`: a video standing in for a camera (headless, every frame), frame dropping, one-line errors."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ifq_tinier_yolo.apps import webcam
from ifq_tinier_yolo.apps.webcam import LatestFrame, iter_frames

from cli_helpers import VIDEO_FRAMES, count_frames, make_video, run


pytestmark = pytest.mark.usefixtures('torch_one_thread')


@pytest.fixture(scope='module')
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-frame 64x64 MJPG .avi."""
    return make_video(tmp_path_factory.mktemp('video') / 'clip.avi', VIDEO_FRAMES)


@pytest.mark.parametrize('suffix', ['.mp4', '.avi'])
def test_video_as_camera_headless_writes_every_frame(capsys, tmp_path: Path, video: Path,
                                                     torch_flags: list[str], suffix: str):
    out = tmp_path / 'runs' / f'out{suffix}'
    rc, stdout, err = run(capsys, 'webcam', '--camera', str(video), '--out', str(out), *torch_flags)
    assert rc == 0 and stdout == ''
    assert count_frames(out) == VIDEO_FRAMES
    [line] = err.strip().splitlines()
    assert line.startswith(f'webcam: {VIDEO_FRAMES} frames, 0 dropped, ') and ' FPS, wrote ' in line
    assert float(line.split(' FPS')[0].rsplit(' ', 1)[1]) > 0
    assert [p.name for p in out.parent.iterdir()] == [out.name]   # no temp file left


def test_max_frames(capsys, tmp_path: Path, video: Path, torch_flags: list[str]):
    out = tmp_path / 'three.avi'
    rc, _, err = run(capsys, 'webcam', '--camera', str(video), '--out', str(out), '--max-frames', '3', *torch_flags)
    assert rc == 0 and count_frames(out) == 3 and 'webcam: 3 frames' in err


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='DISPLAY decides only on Linux')
def test_no_display_without_out_is_one_line_error(capsys, monkeypatch: pytest.MonkeyPatch, video: Path,
                                                  torch_flags: list[str]):
    monkeypatch.delenv('DISPLAY', raising=False)
    rc, _, err = run(capsys, 'webcam', '--camera', str(video), *torch_flags)
    assert rc == 1
    assert err == 'error: no display (DISPLAY is not set): pass --out VIDEO to write the annotated video instead\n'


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='X11 displays only on Linux')
def test_unusable_display_is_one_line_error(capsys, monkeypatch: pytest.MonkeyPatch, video: Path,
                                            torch_flags: list[str]):
    monkeypatch.setenv('DISPLAY', ':987')   # no X server answers there
    rc, _, err = run(capsys, 'webcam', '--camera', str(video), *torch_flags)
    assert rc == 1 and err.startswith('error: cannot open a window on display :987 (') and err.count('\n') == 1
    assert err.endswith('pass --out VIDEO to write the annotated video instead\n')


@pytest.mark.parametrize('camera, message', [
    ('97', 'error: camera 97: cannot open it'),
    ('missing.mp4', 'error: missing.mp4: no such video file'),
])
def test_bad_camera_is_one_line_error(capsys, tmp_path: Path, torch_flags: list[str], camera: str, message: str):
    rc, _, err = run(capsys, 'webcam', '--camera', camera, '--out', str(tmp_path / 'o.avi'), *torch_flags)
    assert rc == 1 and err.startswith(message) and err.count('\n') == 1
    assert not list(tmp_path.iterdir())


def test_unwritable_video_type_is_one_line_error(capsys, tmp_path: Path, video: Path, torch_flags: list[str]):
    rc, _, err = run(capsys, 'webcam', '--camera', str(video), '--out', str(tmp_path / 'o.txt'), *torch_flags)
    assert rc == 1 and err.startswith(f'error: {tmp_path / "o.txt"}: cannot write .txt video files')


class FastCamera:
    """A capture that delivers numbered frames every `period` seconds, then ends."""

    def __init__(self, frames: int, period: float, side: int = 2):
        self.frames, self.period, self.side, self.sent = frames, period, side, 0
        self.reader_threads: set[str] = set()

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.reader_threads.add(threading.current_thread().name)
        time.sleep(self.period)
        if self.sent == self.frames:
            return False, None
        self.sent += 1
        return True, np.full((self.side, self.side, 3), self.sent, dtype=np.uint8)

    def get(self, prop: int) -> float:
        return 25.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self) -> None:
        pass


def test_live_loop_drops_frames_instead_of_queueing():
    camera = FastCamera(frames=100, period=0.002)
    seen, stands_for = [], []
    with LatestFrame(camera) as grabber:
        for frame, n in iter_frames(camera, grabber):
            seen.append(int(frame[0, 0, 0]))
            stands_for.append(n)
            # processing slower than the camera, by construction rather than by wall-clock
            # (a loaded machine slows the camera thread too): wait for 3 newer frames
            deadline = time.monotonic() + 5
            while camera.sent < min(seen[-1] + 3, camera.frames) and time.monotonic() < deadline:
                time.sleep(0.001)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)   # newest first, never stale
    assert len(seen) < 50 and seen[-1] == 100                     # most dropped, the last one shown
    assert grabber.dropped == 100 - len(seen)
    assert sum(stands_for) == 100                                 # every camera frame accounted for
    assert camera.reader_threads == {'frame-grabber'}


def test_file_loop_keeps_every_frame():
    camera = FastCamera(frames=7, period=0.0)
    assert [int(f[0, 0, 0]) for f, n in iter_frames(camera, None)] == list(range(1, 8))


def test_live_camera_recording_keeps_real_time(capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               torch_flags: list[str]):
    camera = FastCamera(frames=60, period=0.002, side=32)
    monkeypatch.setattr(webcam, 'open_camera', lambda spec: (camera, True))
    out = tmp_path / 'live.avi'
    rc, _, err = run(capsys, 'webcam', '--camera', '0', '--out', str(out), *torch_flags)
    processed, dropped = (int(v.split()[0]) for v in err.split(': ', 1)[1].split(', ')[:2])
    assert rc == 0 and dropped > 0 and processed + dropped == 60
    assert count_frames(out) == 60   # processed frames repeated over the dropped ones
