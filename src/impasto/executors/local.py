"""The ``local`` executor: one job after another in this process."""
from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator, Optional

from ..errors import UserError
from .base import Finished, Work, check_threads, from_summary, torch_threads


class LocalExecutor:
    """One job after another in this process, as impasto always ran them. ``events(work)``
    gives each job's event sink (a progress bar); the run API's events reach it per step."""
    name = "local"

    def __init__(self, threads: Optional[int] = None):
        import torch
        self.threads = check_threads(threads) or torch.get_num_threads()

    def run(self, works: Iterable[Work], *, cancel=None, events: Optional[Callable] = None,
            on_start: Optional[Callable] = None) -> Iterator[Finished]:
        for work in works:
            if cancel is not None and cancel.is_set():
                return
            if on_start is not None:
                on_start(work)
            if hasattr(work.job, "call"):          # a job that is a function call (a clip)
                fn, args = work.job.call(self.threads)
                yield from_summary(work, fn(*args), 0.0)
                continue
            sink = events(work) if events is not None else None
            t0 = time.perf_counter()
            try:
                with torch_threads(self.threads):
                    done = work.job.run(sink, cancel=cancel)
            except UserError as e:             # a write that failed (disk full, ...)
                yield Finished(work, "failed", error=str(e), threads=self.threads,
                               wall=time.perf_counter() - t0)
                continue
            finally:
                if sink is not None and hasattr(sink, "close"):
                    sink.close()
            wall = time.perf_counter() - t0
            status = "interrupted" if done.interrupted else "ran"
            yield Finished(work, status, done.record, done.result.image, seconds=wall,
                           wall=wall, threads=self.threads)
            if done.interrupted:
                return

    def ordered(self, fn: Callable, items: Iterable, window: Optional[int] = None) -> Iterator:
        """``fn(*item)`` for every item, in order, here, each when it is asked for."""
        for item in items:
            yield fn(*item)

    def put(self, value):
        return value

    def close(self):
        pass


