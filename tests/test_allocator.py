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


def faults_to_fill(nbytes: int) -> int:
    """Minor page faults of allocating and writing one tensor of ``nbytes``, then freeing it."""
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(nbytes // 4)
    t.fill_(1.0)
    del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_reusing_freed_memory_serves_large_blocks_again_without_page_faults():
    """Outside, a 64 MiB block is mapped on its own and unmapped when freed: writing the next
    one faults in every page again (16k of them). Within, it comes back from the heap."""
    n = 64 * 2**20
    faults_to_fill(n)
    outside = faults_to_fill(n)
    assert outside > 0.5 * n / 4096
    with allocator.reusing_freed_memory():
        faults_to_fill(n), faults_to_fill(n)     # the heap grows
        inside = [faults_to_fill(n) for _ in range(3)]
    assert max(inside) < 0.1 * outside
    assert faults_to_fill(n) > 0.5 * n / 4096   # and back to mapping them after


def test_reuse_nests_and_off_does_nothing():
    n = 64 * 2**20
    with allocator.reusing_freed_memory():
        with allocator.reusing_freed_memory():
            faults_to_fill(n), faults_to_fill(n)
        assert faults_to_fill(n) < 0.1 * n / 4096    # the outer one still reuses
    with allocator.reusing_freed_memory(False):
        faults_to_fill(n)
        assert faults_to_fill(n) > 0.5 * n / 4096


def test_release_memory_keeps_the_heap_while_a_run_reuses_it():
    n = 64 * 2**20
    with allocator.reusing_freed_memory():
        faults_to_fill(n), faults_to_fill(n)
        allocator.release_memory()               # what a tiled evaluation calls at its end
        assert faults_to_fill(n) < 0.1 * n / 4096
