"""Build the native library (csrc/*.c) with the system C compiler, once per source version.

The shared library goes to build/native/ (git-ignored) under a name carrying a hash of the
sources, flags and compiler, so an edited source is rebuilt and a stale library is never
loaded. No compiler (or no csrc/, as in a wheel) is not an error here: `find_compiler` and
`build_library` raise NativeUnavailable with the reason, and the caller falls back to numpy.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import NativeUnavailable

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / 'csrc'
BUILD = ROOT / 'build' / 'native'
# -ffp-contract=off: no fused multiply-add, so ifq_vote.c's double sums round as numpy's do
CFLAGS = ('-std=c99', '-O2', '-fPIC', '-ffp-contract=off', '-Wall', '-Wextra')
SANITIZE_FLAGS = ('-std=c99', '-O1', '-ffp-contract=off', '-g', '-fno-omit-frame-pointer',
                  '-fsanitize=address,undefined', '-fno-sanitize-recover=undefined', '-Wall', '-Wextra')
# run-time options of programs built with SANITIZE_FLAGS: stop at the first report, leaks included
SANITIZER_ENV = {'ASAN_OPTIONS': 'detect_leaks=1:halt_on_error=1:abort_on_error=0',
                 'UBSAN_OPTIONS': 'halt_on_error=1:print_stacktrace=1'}
LIB_SUFFIX = '.dylib' if sys.platform == 'darwin' else '.so'
COMPILE_TIMEOUT_S = 300


def find_compiler() -> str:
    """Path of the C compiler: $CC, else cc, gcc or clang on PATH; NativeUnavailable if none."""
    for name in filter(None, (os.environ.get('CC'), 'cc', 'gcc', 'clang')):
        path = shutil.which(name)
        if path:
            return path
    raise NativeUnavailable('no C compiler found ($CC, cc, gcc, clang): the numpy engine runs instead')


def library_sources() -> list[Path]:
    """The library's C files (csrc/*.c; csrc/tools/ holds programs, not library code)."""
    if not (CSRC / 'ifq.h').is_file():
        raise NativeUnavailable(f'C sources not found at {CSRC}')
    return sorted(CSRC.glob('*.c'))


def _digest(cc: str, flags: tuple[str, ...], files: list[Path]) -> str:
    h = hashlib.sha1(' '.join((cc,) + flags).encode())
    for f in sorted(files) + sorted(CSRC.glob('*.h')):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:12]


def _compile(cc: str, args: list[str], out: Path) -> Path:
    """Run the compiler into a temporary name, then move it into place atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix='.tmp')
    os.close(fd)
    try:
        done = subprocess.run([cc, *args, '-o', tmp], capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        if done.returncode:
            raise NativeUnavailable(f'compiling the native library failed:\n{done.stderr.strip()}')
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NativeUnavailable(f'compiling the native library failed: {e}') from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def build_library() -> Path:
    """The shared library, compiled if missing or out of date; NativeUnavailable if impossible."""
    files = library_sources()
    cc = find_compiler()
    out = BUILD / f'libifq-{_digest(cc, CFLAGS, files)}{LIB_SUFFIX}'
    if out.is_file():
        return out
    return _compile(cc, [*CFLAGS, '-shared', *map(str, files)], out)


def build_program(main_c: Path, name: str, sanitize: bool = False) -> Path:
    """An executable of one C file linked with the library (ASan + UBSan if `sanitize`)."""
    files = library_sources()
    cc = find_compiler()
    flags = SANITIZE_FLAGS if sanitize else CFLAGS
    out = BUILD / f'{name}-{_digest(cc, flags, files + [main_c])}'
    if out.is_file():
        return out
    return _compile(cc, [*flags, f'-I{CSRC}', str(main_c), *map(str, files)], out)


def main() -> int:
    """`python -m ifq_tinier_yolo.native.build`: build (or find) the library; say where, or why not."""
    try:
        print(build_library())
    except NativeUnavailable as e:
        print(f'native library not built: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
