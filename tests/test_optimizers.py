"""impasto's own L-BFGS and Adam against torch.optim's, which serve as the reference."""
import subprocess
import sys

import pytest
import torch

from impasto import optimizers


def rosenbrock(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def quartic(x):
    # a small 'Gram matching' problem: fit a 4x4 Gram matrix
    f = x.view(4, 8)
    target = torch.arange(16, dtype=x.dtype).view(4, 4) / 16
    return ((f @ f.T / 8 - (target + target.T)) ** 2).sum()


def run(opt_cls, fn, x0, steps, **kw):
    x = x0.clone().requires_grad_(True)
    ours = opt_cls is not None
    opt = opt_cls(x, **kw) if ours else torch.optim.LBFGS(
        [x], max_iter=1, tolerance_grad=0.0, tolerance_change=0.0, **kw)
    losses = []

    def closure():
        opt.zero_grad()
        loss = fn(x)
        loss.backward()
        losses.append(float(loss.detach()))
        return loss
    for _ in range(steps):
        opt.step(closure)
    return x.detach(), losses


@pytest.mark.parametrize("fn,n,history", [(rosenbrock, 12, 100), (quartic, 32, 5)])
def test_lbfgs_follows_torch_step_for_step(fn, n, history):
    torch.manual_seed(0)
    x0 = torch.randn(n, dtype=torch.float64) * 0.5
    x_ours, l_ours = run(optimizers.LBFGS, fn, x0, 40, lr=1.0, history_size=history)
    x_ref, l_ref = run(None, fn, x0, 40, lr=1.0, history_size=history)
    assert l_ours == pytest.approx(l_ref, rel=1e-9, abs=1e-12)
    assert torch.allclose(x_ours, x_ref, rtol=1e-9, atol=1e-12)
    assert l_ours[-1] < 0.5 * l_ours[0]


def test_lbfgs_keeps_history_size_pairs():
    x0 = torch.randn(32, dtype=torch.float64)
    x = x0.clone().requires_grad_(True)
    opt = optimizers.LBFGS(x, history_size=3)

    def closure():
        opt.zero_grad()
        loss = quartic(x)
        loss.backward()
        return loss
    for _ in range(10):
        opt.step(closure)
    assert len(opt.s) == len(opt.y) == 3
    assert opt.history_bytes() == 2 * 3 * 32 * 8


def test_lbfgs_restarts_on_a_direction_that_climbs():
    """A history that no longer gives a descent direction (float32 rounding can do it) must
    not stall the run: the step falls back to steepest descent and the loss still falls."""
    x = torch.tensor([3.0, -2.0], dtype=torch.float64, requires_grad=True)

    def closure():
        opt.zero_grad()
        loss = (x ** 2).sum()
        loss.backward()
        return loss
    opt = optimizers.LBFGS(x)
    opt.step(closure)
    # poison the memory: a negative initial Hessian, and a gradient change that fails the
    # curvature condition (so no pair is kept to repair it): -H g points uphill
    opt.h_diag = -1.0
    step = opt.d * opt.t
    opt.prev_g = 2 * x.detach().reshape(-1) + step
    before = float((x.detach() ** 2).sum())
    opt.step(closure)
    assert opt.h_diag == 1.0 and len(opt.s) == 0
    assert float((x.detach() ** 2).sum()) < before


def test_adam_matches_torch():
    torch.manual_seed(1)
    x0 = torch.randn(32, dtype=torch.float64)
    xs = []
    for ours in (True, False):
        x = x0.clone().requires_grad_(True)
        opt = optimizers.Adam(x, lr=0.05) if ours else torch.optim.Adam([x], lr=0.05)
        for _ in range(50):
            opt.zero_grad()
            quartic(x).backward()
            opt.step()
        xs.append(x.detach())
    assert torch.allclose(xs[0], xs[1], rtol=1e-10, atol=1e-12)


def test_a_run_never_imports_dynamo(image_files, cli_env):
    """The point of owning the optimisers: a whole transfer without torch._dynamo's import."""
    code = (
        "import sys\n"
        "from impasto import api\n"
        f"r = api.Request('transfer', {{'size': 32, 'steps': 2}}, content={str(image_files['content'])!r},"
        f" styles=[{str(image_files['style'])!r}], output={str(image_files['out'] / 'o.png')!r})\n"
        "api.prepare(r).run(None)\n"
        "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=cli_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert (image_files['out'] / 'o.png').exists()


def test_lbfgs_started_with_a_curvature_scale_takes_a_full_first_step():
    """A finer scale starts from the coarser one's y.s / y.y: its first step is a real
    quasi-Newton step, where a cold start takes a tiny steepest-descent step."""
    target = torch.linspace(-1, 1, 32, dtype=torch.float64)

    def first_step(h0):
        x = torch.zeros(32, dtype=torch.float64, requires_grad=True)
        opt = optimizers.LBFGS(x, h0=h0)

        def closure():
            opt.zero_grad()
            loss = ((x - target) ** 2).sum()        # Hessian 2I: the exact scale is 0.5
            loss.backward()
            return loss
        opt.step(closure)
        return float(((x.detach() - target) ** 2).sum())
    start = float((target ** 2).sum())
    assert first_step(0.5) < 1e-20                 # the exact scale: solved in one step
    assert first_step(None) > 0.5 * start          # cold: a tiny step
