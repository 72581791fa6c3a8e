"""Atomic output files: every file the project writes appears whole or not at all."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from .errors import OutputError


def _umask() -> int:
    """The process umask (reading it requires setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | Path, mode: str = 'w', encoding: str | None = None) -> Iterator[IO]:
    """Open a temp file beside `path`; on clean exit fsync and rename it over `path`.

    On an exception (or a kill) the target is untouched and the temp file is removed
    (or, after SIGKILL, left as a hidden `.NAME.*.tmp` that nothing reads).
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f'atomic_open writes only, mode {mode!r}')
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:   # a file where a folder should be, or no permission
        raise type(e)(e.errno, f'cannot create its folder ({e.filename}: {e.strerror})', str(path)) from None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, mode, encoding=encoding if mode == 'w' else None,
                       newline='' if mode == 'w' else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.chmod(f.fileno(), 0o666 & ~_umask())   # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def output_errors(path: str | Path) -> Iterator[None]:
    """Raise an OSError of the block as OutputError 'PATH: cannot write (REASON)', one line for the CLI."""
    try:
        yield
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(f'{path}: cannot write ({e.strerror or e})') from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a whole text file atomically (UTF-8, newlines as given)."""
    with atomic_open(path, 'w', encoding='utf-8') as f:
        f.write(text)


def read_bytes(path: str | Path, error: type[Exception], what: str) -> bytes:
    """The whole file; raises `error('PATH: no such WHAT')` or `error('PATH: cannot read (...)')`."""
    path = Path(path)
    if not path.is_file():
        raise error(f'{path}: no such {what}')
    try:
        return path.read_bytes()
    except OSError as e:
        raise error(f'{path}: cannot read ({e.strerror or e})') from None
