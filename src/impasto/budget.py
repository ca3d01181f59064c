"""A time budget (``--time 60s``): the plan of scales and steps that fits it on this machine.

Before the first step the run measures what this machine does per second on its own network
(``estimate.measure_throughput``: a forward and backward pass at 192 px), so the cost of a
step at every scale is known. The steps are split over the scales in the usual proportion
(each coarser scale 1.5x the steps of the next finer one) and scaled so that their cost fills
the time left. The plan is made again before every scale with the time then left, so a scale
that ends early (``--tol``) or runs slower than measured moves its time to the scales after it;
and the last scale stops at the deadline whatever the plan said.
"""
from __future__ import annotations

import os
import re
import time

from .errors import UserError

# What a step costs beyond the network's own forward and backward pass (Gram matrices, losses,
# L-BFGS, the host sync), and the first step of a scale beyond that (kernels for a new size):
# measured here on VGG19 at 128-512 px, fp32 (a step took 1.1-1.25x the network pass).
STEP_OVERHEAD = 1.2
# What a step costs with each style loss against gram, measured at 512 px on a 2-core Zen 3
# (fp32, median of --time 60s runs on two pairs): gram 3.07 s, w2 3.31 s, sw 8.4 s (sorting
# the projections of the output and of the painting at every step). At 128 px sw is 2x gram.
LOSS_COST = {"gram": 1.0, "w2": 1.08, "sw": 2.7}
WARM_UP_STEPS = 2.0
RESERVE = 0.04          # of the budget, kept for writing the image and the record
MIN_FINEST_STEPS = 4    # a budget that affords fewer at the finest scale skips it
DEEP_SETUP_SHARE = 0.2  # of the budget, at most, for the deep style layers' enlarged paintings


def parse_duration(text) -> float | None:
    """'60s', '2m', '1m30s', '1h', '90' (seconds) -> seconds; None if not a duration."""
    t = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        value = float(t)
        return value if value > 0 else None
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?", t)
    if not m or not any(m.groups()):
        return None
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    value = 3600 * h + 60 * mi + s
    return value if value > 0 else None


def seconds_per_step(step_flops: float, throughput: float) -> float:
    return STEP_OVERHEAD * step_flops / throughput


def deep_scale(asked: float, setup_at, seconds: float) -> float:
    """The ``--deep-style-scale`` a budget of ``seconds`` affords: ``asked``, or less in steps
    of 0.5 (down to 1, off) until the forward passes of the enlarged paintings
    (``setup_at(scale)``: seconds per scale) take at most DEEP_SETUP_SHARE of the budget. A
    short budget buys steps with that time instead (3x costs about 15 s at 512 px on a 2-core
    CPU, half of a 30 s budget)."""
    scale = asked
    while scale > 1 and sum(setup_at(scale)) > DEEP_SETUP_SHARE * seconds:
        scale = max(1.0, scale - 0.5)
    return scale


def plan_steps(costs: list[float], seconds: float, ceiling: int, setup=()) -> list[int]:
    """Steps per scale (coarsest first) whose cost fills ``seconds``: ``costs`` are the
    seconds of one step at each scale, ``setup`` (optional) what each scale costs before its
    first step beyond the warm-up (the deep layers' larger painting). The usual 1.5:1
    proportion between neighbouring scales, at most ``ceiling`` steps in all.

    When the time (not the ceiling) leaves the finest scale fewer than MIN_FINEST_STEPS steps
    beyond its warm-up, it gets none, and the coarser scales turn that time into style; the
    run then enlarges the last scale's picture to the full size. A lone first step there (with
    its targets, 6-8 s of a 15 s budget at 512 px on a 2-core CPU) barely moves the picture;
    and two or three steps (30 s budgets at 512 px there: 2-4 steps) leave it sharp but covered
    in a fine ripple, its palette still the photo's, where the 256 px picture they started
    from, given that time instead (45-54 steps in all, not 11-14), has the painting's deep
    colours and clean strokes, only softer. Otherwise the finest gets at least one.
    """
    n = len(costs)
    setup = list(setup) or [0.0] * n
    weights = [1.5 ** (n - 1 - k) for k in range(n)]
    share = [w / sum(weights) for w in weights]
    warm = sum(WARM_UP_STEPS * c for c in costs) + sum(setup)
    per_step = sum(s * c for s, c in zip(share, costs))
    total = max(0.0, seconds - warm) / per_step if per_step > 0 else ceiling
    total = min(ceiling, int(total))
    counts = [int(total * s) for s in share]
    counts[0] += total - sum(counts)          # what rounding left over, where steps are cheap
    if n > 1 and total < ceiling and counts[-1] < MIN_FINEST_STEPS:
        return plan_steps(costs[:-1], seconds, ceiling, setup[:-1]) + [0]
    counts[-1] = max(1, counts[-1])
    return counts


