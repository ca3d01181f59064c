"""The executor options every multi-run command shares (``--executor``, ``--ray-address``,
``--threads``), defined once, and the progress line over jobs."""
from __future__ import annotations

import sys
import time

from ..executors import EXECUTORS
from .progress import duration


def add_executor_options(parser) -> None:
    """``--executor``, ``--ray-address`` and ``--threads`` in their own group."""
    g = parser.add_argument_group("executor (where the runs go)")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: one run after another in this process (default); ray: every "
                   "run a Ray task, spread over the cores of this machine or a Ray cluster "
                   "(pip install 'impasto[ray]')")
    g.add_argument("--ray-address", metavar="ADDRESS", default=None,
                   help="with --executor ray: join a running cluster: 'auto' (the one "
                   "'ray start' runs on this machine) or HOST:PORT of its head; without it Ray "
                   "starts a local cluster on this machine")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads (and, on Ray, CPUs) per run (default: all cores locally, "
                   "1 per task on Ray). Runs with the same --threads give the same image bit "
                   "for bit on the CPU on either executor")


def executor_from_args(args):
    """The executor the options ask for, not yet started (Ray's presence is checked now: a
    missing 'impasto[ray]' is one line before any work)."""
    from .. import executors
    return executors.make(args.executor, address=args.ray_address, threads=args.threads,
                          start=False)


class JobsProgress:
    """One line per finished run and, on a terminal, a bar over the runs: how many are done,
    failed, and the time left at the rate so far."""

    def __init__(self, kind: str, total: int, stream=None, quiet=False):
        stream = stream or sys.stderr
        self.kind, self.total, self.stream, self.quiet = kind, total, stream, quiet
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.done = self.failed = 0
        self.start = time.perf_counter()

    def started(self, pending: int, where: str):
        if not self.quiet:
            print(f"impasto {self.kind}: {pending} run{'s' if pending != 1 else ''} on {where}",
                  file=self.stream, flush=True)

    def __call__(self, name: str, status: str, detail: str = ""):
        self.done += 1
        self.failed += status == "failed"
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        line = f"impasto {self.kind}: [{self.done}/{self.total}] {name}: {status}" + \
            (f" ({detail})" if detail else "")
        if self.tty:
            filled = int(24 * self.done / max(1, self.total))
            bar = f"[{'#' * filled}{'-' * (24 - filled)}] {self.done}/{self.total} runs" + \
                (f", {self.failed} failed" if self.failed else "") + f", eta {duration(eta)}"
            self.stream.write("\r\033[K" + line + "\n" + bar)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.tty and not self.quiet and self.done:
            self.stream.write("\n")
            self.stream.flush()


def detail(cell) -> str:
    """What a finished cell's line says: its loss and seconds, or why it failed."""
    if cell.error:
        return cell.error
    res = (cell.record or {}).get("result") or {}
    secs = ((cell.record or {}).get("timings") or {}).get("total_s")
    parts = []
    if res.get("loss") is not None:
        parts.append(f"loss {res['loss']:.4g}")
    if secs is not None:
        parts.append(f"{secs:.1f} s")
    return ", ".join(parts)
