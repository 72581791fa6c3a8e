"""`convert --emit-c model.h`: an .ifq file as a C array, for devices without a file system.

    #include "model.h"
    ifq_model_load(ifq_model_data, ifq_model_data_len, &model, &err);

The array holds the file's bytes unchanged (CRC included), so the C loader checks it exactly
as it checks a file.
"""
from __future__ import annotations

from pathlib import Path

from ..fileio import atomic_open

BYTES_PER_LINE = 16


def c_header(ifq_bytes: bytes, name: str = 'ifq_model_data') -> str:
    """The text of a header defining `const uint8_t name[]` and `const size_t name_len`."""
    if not name.isidentifier() or not name.isascii():
        raise ValueError(f'{name!r} is not a C identifier')
    guard = name.upper() + '_H'
    rows = [', '.join(f'0x{b:02x}' for b in ifq_bytes[i:i + BYTES_PER_LINE])
            for i in range(0, len(ifq_bytes), BYTES_PER_LINE)]
    lines = [f'/* {name}: an .ifq model ({len(ifq_bytes)} bytes), written by `convert --emit-c`. */',
             f'#ifndef {guard}', f'#define {guard}', '', '#include <stddef.h>', '#include <stdint.h>', '',
             f'static const uint8_t {name}[{len(ifq_bytes)}] = {{']
    lines += [f'    {r},' for r in rows]
    lines += ['};', f'static const size_t {name}_len = {len(ifq_bytes)};', '', '#endif', '']
    return '\n'.join(lines)


def emit_c_header(ifq_bytes: bytes, path: str | Path, name: str = 'ifq_model_data') -> None:
    """Write `c_header(ifq_bytes, name)` to `path` atomically."""
    with atomic_open(Path(path), 'w') as f:
        f.write(c_header(ifq_bytes, name))
