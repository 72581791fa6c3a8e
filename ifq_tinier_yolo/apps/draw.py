"""Annotated output shared by `detect` and `webcam`: boxes, scores, FPS, and atomic video files."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from ..errors import ConfigError, OutputError
from ..fileio import output_errors

BOX_COLOR = (0, 255, 0)        # BGR green
TEXT_COLOR = (0, 0, 0)         # black on the box colour
FPS_COLOR = (0, 255, 255)      # BGR yellow
FONT = cv2.FONT_HERSHEY_SIMPLEX
PIXELS_PER_LINE_WIDTH = 320    # one pixel of line width per this many pixels of the shorter side
# container suffix -> fourcc OpenCV's bundled FFMPEG writes without extra codecs
VIDEO_CODECS = {'.avi': 'MJPG', '.mkv': 'MJPG', '.mp4': 'mp4v', '.m4v': 'mp4v', '.mov': 'mp4v', '.webm': 'VP80'}
DEFAULT_FPS = 30.0             # when a video does not say its frame rate


def _line_width(image: np.ndarray) -> int:
    """Line width in pixels that stays visible on large images and thin on small ones."""
    return max(1, round(min(image.shape[:2]) / PIXELS_PER_LINE_WIDTH))


def _label(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    """Text on a filled background, bottom-left at (x, y), kept inside the image (in place)."""
    t = _line_width(image)
    scale, stroke = 0.4 * t, max(1, t // 2)   # text strokes thinner than box lines stay legible
    (tw, th), base = cv2.getTextSize(text, FONT, scale, stroke)
    x = min(max(x, 0), max(image.shape[1] - tw, 0))
    y = min(max(y, th + base), image.shape[0])
    cv2.rectangle(image, (x, y - th - base), (x + tw, y), color, cv2.FILLED)
    cv2.putText(image, text, (x, y - base), FONT, scale, TEXT_COLOR, stroke, cv2.LINE_AA)


def draw_faces(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Draw float (N, 5) x, y, w, h, score boxes and scores on uint8 (H, W, 3) BGR, in place; returns image."""
    t = _line_width(image)
    for x, y, w, h, score in boxes:
        x1, y1, x2, y2 = round(x), round(y), round(x + w), round(y + h)
        cv2.rectangle(image, (x1, y1), (x2, y2), BOX_COLOR, t)
        _label(image, f'{score:.2f}', x1, y1, BOX_COLOR)
    return image


def draw_fps(image: np.ndarray, fps: float) -> np.ndarray:
    """Write 'FPS n.n' in the top-left corner of uint8 BGR, in place; returns image."""
    _label(image, f'FPS {fps:.1f}', 0, 0, FPS_COLOR)
    return image


def check_video_path(path: Path) -> None:
    """Raise ConfigError unless OpenCV can write a video with this file suffix."""
    if path.suffix.lower() not in VIDEO_CODECS:
        raise ConfigError(f'{path}: cannot write {path.suffix or "suffix-less"} video files; '
                          f'use one of {", ".join(VIDEO_CODECS)}')


class AtomicVideoWriter:
    """Frames -> a video file that appears whole or not at all (hidden temp file, renamed on success).

    Opens on the first frame (its size fixes the video size); later frames of another size are
    resized. As a context manager: commits on a clean exit, discards on an exception.
    """

    def __init__(self, path: Path, fps: float):
        check_video_path(path)
        self.path = Path(path)
        self.fps = fps if fps > 0 else DEFAULT_FPS
        self.frames = 0          # frames written so far
        self._tmp: Path | None = None
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] = (0, 0)

    def _open(self, width: int, height: int) -> None:
        with output_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # the temp name keeps the real suffix last: OpenCV picks the container from it
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f'.{self.path.stem}.',
                                       suffix=f'.tmp{self.path.suffix}')
        os.close(fd)
        self._tmp, self._size = Path(tmp), (width, height)
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
        self._writer = cv2.VideoWriter(tmp, fourcc, self.fps, self._size)
        if not self._writer.isOpened():
            self.discard()
            raise OutputError(f'{self.path}: OpenCV cannot write this video (codec or folder not writable)')

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 (H, W, 3) BGR frame."""
        if self._writer is None:
            self._open(frame.shape[1], frame.shape[0])
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame)
        self.frames += 1

    def commit(self) -> None:
        """Finish the file and move it into place (nothing is written when no frame came)."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        with open(self._tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)
        self._tmp = None

    def discard(self) -> None:
        """Drop the temp file; the target path is left as it was."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> AtomicVideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
