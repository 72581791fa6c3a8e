"""`webcam`: live detection from a camera (or a video file standing in for one), boxes and FPS drawn.

In a window, q or Esc quits. With --out VIDEO it runs headless and writes the annotated video
atomically; Ctrl-C then ends the recording cleanly. A live camera is read on a grabber thread
that keeps only the newest frame, so the loop never falls behind the camera; a video file is
read frame by frame, so its annotated copy is complete.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from types import TracebackType
from typing import Iterator

import cv2
import numpy as np

from ..errors import ConfigError, ImageError
from .detect import detector_from_args, open_capture
from .draw import AtomicVideoWriter, check_video_path, draw_faces, draw_fps

WINDOW = 'ifq-tinier-yolo'
QUIT_KEYS = (ord('q'), ord('Q'), 27)   # 27: Esc
FPS_SMOOTHING = 0.9                    # weight of the previous estimate in the FPS shown on frames
GRAB_TIMEOUT_S = 5.0                   # a live camera silent this long is treated as disconnected
WINDOW_PROBE = 'import cv2; cv2.namedWindow("probe"); cv2.waitKey(1); cv2.destroyAllWindows()'
WINDOW_PROBE_TIMEOUT_S = 20.0


class LatestFrame:
    """Reads a live capture on a thread, keeping only the newest frame: unread older frames are dropped."""

    def __init__(self, cap: cv2.VideoCapture):
        self._cap = cap
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._grabbed = 0            # frames read since the last `get`
        self._ended = False
        self._stopping = False
        self.dropped = 0             # frames replaced before anyone read them
        self._thread = threading.Thread(target=self._grab, name='frame-grabber', daemon=True)
        self._thread.start()

    def _grab(self) -> None:
        while not self._stopping:
            ok, frame = self._cap.read()
            with self._cond:
                if not ok:
                    self._ended = True
                elif self._frame is not None:
                    self.dropped += 1
                if ok:
                    self._frame, self._grabbed = frame, self._grabbed + 1
                self._cond.notify()
            if not ok:
                return

    def get(self, timeout: float = GRAB_TIMEOUT_S) -> tuple[np.ndarray | None, int]:
        """(newest unread frame, camera frames it stands for); (None, 0) once the capture ended or went silent."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._ended, timeout)
            frame, grabbed = self._frame, self._grabbed
            self._frame, self._grabbed = None, 0
        return frame, grabbed

    def stop(self) -> None:
        """Stop the thread (it finishes the read in progress)."""
        self._stopping = True
        self._thread.join(timeout=GRAB_TIMEOUT_S)

    def __enter__(self) -> LatestFrame:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def iter_frames(cap: cv2.VideoCapture, grabber: LatestFrame | None) -> Iterator[tuple[np.ndarray, int]]:
    """(uint8 BGR frame, source frames it stands for): every frame of a file, the newest of a live camera."""
    if grabber is None:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame, 1
    while True:
        frame, grabbed = grabber.get()
        if frame is None:
            return
        yield frame, grabbed


def open_camera(camera: str) -> tuple[cv2.VideoCapture, bool]:
    """(opened capture, live): an integer opens that camera, anything else a video file."""
    if camera.isdigit():
        cap = open_capture(int(camera))
        if not cap.isOpened():
            cap.release()
            raise ConfigError(f'camera {camera}: cannot open it (no such camera, or it is busy); '
                              f'--camera takes a camera index or a video path')
        return cap, True
    path = Path(camera)
    if not path.is_file():
        raise ImageError(f'{path}: no such video file (--camera takes a camera index or a video path)')
    cap = open_capture(path)
    if not cap.isOpened():
        cap.release()
        raise ImageError(f'{path}: cannot open as a video (not a video, or a codec OpenCV lacks)')
    return cap, False


def check_display() -> None:
    """Raise ConfigError unless a window can be opened, then open it."""
    hint = 'pass --out VIDEO to write the annotated video instead'
    if sys.platform.startswith('linux') and not os.environ.get('DISPLAY'):
        raise ConfigError(f'no display (DISPLAY is not set): {hint}')
    # probe in a child process: OpenCV's Qt backend aborts the whole process on an unusable display
    try:
        probe = subprocess.run([sys.executable, '-c', WINDOW_PROBE], capture_output=True, text=True,
                               timeout=WINDOW_PROBE_TIMEOUT_S)
        why = (probe.stderr.strip().splitlines() or [f'exit status {probe.returncode}'])[0]
    except subprocess.TimeoutExpired:
        probe, why = None, f'no answer in {WINDOW_PROBE_TIMEOUT_S:.0f} s'
    if probe is None or probe.returncode != 0:
        display = os.environ.get('DISPLAY', '')
        raise ConfigError(f'cannot open a window{f" on display {display}" if display else ""} ({why}): {hint}')
    cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)


def _window_closed() -> bool:
    """True once the user closed the window (or pressed a quit key)."""
    if (cv2.waitKey(1) & 0xFF) in QUIT_KEYS:
        return True
    return cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1


def cli_webcam(args: argparse.Namespace) -> int:
    """`webcam`: returns 0; FPS and frame counts on stderr."""
    if args.max_frames < 0:
        raise ConfigError(f'--max-frames {args.max_frames} must be >= 0 (0: no limit)')
    headless = args.out is not None
    if headless:
        check_video_path(args.out)
    cap, live = open_camera(str(args.camera))
    window = False   # whether a window was opened (and must be closed)
    try:
        if not headless:
            check_display()
            window = True
        detector = detector_from_args(args)
        writer = AtomicVideoWriter(args.out, cap.get(cv2.CAP_PROP_FPS)) if headless else None
        frames, fps = 0, 0.0
        start = last = time.perf_counter()
        with writer or nullcontext(), (LatestFrame(cap) if live else nullcontext()) as grabber:
            try:
                for frame, stands_for in iter_frames(cap, grabber):
                    boxes = detector.detect_array(frame)
                    now = time.perf_counter()
                    rate = 1.0 / max(now - last, 1e-9)
                    fps = rate if frames == 0 else FPS_SMOOTHING * fps + (1 - FPS_SMOOTHING) * rate
                    last, frames = now, frames + 1
                    draw_fps(draw_faces(frame, boxes), fps)
                    if writer is not None:
                        # repeat a frame for the camera frames dropped meanwhile: playback keeps real time
                        for _ in range(stands_for):
                            writer.write(frame)
                    else:
                        cv2.imshow(WINDOW, frame)
                        if _window_closed():
                            break
                    if args.max_frames and frames >= args.max_frames:
                        break
            except KeyboardInterrupt:
                pass   # Ctrl-C is how a headless live recording ends: keep what was recorded
        if frames == 0:
            raise ImageError(f'{args.camera}: no frame could be read')
        dropped = grabber.dropped if live else 0
        elapsed = time.perf_counter() - start
        wrote = f', wrote {args.out}' if headless else ''
        print(f'webcam: {frames} frames, {dropped} dropped, {frames / max(elapsed, 1e-9):.1f} FPS{wrote}',
              file=sys.stderr)
    finally:
        cap.release()
        if window:
            cv2.destroyAllWindows()
    return 0
