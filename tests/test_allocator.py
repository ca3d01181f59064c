"""The C heap under CPU tensors: what is freed can be handed back to the system."""
from __future__ import annotations

import pytest
import torch

from impasto import allocator

pytestmark = pytest.mark.skipif(allocator._libc() is None, reason="needs glibc")


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def test_release_memory_hands_freed_heap_blocks_back():
    """Many small tensors (below malloc's mmap threshold: served from its heap) freed under
    one still alive stay in the process, until release_memory hands them back."""
    blocks = [torch.ones(64 * 1024) for _ in range(2000)]     # 2000 x 256 KiB = 500 MiB
    pin = torch.ones(64 * 1024)                               # above them: no trim on free
    held = rss_bytes()
    del blocks
    assert rss_bytes() > held - 100 * 2**20                   # freed, but kept
    allocator.release_memory()
    assert rss_bytes() < held - 300 * 2**20                   # handed back
    del pin
