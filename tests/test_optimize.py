"""The optimisation loop on simple functions: progress, budget, stopping rules, the best image
kept on NaN or Ctrl-C, and the per-step callback."""
from __future__ import annotations

import math

import pytest
import torch

from impasto.optimize import Settings, Step, minimise

A = torch.rand(1, 3, 4, 5, generator=torch.Generator().manual_seed(0))


def quadratic(x):
    loss = ((x - A) ** 2).sum()
    return loss, torch.stack([loss.detach(), (x - A).abs().max().detach()])


TERMS = ("sq", "maxdiff")


class Recording:
    """Wraps a function; remembers every point it was evaluated at and the loss there."""

    def __init__(self, fn, nan_after=None, interrupt_at=None):
        self.fn, self.nan_after, self.interrupt_at = fn, nan_after, interrupt_at
        self.points, self.losses = [], []

    def __call__(self, x):
        n = len(self.points) + 1
        if self.interrupt_at is not None and n == self.interrupt_at:
            raise KeyboardInterrupt
        loss, terms = self.fn(x)
        if self.nan_after is not None and n > self.nan_after:
            loss = loss * float("nan")
        self.points.append(x.detach().clone())
        self.losses.append(loss.item())
        return loss, terms

    def best(self):
        finite = [(l, i) for i, l in enumerate(self.losses) if math.isfinite(l)]
        loss, i = min(finite)
        return loss, self.points[i]


@pytest.mark.parametrize("optimizer, lr, steps", [("lbfgs", 1.0, 30), ("adam", 0.05, 60)])
def test_minimise_reduces_the_loss(optimizer, lr, steps):
    x0 = torch.zeros_like(A)
    start = quadratic(x0)[0].item()
    out = minimise(x0, quadratic, Settings(optimizer=optimizer, lr=lr, steps=steps,
                                            patience=1000), term_names=TERMS)
    assert out.loss < start * (1e-4 if optimizer == "lbfgs" else 0.5)
    assert out.history[0]["loss"] == pytest.approx(start)
    assert set(out.history[0]) == {"step", "time", "loss", "sq", "maxdiff"}
    # the returned loss is the loss of the returned image
    assert quadratic(out.image)[0].item() == pytest.approx(out.loss, rel=1e-5, abs=1e-9)
    assert torch.equal(x0, torch.zeros_like(A))          # the start image is not modified
    assert not out.image.requires_grad


def test_lbfgs_converges_to_the_minimum():
    out = minimise(torch.zeros_like(A), quadratic,
                   Settings(steps=50, patience=1000), term_names=TERMS)
    assert torch.allclose(out.image, A, atol=1e-3)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_step_budget_is_respected(optimizer):
    fn = Recording(quadratic)
    out = minimise(torch.zeros_like(A), fn, Settings(optimizer=optimizer, lr=0.01, steps=7,
                                                     patience=1000), term_names=TERMS)
    assert out.steps == 7 and len(out.history) == 7
    assert [h["step"] for h in out.history] == list(range(1, 8))
    assert out.stop_reason == "budget"
    assert out.evaluations == 7
    assert len(fn.losses) == 8        # 7 steps + scoring the point the last step moved to


def test_line_search_evaluates_more_than_once_per_step():
    out = minimise(torch.zeros_like(A), quadratic,
                   Settings(steps=5, line_search=True, patience=1000), term_names=TERMS)
    assert out.steps <= 5 and out.evaluations > out.steps


def test_zero_steps_returns_the_start_image():
    x0 = torch.rand_like(A)
    out = minimise(x0, quadratic, Settings(steps=0))
    assert out.steps == 0 and out.history == [] and torch.equal(out.image, x0)


def test_tol_stops_early_when_converged():
    out = minimise(torch.zeros_like(A), quadratic,
                   Settings(optimizer="adam", lr=0.05, steps=2000, tol=1e-2, tol_window=10,
                            patience=10_000), term_names=TERMS)
    assert out.stop_reason == "converged"
    assert 10 < out.steps < 2000
    # the rule that fired: less than 1% improvement over the last 10 steps
    losses = [h["loss"] for h in out.history]
    assert losses[-11] - losses[-1] <= 1e-2 * abs(losses[-1])
    # ... and it had not fired one step earlier
    assert losses[-12] - losses[-2] > 1e-2 * abs(losses[-2])


def test_tol_zero_never_stops_early():
    out = minimise(torch.zeros_like(A), quadratic,
                   Settings(optimizer="adam", lr=0.05, steps=50, patience=10_000))
    assert out.stop_reason == "budget" and out.steps == 50