def plan_seconds(costs: list[float], counts: list[int], setup=()) -> float:
    """Seconds the steps ``counts`` take at ``costs`` per step, each scale's first step (new
    kernels, new targets) counted as WARM_UP_STEPS steps, plus its ``setup`` (optional)."""
    setup = list(setup) or [0.0] * len(costs)
    return sum(c * (n + WARM_UP_STEPS - 1) + s for c, n, s in zip(costs, counts, setup) if n > 0)


def corrected(costs: list[float], k: int, history: list) -> list[float]:
    """``costs`` scaled by how much the steady steps of scale ``k`` (all but its first, from
    its history's times) really cost against ``costs[k]``."""
    times = [b["time"] - a["time"] for a, b in zip(history, history[1:])]
    if len(times) < 2 or costs[k] <= 0:
        return costs
    factor = min(4.0, max(0.25, sum(times[1:]) / len(times[1:]) / costs[k]))
    return [c * factor for c in costs]


def check_fits(seconds_left: float, finest_cost: float, budget: float) -> None:
    """UserError when not even the first step at full size (its targets and warm-up
    included) fits in what is left of the budget."""
    if seconds_left < finest_cost:
        left = f"{seconds_left:.1f} s were" if seconds_left > 0 else "nothing was"
        raise UserError(f"option --time: {budget:g} s is too short for this run: the first step "
                        f"at full size takes about {finest_cost:.1f} s on this machine, and {left} "
                        "left after start-up; give more --time or a smaller --size")


def process_start() -> float:
    """When this process started, as a ``time.perf_counter()`` value (a --time budget counts
    the interpreter's and torch's start-up too); now, where /proc cannot say."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return time.perf_counter() - max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter()


class Eta:
    """Seconds left in a run, for every front end's progress display.

    From the first step it is the plan's: ``step_seconds`` (what a step costs at each scale on
    this machine, measured before the run starts) summed over the steps left, each scale's
    first step counted as WARM_UP_STEPS steps (it builds kernels and targets at a new size).
    Once steps after the first of a scale have been timed, the plan is scaled by what they
    really took against what it said. Without planned costs the work left is weighted by the
    schedule's pixels (coarse steps are cheap), and there is no ETA until a steady step has
    been timed."""

    def __init__(self, schedule, step_seconds=None):
        self.planned = bool(step_seconds) and len(step_seconds) == len(schedule)
        self.work, total = [], 0.0     # cumulative work after each step
        for k, (side, n) in enumerate(schedule):
            for i in range(n):
                if self.planned:
                    total += step_seconds[k] * (WARM_UP_STEPS if i == 0 else 1)
                else:
                    total += side * side
                self.work.append(total)
        self.prev = None                # (step, elapsed, scale) of the step before
        self.spent = self.measured = 0.0   # seconds and work of the steady steps

    def _work_of(self, step):
        if 0 < step <= len(self.work):
            return self.work[step - 1] - (self.work[step - 2] if step > 1 else 0)
        return 1

    def observe(self, step: int, elapsed: float, scale: int = 0) -> None:
        """Take the step's time into the rate unless it is the first of its scale."""
        if self.prev is not None and step == self.prev[0] + 1 and scale == self.prev[2]:
            self.spent += elapsed - self.prev[1]
            self.measured += self._work_of(step)
        self.prev = (step, elapsed, scale)

    def left(self, step: int, total_steps: int):
        """Seconds left after ``step``, or None (no plan, nothing steady timed yet)."""
        if self.measured <= 0 and not self.planned:
            return None
        if 0 < step <= len(self.work):
            work = self.work[-1] - self.work[step - 1]
        else:
            work = max(0, total_steps - step)
        return (self.spent / self.measured if self.measured > 0 else 1.0) * work
