"""The sanitizer campaigns' common steps: build a csrc/tools/ program with ASan + UBSan (skip where
that is impossible), run it on files, fail on any report, return its output lines."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def sanitized_tool(name: str) -> Path:
    """csrc/tools/<name>.c linked with the library, built with native.build.SANITIZE_FLAGS."""
    from ifq_tinier_yolo.native.build import CSRC, NativeUnavailable, build_program
    try:
        return build_program(CSRC / 'tools' / f'{name}.c', f'{name}-asan', sanitize=True)
    except NativeUnavailable as e:
        pytest.skip(f'no sanitizer build here: {str(e).splitlines()[-1]}')


def run_sanitized(exe: Path, paths: list[Path], timeout: int = 600) -> list[str]:
    """Run `exe` on the files; assert it exits 0 with no sanitizer report; its stdout lines."""
    from ifq_tinier_yolo.native.build import SANITIZER_ENV
    done = subprocess.run([str(exe), *map(str, paths)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **SANITIZER_ENV})
    assert done.returncode == 0 and 'Sanitizer' not in done.stderr and 'runtime error' not in done.stderr, \
        done.stderr[-3000:]
    return done.stdout.splitlines()
