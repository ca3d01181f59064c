"""What the command line shows while it works: the plan line, a progress bar over steps, and
one over frames for video. They read the run API's events; the core never prints."""
from __future__ import annotations

import math
import sys
import time

from ..budget import Eta


class Progress:
    """A progress bar on stderr: step, loss terms, rate and the ETA of ``budget.Eta`` (the
    plan's from the first step, corrected by the steps timed); a line per 10% when not a
    terminal."""

    def __init__(self, stream=None, quiet=False):
        stream = stream or sys.stderr       # the stderr of now, not of import time
        self.stream, self.quiet = stream, quiet
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last_print = -1.0
        self.width = 24
        self.clock = Eta([])

    def set_schedule(self, schedule, step_seconds=None):
        self.clock = Eta(schedule, step_seconds)

    def observe(self, s):
        self.clock.observe(s.step, s.elapsed, getattr(s, "scale", 0))

    def eta(self, s):
        return self.clock.left(s.step, s.total_steps)

    def __call__(self, s):
        if self.quiet:
            return
        self.observe(s)
        frac = s.step / max(1, s.total_steps)
        rate = s.step / s.elapsed if s.elapsed > 0 else 0.0
        eta = self.eta(s)
        terms = " ".join(f"{k} {v:.4g}" for k, v in s.terms.items())
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        line = (f"step {s.step}/{s.total_steps} [{bar}] loss {s.loss:.4g} ({terms}) "
                f"{rate:.2f} step/s eta {'?' if eta is None else duration(eta)}")
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
            self.stream.flush()
        else:
            tick = math.floor(frac * 10)
            if tick > self.last_print or s.step == s.total_steps:
                self.last_print = tick
                self.stream.write(line + "\n")
                self.stream.flush()

    def close(self):
        if self.tty and not self.quiet:
            self.stream.write("\n")


def duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _reused(plan) -> str:
    """Which scales keep their freed memory (see ``allocator``), for the plan line."""
    sides = [side for (side, _), r in zip(plan.schedule, plan.reuse or []) if r]
    if not sides:
        return ""
    if len(sides) == len(plan.schedule):
        return ", freed memory reused"
    return ", freed memory reused at " + "/".join(map(str, sides)) + "px"


def _and(names) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def print_plan(plan, show_reads=False, stream=None):
    """The line before the first step (a PlanEvent): the output size, the scales, the estimated
    peak memory and, for large runs, time; with ``show_reads`` the files the run reads (a
    record's paths, resolved relative to the record)."""
    stream = stream or sys.stderr
    h, w = plan.output_hw
    tiles = plan.tiles or [None] * len(plan.schedule)
    kept = plan.kept_from or [None] * len(plan.schedule)
    tails = plan.compact_tails or [[]] * len(plan.schedule)
    maps = plan.tail_maps or [[]] * len(plan.schedule)
    scales = " -> ".join(f"{side}px x{n}" + (f" (tiles of {t}px" + (
        f", {k} and deeper not recomputed" if k else "") + (
        f", {_and(c)} kept as masks" if c else "") + (
        f", {_and(m)} as maps" if m else "") + ")" if t else "")
        for (side, n), t, k, c, m in zip(plan.schedule, tiles, kept, tails, maps))
    line = (f"impasto: {w}x{h} output, scales {scales}, {plan.precision} on {plan.device}; "
            f"estimated peak memory {plan.peak_bytes / 2**30:.1f} GiB")
    if any(tiles) or (plan.budget_bytes and plan.history and plan.history < 100):
        line += (f" within the {plan.budget_bytes / 2**30:.1f} GiB budget (L-BFGS history "
                 f"{plan.history}" + _reused(plan) + ")")
    if plan.seconds:
        line += f", time {duration(plan.seconds)}"
    if len(plan.schedule) > 1 and plan.schedule[-1][1] == 0:
        line += ("; the budget affords no steps at full size: the last scale's picture is "
                 "enlarged")
    if plan.deep_style_scale:
        line += (f"; the deep style layers' painting enlarged {plan.deep_style_scale:g}x, what "
                 "the time budget affords")
    free = plan.available_bytes
    if free and plan.peak_bytes > free:
        line += (f" - more than the {free / 2**30:.1f} GiB free: it may run out of memory; "
                 "use a smaller --size")
    print(line, file=stream, flush=True)
    if show_reads and plan.reads:
        print("impasto: reading " + ", ".join(f"{role} {path}" for role, path in plan.reads),
              file=stream, flush=True)


class FrameProgress:
    """Frame i/N and step j/M with an ETA over the whole clip; on a terminal one updating line,
    otherwise one line per finished frame."""

    def __init__(self, count, stream=None, quiet=False):
        stream = stream or sys.stderr
        self.count, self.stream, self.quiet = count, stream, quiet
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.start = time.perf_counter()
        self.computed = 0          # later frames computed in this run (not resumed)
        self.computed_s = 0.0
        self.first_s = None        # the first frame (the full budget) is timed apart
        self.remaining = count

    def eta(self):
        if not self.computed and self.first_s is None:
            return ""
        per = self.computed_s / self.computed if self.computed else self.first_s
        return f" eta {duration(per * self.remaining)}"

    def step(self, i, s):
        if self.quiet or not self.tty:
            return
        frac = s.step / max(1, s.total_steps)
        bar = "#" * int(frac * 16) + "-" * (16 - int(frac * 16))
        self.stream.write(f"\rframe {i + 1}/{self.count} step {s.step}/{s.total_steps} [{bar}] "
                          f"loss {s.loss:.4g}{self.eta()}\033[K")
        self.stream.flush()

    def frame(self, f):
        self.remaining -= 1
        if not f.resumed and f.index == 0:
            self.first_s = f.seconds
        elif not f.resumed:
            self.computed += 1
            self.computed_s += f.seconds
        if self.quiet:
            return
        err = "" if f.temporal_error is None else f" temporal error {f.temporal_error:.5f}"
        if f.resumed:
            what = "resumed (finished earlier)"
        else:
            o = f.result.outcome
            what = f"{o.steps} steps, loss {o.loss:.4g}, {f.seconds:.1f} s"
        line = f"frame {f.index + 1}/{self.count}: {what}{err}{self.eta()}"
        self.stream.write(("\r" + line + "\033[K\n") if self.tty else line + "\n")
        self.stream.flush()
