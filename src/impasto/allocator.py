"""The C heap under torch's CPU tensors (glibc's malloc; elsewhere this does nothing)."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return lib if hasattr(lib, "malloc_trim") else None
    except OSError:
        return None


def release_memory() -> None:
    """Hand the heap's free memory back to the system (malloc_trim). The tiles' tensors are
    freed and allocated again all the time, and glibc keeps what was freed: at 2048x1536 the
    RSS after the targets was 0.87 GiB without it, 0.45 GiB with it."""
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)
