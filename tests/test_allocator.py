"""The C heap under CPU tensors: what is freed can be handed back to the system."""
from __future__ import annotations

import pytest
import torch

from impasto import allocator
from impasto.layout import zeros_as

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


MIB = 2**20
PASS = (48, 48, 24, 24, 12, 12, 6)     # MiB: a network pass's maps, alive together, then freed
PAGES = sum(PASS) * MIB / 4096


def faults_of_a_pass(blocks=PASS) -> int:
    """Minor page faults of allocating and writing blocks the way a pass over a network does
    (all above malloc's 32 MiB mmap threshold or near it), then freeing them all."""
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    maps = [torch.empty(mb * MIB // 4).fill_(1.0) for mb in blocks]
    del maps
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


# Page faults depend on the heap's state before the count: what earlier tests in the same
# process left in it decides whether a freed block is reused. So each check below runs in a
# fresh interpreter of its own (``in_fresh_process``).

REUSED, MAPPED = 0.3, 0.4        # of a pass's pages faulted in: reused below, mapped above


def check_reuse_serves_a_pass_again_without_page_faults():
    faults_of_a_pass()
    assert faults_of_a_pass() > MAPPED * PAGES
    with allocator.reusing_freed_memory():
        faults_of_a_pass(), faults_of_a_pass()          # the heap grows
        assert max(faults_of_a_pass() for _ in range(3)) < REUSED * PAGES
        inside = rss_bytes()
    assert rss_bytes() < inside - 0.5 * sum(PASS) * MIB   # the heap handed back on the way out


def check_reuse_nests_and_off_does_nothing():
    with allocator.reusing_freed_memory(False):
        faults_of_a_pass()
        assert faults_of_a_pass() > MAPPED * PAGES
    with allocator.reusing_freed_memory():
        with allocator.reusing_freed_memory():
            faults_of_a_pass(), faults_of_a_pass()
        assert faults_of_a_pass() < REUSED * PAGES      # the outer one still reuses


def check_release_memory_keeps_the_heap_while_a_run_reuses_it():
    with allocator.reusing_freed_memory():
        faults_of_a_pass(), faults_of_a_pass()
        allocator.release_memory()                      # what a tiled evaluation calls at its end
        assert faults_of_a_pass() < REUSED * PAGES


LARGE = (160, 128, 96, 72)     # MiB: over glibc's dynamic thresholds: mapped unless mmap is off


def faults_of_large_blocks() -> int:
    return faults_of_a_pass(LARGE)


LARGE_PAGES = sum(LARGE) * MIB / 4096


def check_tiled_steps_reuse_the_heap_within_the_tiles_passes_only():
    with allocator.tile_heap():                         # outside such steps: nothing
        faults_of_large_blocks()
        assert faults_of_large_blocks() > 0.8 * LARGE_PAGES
    with allocator.reusing_freed_memory(tiled=True):
        faults_of_large_blocks()
        assert faults_of_large_blocks() > 0.8 * LARGE_PAGES     # before the passes: mapped
        for evaluation in range(3):
            with allocator.tile_heap():
                if evaluation == 0:
                    for _ in range(3):                  # the heap grows
                        faults_of_large_blocks()
                # from the second evaluation on, the last one's heap serves the passes
                assert max(faults_of_large_blocks() for _ in range(2)) < 0.3 * LARGE_PAGES
                allocator.release_memory()              # what the evaluation's end calls
                assert faults_of_large_blocks() < 0.3 * LARGE_PAGES
                whole = zeros_as(torch.empty(1), (LARGE[0] * MIB // 4,))
                assert in_heap(whole) and not whole.any()   # a pass's whole map: the heap's
                del whole
                inside = rss_bytes()
            assert rss_bytes() > inside - 0.2 * sum(LARGE) * MIB   # kept for the next one
            # what outlives the passes is mapped apart (the L-BFGS vectors)
            vectors = [zeros_as(torch.empty(1), (mb * MIB // 4,)).fill_(1.0) for mb in LARGE]
            assert all(not in_heap(v) for v in vectors)
            del vectors
        held = rss_bytes()
    assert rss_bytes() < held - 0.5 * sum(LARGE) * MIB  # handed back after the steps
    assert faults_of_large_blocks() > 0.8 * LARGE_PAGES  # and mapped again
    with allocator.reusing_freed_memory(tiled=True, between=False):    # torch.optim's L-BFGS
        with allocator.tile_heap():
            for _ in range(3):
                faults_of_large_blocks()
            inside = rss_bytes()
        assert rss_bytes() < inside - 0.5 * sum(LARGE) * MIB  # handed back after each
    with allocator.reusing_freed_memory(tiled=True):
        with allocator.reusing_freed_memory():          # an untiled run beside it reuses
            faults_of_large_blocks(), faults_of_large_blocks()
            with allocator.tile_heap():
                assert faults_of_large_blocks() < 0.3 * LARGE_PAGES
            assert faults_of_large_blocks() < 0.3 * LARGE_PAGES  # still, after the tiles


def in_heap(t: torch.Tensor) -> bool:
    """Whether ``t``'s data lies in malloc's main heap (``[heap]`` in /proc/self/maps)."""
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith("[heap]"):
                lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
                if lo <= t.data_ptr() < hi:
                    return True
    return False


def check_lbfgs_keeps_its_vectors_out_of_the_tile_heap():
    from impasto.optimizers import LBFGS
    x = torch.rand(4 * MIB).requires_grad_(True)     # 16 MiB: an image's vectors

    def closure():      # a tiled evaluation: its passes leave holes in the kept heap
        with allocator.tile_heap():
            faults_of_large_blocks()
        loss = (x - 0.5).pow(2).sum()
        loss.backward()
        return loss
    with allocator.reusing_freed_memory(tiled=True):
        opt = LBFGS(x, history_size=3)
        for _ in range(5):
            opt.zero_grad()
            opt.step(closure)
        vectors = [*opt.s, *opt.y, opt.d, opt.prev_g]
        assert len(vectors) == 8 and not any(in_heap(v) for v in vectors)


def faults_of_a_pass_in_a_thread(scale: int = 2) -> int:
    """The same pass in a thread of its own (as torch's worker threads allocate), its blocks
    ``scale`` times larger (above the 64 MiB heaps glibc gives other threads)."""
    import threading
    out = []
    def work():
        import resource
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        maps = [torch.empty(scale * mb * MIB // 4).fill_(1.0) for mb in PASS]
        del maps
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    t = threading.Thread(target=work)
    t.start()
    t.join()
    return out[0]


def check_other_threads_reuse_only_from_one_arena():
    with allocator.reusing_freed_memory():
        faults_of_a_pass_in_a_thread(), faults_of_a_pass_in_a_thread()
        assert faults_of_a_pass_in_a_thread() > MAPPED * 2 * PAGES   # mapped on their own


def check_one_arena_lets_other_threads_reuse():
    allocator.one_arena()
    with allocator.reusing_freed_memory():
        faults_of_a_pass_in_a_thread(), faults_of_a_pass_in_a_thread()
        assert faults_of_a_pass_in_a_thread() < REUSED * 2 * PAGES


def in_fresh_process(check) -> None:
    import os
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    code = f"import test_allocator as t; t.torch.set_num_threads(1); t.{check.__name__}()"
    done = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(__file__),
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_reusing_freed_memory_serves_a_pass_again_without_page_faults():
    """Outside, each large block is mapped on its own and unmapped when freed: the next pass
    faults in most pages again. Within, after one pass the blocks come back from the heap.
    (Same-size blocks freed one at a time do not: torch's posix_memalign asks glibc for a
    little more than the block, so a lone freed block may not fit the next request.)"""
    in_fresh_process(check_reuse_serves_a_pass_again_without_page_faults)


def test_reuse_nests_and_off_does_nothing():
    in_fresh_process(check_reuse_nests_and_off_does_nothing)


def test_release_memory_keeps_the_heap_while_a_run_reuses_it():
    in_fresh_process(check_release_memory_keeps_the_heap_while_a_run_reuses_it)


def test_threads_blocks_are_reused_once_every_thread_shares_one_heap():
    """Without one_arena a new thread's large blocks are mapped on their own even within
    reusing_freed_memory; with it they come back from the heap like the main thread's."""
    in_fresh_process(check_other_threads_reuse_only_from_one_arena)
    in_fresh_process(check_one_arena_lets_other_threads_reuse)


def test_a_tiled_scales_steps_reuse_the_heap_for_the_tiles_only():
    """With ``tiled``, large blocks are mapped on their own before the passes, but within
    ``tile_heap`` (a tiled evaluation's passes) they come from the heap, which is kept from
    one evaluation to the next (what outlives the passes mapped apart) and handed back when
    the steps end."""
    in_fresh_process(check_tiled_steps_reuse_the_heap_within_the_tiles_passes_only)


def test_lbfgs_keeps_its_vectors_out_of_the_tile_heap():
    """The L-BFGS history outlives a tiled evaluation's passes: it is mapped apart, so it does
    not sit in the holes the next passes reuse."""
    in_fresh_process(check_lbfgs_keeps_its_vectors_out_of_the_tile_heap)


def test_mapped_whole_maps_go_back_to_the_system_when_freed():
    """``layout.zeros_as`` puts a large map in pages of its own: zeros, in the layout asked
    for, and handed back when freed even while the heap keeps what is freed into it."""
    like = torch.zeros(1, 64, 4, 4).contiguous(memory_format=torch.channels_last)
    with allocator.reusing_freed_memory():
        m = zeros_as(like, (1, 64, 512, 512))              # 64 MiB
        assert m.is_contiguous(memory_format=torch.channels_last) and m.dtype == torch.float32
        assert float(m.abs().sum()) == 0.0
        m.fill_(1.0)
        held = rss_bytes()
        del m
        assert rss_bytes() < held - 48 * MIB
