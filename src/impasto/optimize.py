"""The optimisation loop. It knows nothing of style transfer: it minimises a function of one
image tensor with L-BFGS or Adam, applies the stopping rules, keeps the best image so far and
reports each step to a callback.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from . import optimizers
from .config import Config

_DEFAULTS = Config()   # the defaults live in the config; a Settings() repeats none of them

@dataclass
class Step:
    """What the callback sees after each step."""
    step: int            # 1-based step number
    total_steps: int     # the budget
    loss: float          # total loss at the image the step started from
    terms: dict          # named loss terms at that image
    elapsed: float       # seconds since the loop started
    image: Optional[torch.Tensor] = None  # the current image (do not modify)
    scale: int = 0       # coarse-to-fine: index of the scale, coarsest 0 (set by tasks.run)
    side: int = 0        # and its long side in pixels


@dataclass
class Outcome:
    image: torch.Tensor                 # the best image seen
    loss: float                         # its loss
    steps: int                          # steps taken
    evaluations: int                    # objective evaluations (more than steps with line search)
    stop_reason: str    # budget, converged, no-improvement, non-finite, interrupted, time
    history: list = field(default_factory=list)  # one dict per step: step, time, loss, terms
    terms: dict = field(default_factory=dict)    # the loss terms of the best image
    curvature: float = 0.0   # L-BFGS's last inverse-Hessian scale (y.s / y.y), 0 if none


@dataclass
class Settings:
    """The optimiser's options; each default is the config's."""
    optimizer: str = _DEFAULTS.optimizer
    lr: float = _DEFAULTS.learning_rate
    steps: int = _DEFAULTS.steps
    history_size: int = _DEFAULTS.history_size
    line_search: bool = _DEFAULTS.line_search
    tol: float = _DEFAULTS.tol
    tol_window: int = _DEFAULTS.tol_window
    patience: int = _DEFAULTS.patience

    @classmethod
    def from_config(cls, cfg: Config, steps: int | None = None) -> "Settings":
        return cls(optimizer=cfg.optimizer, lr=cfg.learning_rate,
                   steps=cfg.steps if steps is None else steps, history_size=cfg.history_size,
                   line_search=cfg.line_search, tol=cfg.tol, tol_window=cfg.tol_window,
                   patience=cfg.patience)


def make_optimizer(x: torch.Tensor, s: Settings, h0: float | None = None):
    """The optimiser of ``x``: impasto's own L-BFGS and Adam (see optimizers.py: they spare
    every run the 3-4 s import that ``torch.optim`` costs), ``torch.optim.LBFGS`` for the
    strong-Wolfe line search."""
    if s.optimizer == "lbfgs" and s.line_search:
        return torch.optim.LBFGS([x], lr=s.lr, max_iter=1, history_size=s.history_size,
                                 line_search_fn="strong_wolfe",
                                 tolerance_grad=0.0, tolerance_change=0.0)
    if s.optimizer == "lbfgs":
        return optimizers.LBFGS(x, lr=s.lr, history_size=s.history_size, h0=h0)
    if s.optimizer == "adam":
        return optimizers.Adam(x, lr=s.lr)
    raise ValueError(f"unknown optimizer {s.optimizer!r}")


def minimise(x0: torch.Tensor, fn: Callable, settings: Settings, *, term_names=(),
             callback: Optional[Callable[[Step], None]] = None, step_offset: int = 0,
             total_steps: Optional[int] = None, start: Optional[float] = None,
             should_stop: Optional[Callable[[], bool]] = None,
             deadline: Optional[float] = None, curvature: Optional[float] = None) -> Outcome:
    """Minimise ``fn(x) -> (loss, terms)`` over ``x`` starting from ``x0``.

    ``terms`` is a 1-D tensor of named parts of the loss (``term_names``), read together with
    the loss in one host sync per evaluation. Stops at the step budget; when the loss improved
    by less than ``tol`` (relative) over ``tol_window`` steps; when it has not beaten its best
    for ``patience`` steps; when it turns NaN or infinite; when ``should_stop()`` turns true
    (checked before every step: a Stop button, or the CLI's Ctrl-C handler, sets it) or on a
    KeyboardInterrupt (both end as "interrupted"); when ``deadline`` (a
    ``time.perf_counter()`` value) would pass before another step like the last one ends
    ("time"). The best image seen is
    returned in every case. ``step_offset``, ``total_steps`` and ``start`` (a
    ``time.perf_counter()`` value) let several calls report as one run, e.g. across scales.
    """
    x = x0.detach().clone().contiguous().requires_grad_(True)
    opt = make_optimizer(x, settings, curvature)
    best = {"loss": math.inf, "image": x0.detach().clone(), "terms": None}
    last = {}
    evals = 0

    def closure():
        nonlocal evals
        if x.grad is not None:
            x.grad.zero_()
        loss, terms = fn(x)
        loss.backward()
        values = torch.cat([loss.detach().float().reshape(1), terms.float()]).tolist()
        evals += 1
        terms = dict(zip(term_names, values[1:]))
        if last.get("fresh"):  # the first evaluation of a step is at the image it started from
            last["fresh"] = False
            last["loss"], last["terms"] = values[0], terms
        if values[0] < best["loss"]:
            best["loss"], best["terms"] = values[0], terms
            best["image"].copy_(x.detach())
        return loss

    history, stop = [], "budget"
    start = time.perf_counter() if start is None else start
    since_best, step = 0, 0
    last_step_s = 0.0      # what the last step took: the next one is not begun if it cannot end
    budget = total_steps or settings.steps
    try:
        for step in range(1, settings.steps + 1):
            if should_stop is not None and should_stop():
                stop = "interrupted"
                break
            if deadline is not None and time.perf_counter() + last_step_s >= deadline:
                stop = "time"      # the next step would end past the deadline
                break
            step_began = time.perf_counter()
            prev_best = best["loss"]
            last["fresh"] = True
            if settings.optimizer == "lbfgs":
                opt.step(closure)
            else:
                closure()
                opt.step()
            loss = last["loss"]
            last_step_s = time.perf_counter() - step_began
            now = time.perf_counter() - start
            history.append({"step": step + step_offset, "time": round(now, 4),
                            "loss": loss, **last["terms"]})
            if callback is not None:
                callback(Step(step + step_offset, budget, loss, dict(last["terms"]), now, x.detach()))
            if not math.isfinite(loss):
                stop = "non-finite"
                break
            since_best = 0 if best["loss"] < prev_best else since_best + 1
            if since_best >= settings.patience:
                stop = "no-improvement"
                break
            if settings.tol > 0 and step > settings.tol_window:
                old = history[-1 - settings.tol_window]["loss"]
                if (old - loss) <= settings.tol * abs(loss):
                    stop = "converged"
                    break
    except KeyboardInterrupt:
        stop = "interrupted"
    else:
        # The last update moved x past the last evaluated point: score it once more.
        if stop in ("budget", "converged", "time") and step > 0:
            with torch.no_grad():
                loss, terms = fn(x)
            values = torch.cat([loss.float().reshape(1), terms.float()]).tolist()
            if math.isfinite(values[0]) and values[0] < best["loss"]:
                best["loss"], best["terms"] = values[0], dict(zip(term_names, values[1:]))
                best["image"].copy_(x.detach())
    return Outcome(best["image"], best["loss"], len(history), evals, stop, history,
                   best["terms"] or {}, float(getattr(opt, "h_diag", 0.0) or 0.0))
