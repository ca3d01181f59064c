"""What every executor shares: the unit of work, its result, the thread count, and the
function a Ray worker runs for one job (here so that it never imports Ray)."""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from .. import api
from ..config import INITS
from ..errors import UserError

EXECUTORS = ("local", "ray")
RAY_INSTALL = "--executor ray needs Ray: pip install 'impasto[ray]'"
MAX_RETRIES = 3           # a task is run again this often when its worker process dies


@dataclass
class Work:
    """One run for an executor: ``job`` checked in this process from ``request``. A job with
    a ``call(threads)`` method (a video clip of a batch) is run as the function call it returns,
    ``(fn, args)``, where ``fn`` returns a summary as ``run_request`` does."""
    key: object                       # the caller's handle (a sweep cell, a batch pair)
    request: api.Request              # paths and options only: it travels to Ray workers
    job: api.Job


@dataclass
class Finished:
    """One finished (or failed, interrupted, cancelled) run."""
    work: Work
    status: str                       # ran, interrupted, failed, cancelled
    record: Optional[dict] = None     # the run record it wrote
    image: object = None              # the PIL image (local runs only; else read from disk)
    error: Optional[str] = None
    seconds: float = 0.0              # the job itself, in the process that ran it
    wall: float = 0.0                 # from submission to result, seen from the driver
    threads: int = 1
    node: str = "local"
    pid: int = field(default_factory=os.getpid)


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` for a block, then restored."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def from_summary(work: Work, out: dict, wall: float) -> Finished:
    """The Finished of a job from the summary its process returned (see ``run_request``)."""
    return Finished(work, out["status"], out.get("record"), error=out.get("error"),
                    seconds=out["seconds"], wall=wall or out["seconds"], threads=out["threads"],
                    node=out.get("node", ""), pid=out["pid"])


def check_threads(threads) -> Optional[int]:
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise UserError(f"option --threads: must be a positive whole number, got {threads}")
    return threads


# ----------------------------------------------------------------------------- for workers
def absolute_request(request: api.Request) -> api.Request:
    """``request`` with every file path absolute, so a worker whose working folder is not the
    driver's (another node of a cluster) reads and writes the same files."""
    def ab(p):
        return os.path.abspath(p) if isinstance(p, (str, Path)) else p
    options = dict(request.options)
    if isinstance(options.get("init"), str) and options["init"] not in INITS:
        options["init"] = ab(options["init"])
    if options.get("weights"):
        options["weights"] = ab(options["weights"])
    return replace(request, options=options, content=ab(request.content),
                   styles=[ab(s) for s in request.styles], mask=ab(request.mask),
                   region_styles=[(c, ab(s)) for c, s in request.region_styles],
                   init=ab(request.init), output=ab(request.output),
                   from_record=ab(request.from_record))


def remove_leftovers(output: Optional[str]) -> None:
    """Remove the temporary files a killed earlier attempt of this job left beside its image
    and record (``.NAME.XXXX.part``): only this job writes those names."""
    if output is None:
        return
    from .. import record as records
    out = Path(output)
    for target in (out, records.record_path(out)):
        for tmp in target.parent.glob(f".{target.name}.*.part"):
            with contextlib.suppress(OSError):
                tmp.unlink()


def node() -> str:
    """The Ray node this process runs on ("local" outside Ray)."""
    import sys
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    return "local"


def run_request(request: api.Request, threads: int, keys: list, *images) -> dict:
    """What a worker does with one job: prepare the request on the shared decoded images (no
    input is decoded again), run it with ``threads`` torch threads and write its outputs.
    ``images`` come as separate arguments, so that Ray resolves each object reference. Returns
    a small summary; a user error (a bad file, a failed write) is returned, not
    raised, so it is reported in its row and never retried."""
    t0 = time.perf_counter()
    cache = dict(zip(keys, images))
    out = {"pid": os.getpid(), "threads": threads, "node": node()}
    try:
        remove_leftovers(request.output)
        with torch_threads(threads):
            job = api.prepare(request, check_outputs=False, cache=cache)
            done = job.run(None)
        out.update(status="interrupted" if done.interrupted else "ran", record=done.record)
    except UserError as e:
        out.update(status="failed", error=str(e))
    out["seconds"] = time.perf_counter() - t0
    return out
