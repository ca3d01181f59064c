"""The C heap under torch's CPU tensors (glibc's malloc; elsewhere this does nothing)."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import mmap
import threading

# mallopt's parameters and glibc's defaults: how many blocks malloc may map on their own, and
# how much free memory at the heap's top it keeps rather than hands back
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
KEEP_TOP = 2**31 - 1        # mallopt takes a C int

_lock = threading.Lock()
_reusing = 0                # how many runs in this process keep freed memory
_tiled = 0                  # how many keep it within a tiled evaluation's passes only
_handed_back = 0            # how many of those hand the passes' heap back after each one
_in_tiles = 0               # how many tiled evaluations are in their passes (``tile_heap``)


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None
    except OSError:
        return None


def release_memory() -> None:
    """Hand the heap's free memory back to the system (malloc_trim). The tiles' tensors are
    freed and allocated again all the time, and glibc keeps what was freed: at 2048x1536 the
    RSS after the targets was 0.87 GiB without it, 0.45 GiB with it. Does nothing while a run
    keeps its freed memory (``reusing_freed_memory``)."""
    lib = _libc()
    if lib is not None and not _reusing and not _tiled:
        lib.malloc_trim(0)


@functools.lru_cache(maxsize=1)
def one_arena() -> None:
    """Serve every thread from malloc's main heap (``M_ARENA_MAX`` 1), for the rest of the
    process: call it before torch's worker threads first allocate (a run does, before it
    loads its network). glibc gives other threads heaps of their own, at most 64 MiB each, and
    maps a larger block such a thread asks for on its own whatever ``M_MMAP_MAX`` says, so
    under ``reusing_freed_memory`` the blocks torch's worker threads allocate still came back
    as fresh pages: 590 thousand page faults (2.3 GiB) at every 2048x1536 evaluation, none with
    one heap (50.3 s -> 48.0 s a step on a 2-core Zen 3). A thread that has allocated before
    keeps its own heap. Two threads share one heap's lock for large blocks: no cost measured."""
    lib = _libc()
    if lib is not None:
        lib.mallopt(M_ARENA_MAX, 1)


def _keep_freed(lib, on: bool, trim: bool = True) -> None:
    """Every block from the heap and the heap's top kept (``on``), or glibc's defaults back
    and (with ``trim``) the heap's free memory handed back; without ``trim``, blocks may be
    mapped on their own again but the heap keeps what it holds."""
    if on:
        lib.mallopt(M_MMAP_MAX, 0)
        lib.mallopt(M_TRIM_THRESHOLD, KEEP_TOP)
    else:
        lib.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        if trim:
            lib.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
            lib.malloc_trim(0)


def mapped(nbytes: int) -> mmap.mmap:
    """``nbytes`` of zeros in a mapping of their own, outside malloc's heap, handed back to the
    system when the last tensor on them is freed (``layout.zeros_as``: a tiled evaluation's
    whole maps, which outlive its tiles, unless ``tile_heap`` serves them; the L-BFGS
    vectors)."""
    return mmap.mmap(-1, max(1, nbytes))


def heap_kept() -> bool:
    """Whether a tiled evaluation's passes are served from a kept heap now (``tile_heap``)."""
    return _in_tiles > 0


@contextlib.contextmanager
def tile_heap():
    """Within, while a tiled scale's steps reuse freed memory (``reusing_freed_memory(on,
    tiled=True)``): every block comes from malloc's heap and what is freed stays there, so a
    tile's maps reuse the last tile's pages instead of faulting in fresh ones (glibc maps any
    block over 32 MiB on its own: a 400 px tile's 64-channel maps in float32, every
    first-block map of larger tiles). Measured at 2048x1536 (bf16, 2-core Zen 4, one
    evaluation, block 4's tail early): tiles of 768 px 19.4 s without, 14.5 s with.

    On the way out, blocks may be mapped on their own again, but the heap keeps its pages
    for the next evaluation's passes, until the scale's steps end: handing them back after
    every evaluation cost 5% of a 4096x3072 one (tiles of 708 px) in faulting them in again.
    The passes' whole maps come from the heap too (``layout.zeros_as``; mapped apart they
    were faulted in afresh at every evaluation: 2.5% more, 4% with every tail early). What
    outlives the passes stays out of the heap, so its holes do not grow from step to step:
    the L-BFGS vectors are mapped apart (``optimizers``). Outside such steps (or within an
    untiled scale's reuse) this does nothing."""
    global _in_tiles
    lib = _libc()
    with _lock:
        active = lib is not None and _tiled > 0
        if active:
            if _in_tiles == 0 and _reusing == 0:
                _keep_freed(lib, True)
            _in_tiles += 1
    try:
        yield
    finally:
        if active:
            with _lock:
                _in_tiles -= 1
                if _in_tiles == 0 and _reusing == 0:
                    _keep_freed(lib, False, trim=_handed_back > 0)


@contextlib.contextmanager
def reusing_freed_memory(on: bool = True, tiled: bool = False, between: bool = True):
    """Within: every block torch frees stays in malloc's heap for the next one.

    glibc maps each block over 32 MiB on its own and unmaps it when it is freed, so at every
    step a large image's feature maps come back as fresh pages the kernel faults in and zeroes
    one by one (a 2048x1536 evaluation took 6.7 million page faults). With mmap off
    (``M_MMAP_MAX`` 0) the blocks come from the heap and are reused (and with ``one_arena``,
    the worker threads' blocks too). Measured on a Zen 3 with benchmarks/large.py, s/step of
    the default coarse-to-fine run: 12.4 -> 10.3 s at 1024x768, 63.6 -> 44.7 s at 2048x1536,
    for up to a third more peak memory (the heap keeps its holes); the memory plan counts
    that (``estimate.REUSE_FACTOR``) and only reuses where the budget has room. On the way in
    and out, the heap's free memory is handed back, so what the targets left behind is not
    kept through the steps, nor the steps' heap after them.

    With ``tiled`` (a tiled scale's steps): only within the tiled evaluation's passes
    (``tile_heap``), whose heap is kept from one evaluation to the next and handed back on the
    way out of this; without ``between``, handed back after every evaluation (an optimiser
    whose vectors would land in its holes: ``torch.optim.LBFGS``)."""
    global _reusing, _tiled, _handed_back
    lib = _libc()
    if not on or lib is None:
        yield
        return
    if tiled:
        with _lock:
            _tiled += 1
            _handed_back += not between
        try:
            yield
        finally:
            with _lock:
                _tiled -= 1
                _handed_back -= not between
                if _tiled == 0 and _reusing == 0 and _in_tiles == 0:
                    _keep_freed(lib, False)     # the passes' heap handed back
        return
    with _lock:
        if _reusing == 0:
            lib.malloc_trim(0)
            _keep_freed(lib, True)
        _reusing += 1
    try:
        yield
    finally:
        with _lock:
            _reusing -= 1
            if _reusing == 0:
                _keep_freed(lib, False)
