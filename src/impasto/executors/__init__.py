"""Executors: many runs of the run API (``impasto.api``), one after another in this process
(``local``) or spread over the cores and machines of a Ray cluster (``ray``).

Sweeps, explore, batch and video hand an executor a list of ``Work`` (a checked ``api.Job`` and
the picklable ``api.Request`` it came from) and read ``Finished`` results as they come:

    executor = executors.make("ray", address=None)         # or "local"
    for fin in executor.run(works, cancel=stop):            # in the order they finish
        fin.work.key, fin.status, fin.record, fin.error

Every job runs with an explicit torch thread count (``threads``): float sums split over a
different number of threads round differently, so a job gives the same image bit for bit on
the CPU on every executor when the thread count is the same. ``local`` defaults to torch's own
count (all cores, one job at a time), ``ray`` to one thread per task (one task per core).

On Ray each job is a task that declares the CPUs (and GPU) it uses; the decoded input images are
put in the object store once and shared by every job that reads them; the worker prepares the
request itself (``api.prepare`` on the shared images) and ``Job.run`` writes its image and record
atomically there. A task whose worker process dies is retried; a cancelled run (Ctrl-C) cancels
the tasks still running, which write nothing.
"""
from __future__ import annotations

from typing import Optional

from ..errors import UserError
from .base import EXECUTORS, MAX_RETRIES, RAY_INSTALL, Finished, Work, torch_threads
from .local import LocalExecutor

__all__ = ["EXECUTORS", "MAX_RETRIES", "RAY_INSTALL", "Finished", "LocalExecutor", "Work", "make",
           "torch_threads"]


def make(name: str = "local", *, address: Optional[str] = None, threads: Optional[int] = None,
         start: bool = True):
    """The executor called ``name``; for ``ray``, checks Ray is installed (one line saying how
    to install it otherwise) and, with ``start``, connects: to ``address`` (``auto``: the
    cluster ``ray start`` runs on this machine), or starts a local cluster when None."""
    if name not in EXECUTORS:
        raise UserError(f"option --executor: '{name}' is not one of {', '.join(EXECUTORS)}")
    if name == "local":
        if address is not None:
            raise UserError("option --ray-address: is for --executor ray")
        return LocalExecutor(threads)
    from . import on_ray
    return on_ray.RayExecutor(address=address, threads=threads, start=start)


