"""The ``ray`` executor: every job a Ray task, on a local cluster or a running one.

Done the way Ray's documentation describes: each task declares the resources it uses
(``num_cpus`` = its torch threads, ``num_gpus=1`` when it runs on a GPU) and sets torch's thread
count to match; the decoded input images go into the object store once (``ray.put``) and every
task that reads one gets the same object; a painting's style targets are computed once per
worker process and reused by its later jobs (``losses.style_statistics``); results come back
as they finish (``ray.wait``); tasks whose worker process dies are retried (``max_retries``);
cancelling (Ctrl-C) calls ``ray.cancel`` on what is still running. The worker writes its own outputs, atomically, so a
cluster of several machines needs the output folder on a file system every node mounts at the
same path (the inputs travel in the object store).

A task, not an actor: a worker process keeps its network between tasks anyway (the backbone is
memoised per process) and the weights load from the cache in milliseconds, so an actor holding
the network would save nothing measurable (see benchmarks/batch.py).
"""
from __future__ import annotations

import os
import time
from typing import Callable, Iterable, Iterator, Optional

from .. import sources
from ..errors import UserError
from . import base as executors
from .base import Finished, Work

CANCEL_WAIT_S = 30.0      # how long cancelled tasks get to end before the driver leaves


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(executors.RAY_INSTALL) from None
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT head that does not answer is one line now (Ray itself would retry for
    minutes); 'auto' and ray:// addresses are left to Ray."""
    import socket
    host, sep, port = address.rpartition(":")
    if address == "auto" or "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise UserError(f"option --ray-address: no Ray head answers at {address} "
                        f"({e.strerror or e}); start one there with 'ray start --head'") from None