def test_patience_stops_when_the_loss_no_longer_improves():
    def flat(x):
        loss = (x * 0).sum() + 1.0
        return loss, loss.detach().reshape(1)
    out = minimise(torch.rand_like(A), flat, Settings(optimizer="adam", steps=100, patience=5))
    assert out.stop_reason == "no-improvement"
    assert out.steps == 6      # step 1 sets the best, then 5 steps without beating it


def assert_returns_the_best_seen(out, fn):
    best_loss, best_point = fn.best()
    assert out.loss == pytest.approx(best_loss)
    assert torch.equal(out.image, best_point)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_nan_stops_and_keeps_the_best_finite_image(optimizer):
    fn = Recording(quadratic, nan_after=4)
    out = minimise(torch.zeros_like(A), fn, Settings(optimizer=optimizer, lr=0.1, steps=50,
                                                     patience=1000), term_names=TERMS)
    assert out.stop_reason == "non-finite"
    assert out.steps == 5 and math.isnan(out.history[-1]["loss"])
    assert_returns_the_best_seen(out, fn)
    assert math.isfinite(out.loss) and torch.isfinite(out.image).all()


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_ctrl_c_returns_interrupted_with_the_best_image(optimizer):
    fn = Recording(quadratic, interrupt_at=6)
    out = minimise(torch.zeros_like(A), fn, Settings(optimizer=optimizer, lr=0.1, steps=50,
                                                     patience=1000), term_names=TERMS)
    assert out.stop_reason == "interrupted"
    assert out.steps == 5 and len(fn.losses) == 5
    assert_returns_the_best_seen(out, fn)


def test_ctrl_c_before_the_first_step_returns_the_start_image():
    x0 = torch.rand_like(A)
    out = minimise(x0, Recording(quadratic, interrupt_at=1), Settings(steps=10))
    assert out.stop_reason == "interrupted" and out.steps == 0
    assert torch.equal(out.image, x0) and out.loss == math.inf


def test_callback_is_called_once_per_step():
    seen = []
    out = minimise(torch.zeros_like(A), quadratic, Settings(steps=6, patience=1000),
                   term_names=TERMS, callback=seen.append, step_offset=10, total_steps=40)
    assert len(seen) == out.steps == 6
    assert all(isinstance(s, Step) for s in seen)
    assert [s.step for s in seen] == list(range(11, 17))
    assert [h["step"] for h in out.history] == list(range(11, 17))
    assert all(s.total_steps == 40 for s in seen)
    assert [s.loss for s in seen] == [h["loss"] for h in out.history]
    assert seen[0].terms == {"sq": pytest.approx(seen[0].loss), "maxdiff": pytest.approx(
        A.abs().max().item())}
    assert all(s.image.shape == A.shape for s in seen)
    assert all(b.elapsed >= a.elapsed for a, b in zip(seen, seen[1:]))


def test_callback_interrupt_is_handled_like_ctrl_c():
    def cb(s):
        if s.step == 3:
            raise KeyboardInterrupt
    out = minimise(torch.zeros_like(A), quadratic, Settings(steps=20, patience=1000),
                   term_names=TERMS, callback=cb)
    assert out.stop_reason == "interrupted" and out.steps == 3


def test_unknown_optimizer():
    with pytest.raises(ValueError):
        minimise(torch.zeros_like(A), quadratic, Settings(optimizer="sgd", steps=1))


def test_line_search_history_reports_the_loss_at_each_steps_start():
    target = torch.tensor([3.0, -2.0, 0.5])

    def fn(x):
        loss = (x - target).pow(2).sum()
        return loss, loss.detach().reshape(1)

    x0 = torch.zeros(3)
    s = Settings(optimizer="lbfgs", lr=1.0, steps=3, line_search=True)
    out = minimise(x0, fn, s, term_names=("q",))
    assert out.history[0]["loss"] == pytest.approx(float((x0 - target).pow(2).sum()))
    assert out.evaluations > out.steps           # the line search evaluated more than once
    assert out.loss < 1e-6
    assert out.terms["q"] == pytest.approx(out.loss)   # the terms are the best image's


def test_a_step_that_cannot_end_before_the_deadline_is_not_begun():
    """--time: the last step must end inside the budget, not begin just before its end."""
    import time as _time

    def slow(x):
        _time.sleep(0.2)
        return quadratic(x)
    start = _time.perf_counter()
    out = minimise(torch.zeros_like(A), slow, Settings(steps=50), term_names=TERMS,
                   start=start, deadline=start + 0.7)
    assert out.stop_reason == "time"
    assert 1 <= out.steps <= 3             # a 4th step would have ended at 0.8 s
    assert out.history[-1]["time"] <= 0.7
