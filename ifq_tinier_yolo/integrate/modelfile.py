"""Writing `.ifq` model files (the format and its reader, `read`: engine/modelfile.py, docs/MODEL_FORMAT.md)."""
from __future__ import annotations

from pathlib import Path

from ..engine import modelfile as fmt
from ..engine.model import IntegerModel
from ..errors import ConversionError
from ..fileio import atomic_open


def save(model: IntegerModel, path: str | Path) -> int:
    """Write the model atomically (whole file or nothing); returns its size in bytes."""
    try:
        data = fmt.to_bytes(model)
    except ValueError as e:
        raise ConversionError(f'cannot write {path}: {e}') from None
    with atomic_open(path, 'wb') as f:
        f.write(data)
    return len(data)


def file_bytes(model: IntegerModel) -> int:
    """Size in bytes of the model's `.ifq` file."""
    return len(fmt.to_bytes(model))
