"""Helpers shared by the CLI tests: run `cli.main` capturing its output, write and count video frames.

tests/ has no __init__.py: pytest's default (prepend) import mode puts tests/ on sys.path, so the
test files import this module as `from cli_helpers import ...`.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ifq_tinier_yolo.cli import main

VIDEO_FRAMES = 10


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """`cli.main(argv)`: its return code, stdout and stderr."""
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def make_video(path: Path, frames: int = VIDEO_FRAMES, size: int = 64) -> Path:
    """A `frames`-frame size x size MJPG video of noise, darker frame by frame."""
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3)).astype(np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10, (size, size))
    for k in range(frames):
        writer.write(image // (k + 1))
    writer.release()
    return path


def count_frames(path: Path) -> int:
    """The number of frames OpenCV reads from a video file."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n
