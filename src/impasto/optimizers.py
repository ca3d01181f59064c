"""impasto's own optimisers of one image tensor: L-BFGS (one iteration per step, fixed step
length) and Adam.

Why not ``torch.optim``: constructing any ``torch.optim.Optimizer`` imports TorchDynamo, which
costs 3-4 s of CPU at start-up on every run and in every new worker process (measured with
``python -X importtime``; see benchmarks/batch.py). The arithmetic below is the textbook one
(Nocedal & Wright, *Numerical Optimization*, algorithm 7.4, the two-loop recursion, with the
initial Hessian scaled by y.s / y.y); it follows ``torch.optim.LBFGS`` with ``max_iter=1`` and
no line search step for step when started cold, which tests/test_optimizers.py checks (``h0``,
the curvature scale a finer scale inherits from a coarser one, replaces the tiny first step),
except where that one stalls:
a direction that is not a descent direction (possible in float32 with a long history) makes
``torch.optim.LBFGS`` return without moving, every step after; here the history is dropped
and the step is a steepest-descent one.

The strong-Wolfe line search (``--line-search``) is not reimplemented: with it, impasto uses
``torch.optim.LBFGS``, and pays its import.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Callable

import torch

from .layout import zeros_as


class LBFGS:
    """Minimises a function of ``x`` with limited-memory BFGS; ``step(closure)`` does one
    iteration: ``closure()`` evaluates the loss at ``x`` and leaves its gradient in ``x.grad``,
    then ``x`` moves by ``lr`` along the quasi-Newton direction (the first step by
    ``min(1, 1 / |g|_1) * lr`` along the steepest descent). ``history_size`` pairs (s, y) are
    kept: two vectors the size of ``x`` each."""

    def __init__(self, x: torch.Tensor, lr: float = 1.0, history_size: int = 100,
                 h0: float | None = None):
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self.x, self.lr, self.history_size = x, float(lr), int(history_size)
        self.s: deque = deque()      # steps taken
        self.y: deque = deque()      # the gradient changes they caused
        self.rho: deque = deque()    # 1 / (y . s)
        self.h_diag = 1.0
        self.d = None                # the last direction and step length
        self.t = 0.0
        self.prev_g = None
        self.iterations = 0
        self.h0 = h0                 # a curvature scale to start from (else a tiny first step)

    def zero_grad(self) -> None:
        if self.x.grad is not None:
            self.x.grad.zero_()

    def _direction(self, g: torch.Tensor) -> torch.Tensor:
        """-H g by the two-loop recursion over the kept pairs."""
        q = torch.neg(g, out=_vector(g))
        alphas = []
        for s, y, rho in zip(reversed(self.s), reversed(self.y), reversed(self.rho)):
            a = s.dot(q) * rho
            alphas.append(a)
            q.add_(y, alpha=-a)
        r = q.mul_(self.h_diag)
        for s, y, rho, a in zip(self.s, self.y, self.rho, reversed(alphas)):
            b = y.dot(r) * rho
            r.add_(s, alpha=a - b)
        return r

    def _restart(self, g: torch.Tensor):
        self.s.clear(), self.y.clear(), self.rho.clear()
        self.h_diag = 1.0
        return torch.neg(g, out=_vector(g)), min(1.0, 1.0 / float(g.abs().sum())) * self.lr

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        loss = closure()
        g = _vector(self.x).copy_(self.x.grad.detach().reshape(-1))
        if not g.any():             # a stationary point: nowhere to go
            return loss
        self.iterations += 1
        if (self.iterations == 1 or self.d is None) and self.h0:
            d, t = torch.mul(g, -self.h0, out=_vector(g)), self.lr
            self.h_diag = self.h0
        elif self.iterations == 1 or self.d is None:
            d, t = self._restart(g)
        else:
            y = torch.sub(g, self.prev_g, out=_vector(g))
            s = torch.mul(self.d, self.t, out=_vector(g))
            ys = float(y.dot(s))
            if ys > 1e-10:          # curvature condition: keep the pair
                if len(self.s) == self.history_size:
                    self.s.popleft(), self.y.popleft(), self.rho.popleft()
                self.s.append(s), self.y.append(y), self.rho.append(1.0 / ys)
                self.h_diag = ys / float(y.dot(y))
            d, t = self._direction(g), self.lr
        gtd = float(g.dot(d))
        if not gtd < 0 and math.isfinite(gtd):     # not a descent direction: start afresh
            d, t = self._restart(g)
        self.prev_g, self.d, self.t = g, d, t
        with torch.no_grad():
            self.x.add_(d.view_as(self.x), alpha=t)
        return loss

    def history_bytes(self) -> int:
        """Bytes the kept pairs use now."""
        return sum(v.numel() * v.element_size() for v in (*self.s, *self.y))


def _vector(like: torch.Tensor) -> torch.Tensor:
    """A flat vector for ``like``'s values: on a CPU, when large, in pages of its own outside
    malloc's heap (``layout.zeros_as``), so the history a tiled scale keeps does not sit in
    the holes its evaluations' passes reuse (``allocator.tile_heap``)."""
    return zeros_as(like, (like.numel(),), like.dtype)


class Adam:
    """Adam (Kingma & Ba 2015) with the usual constants; ``step()`` uses ``x.grad``."""

    def __init__(self, x: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.x, self.lr, self.betas, self.eps = x, float(lr), betas, eps
        self.m = torch.zeros_like(x)
        self.v = torch.zeros_like(x)
        self.n = 0

    def zero_grad(self) -> None:
        if self.x.grad is not None:
            self.x.grad.zero_()

    def step(self) -> None:
        b1, b2 = self.betas
        self.n += 1
        g = self.x.grad.detach()
        self.m.mul_(b1).add_(g, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (self.v.sqrt() / math.sqrt(1 - b2 ** self.n)).add_(self.eps)
        with torch.no_grad():
            self.x.addcdiv_(self.m, denom, value=-self.lr / (1 - b1 ** self.n))