class RayExecutor:
    name = "ray"

    def __init__(self, address: Optional[str] = None, threads: Optional[int] = None,
                 start: bool = True):
        self.ray = import_ray()
        self.address = address
        self.threads = executors.check_threads(threads) or 1
        self.connected_here = False     # this executor called ray.init (so it shuts down)
        self.startup_s = 0.0
        self._remote = None
        if start:
            self.start()

    # ------------------------------------------------------------------ the cluster
    def start(self):
        """Connect to the cluster (``address``), or start a local one on this machine; reuse
        the connection this process already has."""
        ray = self.ray
        t0 = time.perf_counter()
        if not ray.is_initialized():
            import logging
            kw = dict(include_dashboard=False, log_to_driver=False,
                      logging_level=logging.ERROR, configure_logging=True)
            if self.address is not None:
                _check_reachable(self.address)
            try:
                if self.address is None:
                    ray.init(**kw)
                else:
                    ray.init(address=self.address, **kw)
                self.connected_here = True
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = self.address or "a local cluster"
                raise UserError(f"option --ray-address: cannot connect to {where}: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__} "
                                "(start one with 'ray start --head')") from None
        self.startup_s = time.perf_counter() - t0
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < self.threads:
            raise UserError(f"option --threads: each job asks for {self.threads} CPUs, but the "
                            f"Ray cluster has {cpus:g}")
        self._remote = ray.remote(max_retries=executors.MAX_RETRIES,
                                  retry_exceptions=False)(executors.run_request)
        return self

    def close(self):
        """Leave the cluster this executor connected to (a local one it started stops); a
        connection the process had before is left alone."""
        if self.connected_here and self.ray.is_initialized():
            self.ray.shutdown()
        self.connected_here = False

    def cpus(self) -> float:
        return self.ray.cluster_resources().get("CPU", 0)

    # ------------------------------------------------------------------ jobs
    def _gpus(self, job) -> float:
        dev = str(job.cfg.device)
        if dev == "cpu" or dev == "mps":
            return 0
        return 1 if self.ray.cluster_resources().get("GPU", 0) >= 1 else 0

    def _shared(self, work: Work, store: dict):
        """(keys, object refs) of the decoded images ``work`` reads, each put in the object
        store once for all jobs (keyed by absolute path and the size it was decoded at)."""
        job = work.job
        style_side = max(1, round(job.cfg.size * job.cfg.style_scale))
        spec, loaded = job.spec, job.loaded
        pairs = [(spec.content, job.cfg.size, loaded.content)]
        pairs += list(zip(spec.styles, [style_side] * len(spec.styles), loaded.styles))
        pairs.append((spec.init, job.cfg.size, loaded.init))
        keys, refs = [], []
        for source, side, image in pairs:
            if image is None or not sources.is_path(source):
                continue
            key = (os.path.abspath(source), side)
            if key not in store:
                store[key] = self.ray.put(image)
            keys.append(key)
            refs.append(store[key])
        return keys, refs

    def submit(self, works: list, store: Optional[dict] = None) -> dict:
        """Submit every job; returns {object ref: (work, submit time)}."""
        store = {} if store is None else store
        pending = {}
        for work in works:
            if hasattr(work.job, "call"):          # a job that is a function call (a clip)
                fn, args = work.job.call(self.threads)
                ref = self.ray.remote(max_retries=executors.MAX_RETRIES, retry_exceptions=False)(
                    fn).options(num_cpus=self.threads, num_gpus=self._gpus(work.job),
                                name=f"impasto:{getattr(work.job, 'name', 'clip')}").remote(*args)
                pending[ref] = (work, time.perf_counter())
                continue
            keys, refs = self._shared(work, store)
            request = executors.absolute_request(work.request)
            ref = self._remote.options(num_cpus=self.threads, num_gpus=self._gpus(work.job),
                                       name=f"impasto:{os.path.basename(request.output or 'job')}"
                                       ).remote(request, self.threads, keys, *refs)
            pending[ref] = (work, time.perf_counter())
        return pending

    def _finished(self, ref, work, t_sub) -> Finished:
        ray = self.ray
        wall = time.perf_counter() - t_sub
        try:
            out = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return Finished(work, "cancelled", wall=wall, threads=self.threads, node="")
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.RaySystemError) as e:
            return Finished(work, "failed", error=f"its Ray worker died {executors.MAX_RETRIES + 1} "
                            f"times ({type(e).__name__})", wall=wall, threads=self.threads,
                            node="")
        except ray.exceptions.RayTaskError as e:     # a bug, not a user error: say which
            cause = getattr(e, "cause", None) or e
            return Finished(work, "failed", error=f"{type(cause).__name__}: "
                            f"{str(cause).strip().splitlines()[-1] if str(cause) else ''}",
                            wall=wall, threads=self.threads, node="")
        return executors.from_summary(work, out, wall)

    def run(self, works: Iterable[Work], *, cancel=None, events: Optional[Callable] = None,
            on_start: Optional[Callable] = None) -> Iterator[Finished]:
        """Submit every job at once and yield each result as it finishes (``ray.wait``).
        ``events`` is not used: a job's steps stay in its worker. When ``cancel`` is set, or on
        KeyboardInterrupt, the tasks still running are cancelled and reported as such."""
        ray = self.ray
        works = list(works)
        if not works:
            return
        pending = self.submit(works)
        try:
            while pending:
                if cancel is not None and cancel.is_set():
                    yield from self._cancel(pending)
                    return
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.25)
                for ref in ready:
                    work, t_sub = pending.pop(ref)
                    yield self._finished(ref, work, t_sub)
        except KeyboardInterrupt:
            list(self._cancel(pending))
            raise
        except GeneratorExit:            # the caller stopped reading: nothing may run on
            list(self._cancel(pending))
            raise

    def ordered(self, fn: Callable, items: Iterable, window: Optional[int] = None) -> Iterator:
        """``fn(*item)`` for every item, each a one-CPU task, at most ``window`` (default: twice
        the cluster's CPUs) in flight, the results in the order of ``items`` (video: the optical
        flow of every frame pair, computed ahead of the frame that needs it). An object
        reference in an item is resolved before ``fn`` runs, so a frame put once serves two
        pairs."""
        from collections import deque
        ray = self.ray
        remote = ray.remote(num_cpus=1, max_retries=executors.MAX_RETRIES)(fn)
        window = window or max(2, int(2 * self.cpus()))
        items, queue = iter(items), deque()
        try:
            while True:
                while len(queue) < window:
                    item = next(items, None)
                    if item is None:
                        break
                    queue.append(remote.remote(*item))
                if not queue:
                    return
                yield ray.get(queue.popleft())
        finally:
            for ref in queue:
                ray.cancel(ref, force=True)

    def put(self, value):
        return self.ray.put(value)

    def _cancel(self, pending: dict) -> Iterator[Finished]:
        """Cancel every pending task (a running one gets KeyboardInterrupt and writes nothing)
        and wait for them to end; yields what each became (some finish before the cancel)."""
        ray = self.ray
        for ref in pending:
            try:
                ray.cancel(ref, force=False)
            except Exception:          # already finished
                pass
        deadline = time.perf_counter() + CANCEL_WAIT_S
        while pending and time.perf_counter() < deadline:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
            for ref in ready:
                work, t_sub = pending.pop(ref)
                yield self._finished(ref, work, t_sub)
        for ref in list(pending):
            ray.cancel(ref, force=True)
            work, t_sub = pending.pop(ref)
            yield Finished(work, "cancelled", wall=time.perf_counter() - t_sub,
                           threads=self.threads, node="")
