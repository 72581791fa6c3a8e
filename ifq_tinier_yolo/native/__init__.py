"""The native C runtime (csrc/) behind the numpy engine's interface: build, load, run.

    from ifq_tinier_yolo import native
    if native.available():
        backend = native.load('weights/ifq_tinier_yolo.ifq')      # kernels='portable' forces plain C
        faces = backend.detect(bgr, 0.3, 0.45)

`available()` builds the library on first use (build/native/, git-ignored) and says False,
with `unavailable_reason()`, where no C compiler exists: callers then run the numpy engine.
"""
from __future__ import annotations


class NativeUnavailable(RuntimeError):
    """The native library cannot be built or loaded here, or cannot run this model (why: the message)."""


def available() -> bool:
    """True if the native library is built (or can be built now) and loads."""
    return unavailable_reason() is None


def unavailable_reason() -> str | None:
    """None if the native library loads, else one line saying why not."""
    from . import binding
    try:
        binding.library()
    except (NativeUnavailable, OSError) as e:
        return str(e).splitlines()[0]
    return None


def load(path, kernels: str = 'auto', threads: int = 1):
    """`backend.load`: an .ifq file on the native runtime (NativeBackend); `threads` > 1 splits
    the head rows into that many bands computed in parallel (same result)."""
    from .backend import load as _load
    return _load(path, kernels, threads)


def feature_memory(model, size: int | None = None):
    """FeatureMemory (native_bytes, float_bytes, ratio) of the native runtime at input side `size`
    (default: the model's) for an .ifq path or file bytes; NativeUnavailable where it cannot run.
    For `report`: print(f'native feature memory ratio {native.feature_memory(path).ratio:.1f}')."""
    from .backend import NativeBackend
    backend = NativeBackend(model, '<bytes>') if isinstance(model, bytes) else load(model)
    return backend.feature_memory(size)


def supported_kernels() -> list[str]:
    """Kernel sets this CPU runs, 'portable' first ('auto' excluded)."""
    from . import binding
    return [k for k in binding.KERNELS[1:] if binding.kernels_supported(k)]


__all__ = ['NativeUnavailable', 'available', 'unavailable_reason', 'load', 'feature_memory', 'supported_kernels']
