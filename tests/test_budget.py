"""A time budget: durations, the plan a budget buys on a machine of known step rate, and a run
that keeps to it."""
from __future__ import annotations

import time

import pytest

from impasto import budget
from impasto.errors import UserError


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("2m", 120), ("1m30s", 90),
                                           ("1h", 3600), ("90", 90), ("0.5m", 30)])
def test_durations(text, seconds):
    assert budget.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "soon", "-5s", "1x", "m"])
def test_not_durations(text):
    assert budget.parse_duration(text) is None


def test_the_plan_a_budget_buys():
    """Three scales whose steps cost 0.1, 0.4 and 1.6 s (each twice the side of the one
    before): the steps keep the 2.25 : 1.5 : 1 proportion and their cost, with two warm-up
    steps a scale, fills the budget."""
    costs = [0.1, 0.4, 1.6]
    counts = budget.plan_steps(costs, 60.0, ceiling=10_000)
    warm = budget.WARM_UP_STEPS * sum(costs)
    spent = sum(n * c for n, c in zip(counts, costs)) + warm
    assert 57.0 <= spent <= 60.0
    assert counts[0] / counts[2] == pytest.approx(2.25, rel=0.1)
    assert counts[1] / counts[2] == pytest.approx(1.5, rel=0.1)
    # twice the budget buys about twice the steps; the ceiling caps them
    assert sum(budget.plan_steps(costs, 120.0, 10_000)) == pytest.approx(2 * sum(counts) + 9,
                                                                        rel=0.1)
    assert sum(budget.plan_steps(costs, 120.0, ceiling=50)) == 50
    # a faster machine (half the cost per step) buys about twice the steps
    fast = budget.plan_steps([c / 2 for c in costs], 60.0, 10_000)
    assert sum(fast) == pytest.approx(2 * sum(counts) + 9, rel=0.1)


def test_a_short_budget_skips_the_finest_scale_rather_than_take_one_step_there():
    """12 s at step costs 0.25, 1 and 4 s: the finest scale's warm-up alone is 8 s and leaves
    it no step of its own; the time goes to the coarser scales instead, and fills the budget
    there."""
    costs = [0.25, 1.0, 4.0]
    counts = budget.plan_steps(costs, 12.0, ceiling=10_000)
    assert counts[-1] == 0 and counts[0] > counts[1] > 0
    spent = budget.plan_seconds(costs, counts)
    assert 10.0 <= spent <= 12.0
    assert budget.plan_steps(costs, 40.0, 10_000)[-1] >= budget.MIN_FINEST_STEPS  # time enough
    assert budget.plan_steps(costs, 1e6, ceiling=3)[-1] == 1     # the ceiling, not the time
    assert budget.plan_steps(costs, 0.5, 10_000) == [1, 0, 0]    # at worst the coarsest


def test_a_budget_that_leaves_the_finest_scale_a_few_steps_gives_them_to_the_coarser():
    """25 s at step costs 0.25, 1 and 4 s: the 1.5:1 split would leave the finest scale 2 steps
    beyond its warm-up, fewer than MIN_FINEST_STEPS; they go to the coarser scales."""
    costs = [0.25, 1.0, 4.0]
    assert budget.MIN_FINEST_STEPS > 2
    counts = budget.plan_steps(costs, 25.0, ceiling=10_000)
    assert counts[-1] == 0 and counts[1] > 5
    assert 22.0 <= budget.plan_seconds(costs, counts) <= 25.0
    assert budget.plan_steps(costs, 40.0, 10_000)[-1] == budget.MIN_FINEST_STEPS


def test_a_run_without_time_for_its_finest_scale_ends_its_coarser_one_at_the_deadline(
        monkeypatch, content_image, style_image):
    """A machine slow enough (a low measured rate) that the finest of two scales has time for
    its first step but not for two: the run steps at the coarse scale only, until the
    deadline, and returns the picture enlarged to the full size."""
    import impasto
    from impasto import estimate
    monkeypatch.setattr(estimate, "measure_throughput", lambda *a, **k: 2e9)  # 2.7 s a step
    t = time.perf_counter()
    result = impasto.run("transfer", content_image, style_image, size=64, scales=2,
                         precision="fp32", seed=1, time="8s", steps=100_000, patience=100_000)
    wall = time.perf_counter() - t
    assert [n for _, n in result.schedule][-1] == 0
    assert {h["side"] for h in result.outcome.history} == {32}
    assert result.outcome.stop_reason == "time" and result.outcome.steps > 2
    assert tuple(result.tensor.shape[-2:]) == (48, 64)
    assert wall < 8 * 1.1


def test_the_plan_pays_for_each_scales_setup_first():
    """The deep layers' larger painting costs a forward pass before a scale's first step:
    the plan spends that time there and buys fewer steps with what is left."""
    costs, setup = [0.1, 0.4, 1.6], [0.0, 1.0, 4.0]
    counts = budget.plan_steps(costs, 60.0, 10_000, setup)
    spent = sum(n * c for n, c in zip(counts, costs)) + budget.WARM_UP_STEPS * sum(costs) + 5.0
    assert 57.0 <= spent <= 60.0
    assert sum(counts) < sum(budget.plan_steps(costs, 60.0, 10_000))
    assert budget.plan_seconds(costs, counts, setup) == pytest.approx(
        budget.plan_seconds(costs, counts) + 5.0)
    assert budget.plan_seconds(costs, [5, 0, 3], setup) == pytest.approx(
        budget.plan_seconds(costs, [5, 0, 3]) + 4.0)      # a scale without steps costs nothing


def test_a_short_budget_affords_a_smaller_enlarged_painting():
    """The deep layers' painting enlarged s times costs s² (its pixels): at most a fifth of
    the budget goes to it, in steps of 0.5 down to 1 (off)."""
    def setup_at(s):
        return [0.0, s * s / 4, s * s]       # per scale, coarsest first: 1.25 s² in all
    assert budget.deep_scale(3.0, setup_at, 120.0) == 3.0       # 11.25 s <= 24 s
    assert budget.deep_scale(3.0, setup_at, 30.0) == 2.0        # 11.25, 7.8 > 6 >= 5
    assert budget.deep_scale(3.0, setup_at, 15.0) == 1.5        # 5 > 3 >= 2.8
    assert budget.deep_scale(3.0, setup_at, 2.0) == 1.0         # even 1.5x is too much
    assert budget.deep_scale(2.0, setup_at, 1000.0) == 2.0      # never more than asked
    assert budget.deep_scale(1.0, setup_at, 1.0) == 1.0


def test_a_run_records_the_enlarged_painting_its_budget_afforded(monkeypatch, content_image,
                                                                 style_image):
    """The choice reaches the run: the plan says it, the result's config records it, and
    the objective's regions carry no enlarged copy when the budget affords none."""
    import impasto
    from impasto import api, tasks
    seen, events = [], []

    class Recording(tasks.Objective):       # the real objective, its regions written down
        def __init__(self, net, **kw):
            seen.append(kw["regions"])
            super().__init__(net, **kw)
    monkeypatch.setattr(tasks, "Objective", Recording)
    monkeypatch.setattr(budget, "DEEP_SETUP_SHARE", 0.0)     # no time for any enlarged copy
    options = dict(size=48, precision="fp32", seed=1, scales=1, steps=2)
    result = api.prepare(api.Request("transfer", {**options, "time": "20s"}, content_image,
                                     [style_image])).run(events.append).result
    assert [e.deep_style_scale for e in events if e.kind == "plan"] == [1.0]
    assert [r.deep_styles for r, in seen] == [None]
    assert result.config.deep_style_scale == 1.0
    monkeypatch.setattr(budget, "DEEP_SETUP_SHARE", 1.0)     # time enough: as asked, not said
    seen.clear(), events.clear()
    impasto.run("transfer", content_image, style_image, time="20s", **options)
    assert [r.deep_styles is not None for r, in seen] == [True]


def test_a_budget_too_short_names_the_option():
    with pytest.raises(UserError, match="--time: 5 s is too short"):
        budget.check_fits(-1.0, 2.0, 5)


def test_a_run_keeps_to_its_budget(content_image, style_image):
    """In process (no interpreter start-up to wait for): --time 10s plans more steps than fit at
    a high ceiling, the deadline ends the last scale, and the run returns within the budget."""
    import impasto
    options = dict(size=64, precision="fp32", seed=1)
    impasto.run("transfer", content_image, style_image, steps=1, **options)   # network built
    t = time.perf_counter()
    result = impasto.run("transfer", content_image, style_image, time="10s", steps=100_000,
                         patience=100_000, **options)
    wall = time.perf_counter() - t
    assert result.outcome.stop_reason == "time"
    assert wall < 10.0 * 1.1
    assert 10.0 * 0.8 < wall                  # and uses it
    assert result.config.time == "10s" and result.outcome.steps >= 1


def test_a_bad_budget_through_the_cli(run_cli, image_files):
    proc = run_cli("transfer", image_files["content"], image_files["style"], "-o",
                   image_files["out"] / "t.png", "--time", "soon")
    assert proc.returncode == 2 and "--time: 'soon' is not a duration" in proc.stderr


def test_eta_comes_from_the_plan_from_the_first_step_then_from_what_steps_took():
    from impasto.budget import WARM_UP_STEPS, Eta
    eta = Eta([(128, 10), (256, 10)], step_seconds=[0.1, 0.4])
    total = WARM_UP_STEPS * 0.1 + 9 * 0.1 + WARM_UP_STEPS * 0.4 + 9 * 0.4
    eta.observe(1, 0.3, scale=0)                      # the warm-up step: not timed
    assert eta.left(1, 20) == pytest.approx(total - WARM_UP_STEPS * 0.1)
    eta.observe(2, 0.5, scale=0)                      # steady steps take twice the plan
    eta.observe(3, 0.7, scale=0)
    assert eta.left(3, 20) == pytest.approx(2 * (total - WARM_UP_STEPS * 0.1 - 2 * 0.1))
    assert eta.left(20, 20) == 0


def test_eta_without_a_plan_waits_for_a_steady_step():
    from impasto.budget import Eta
    eta = Eta([(128, 3)])
    eta.observe(1, 5.0)
    assert eta.left(1, 3) is None
    eta.observe(2, 6.0)
    assert eta.left(2, 3) == pytest.approx(1.0)
    wrong = Eta([(128, 3), (256, 3)], step_seconds=[0.1])   # a plan that does not fit
    assert wrong.left(1, 6) is None


def test_cli_shows_the_plans_eta_at_the_first_step(run_cli, image_files):
    out = image_files["out"] / "o.png"
    r = run_cli("transfer", image_files["content"], image_files["style"], "-o", out,
                "--size", "48", "--steps", "10")
    assert r.returncode == 0, r.stderr
    first = next(l for l in r.stderr.splitlines() if l.startswith("step 1/"))
    assert "eta ?" not in first and " eta " in first, first
    plan = next(l for l in r.stderr.splitlines() if l.startswith("impasto: "))
    assert ", time " in plan, plan


def test_the_plan_line_says_what_the_budget_afforded():
    import io

    from impasto.api import PlanEvent
    from impasto.cli.progress import print_plan

    def line(last=3, **kw):
        out = io.StringIO()
        print_plan(PlanEvent([(256, 5), (512, last)], (384, 512), "fp32", "cpu", 2**30, 30.0,
                             None, [], **kw), stream=out)
        return out.getvalue()
    assert "enlarged 2x, what the time budget affords" in line(deep_style_scale=2.0)
    assert "enlarged" not in line()
    assert "512px x0" in line(0) and "no steps at full size" in line(0)


def test_a_step_is_priced_by_its_style_loss(monkeypatch, content_image, style_image):
    """sw sorts every layer's projections at every step: the plan prices its steps at
    LOSS_COST times gram's (a fixed machine rate here, so that only the loss differs)."""
    from impasto import api, estimate
    monkeypatch.setattr(estimate, "measure_throughput", lambda *a, **k: 5e9)

    def step_seconds(loss):
        events = []
        api.prepare(api.Request("transfer", {"size": 64, "steps": 2, "scales": 2,
                                             "precision": "fp32", "style_loss": loss},
                                content_image, [style_image])).run(events.append)
        return next(e.step_seconds for e in events if e.kind == "plan")
    gram, sw = step_seconds("gram"), step_seconds("sw")
    assert sw == pytest.approx([g * budget.LOSS_COST["sw"] for g in gram])
    assert budget.LOSS_COST["sw"] > 2 and 1 <= budget.LOSS_COST["w2"] < 1.2


def test_a_budget_that_skips_the_finest_scale_affords_the_painting_only_where_it_runs():
    """30 s at 512 px on a machine of 100 GFLOP/s: the budget gives 512 px no steps, so the
    1536 px painting that scale would read (3x) is not paid for, and the scales that run keep
    a larger enlargement than a choice over all three scales would leave them."""
    import torch
    from impasto import Config, backbones, planning, tasks
    cfg = Config(size=512, time="30s").with_model_layers()
    plan = tasks.schedule(cfg.size, cfg.steps, cfg.scales)
    layers = cfg.content_layers + cfg.style_layers
    deep_layers = tasks.deep_style_layers(cfg)
    deepest = backbones.deepest(cfg.model, layers)
    styles = [torch.zeros(1, 3, 600, 480)]
    memory = {"tiles": [None] * len(plan), "keep": [None] * len(plan)}
    rate = 1e11
    run_cfg, deadline, costs, setup, steps = planning.budget_plan(
        cfg, plan, (384, 512), layers, memory, styles, deep_layers, deepest, rate,
        time.perf_counter())
    over_all = budget.deep_scale(cfg.deep_style_scale, lambda s: planning.setup_costs(
        cfg.replace(deep_style_scale=s), plan, styles, deep_layers, deepest, rate), 30.0)
    assert len(steps) == len(plan) == 3 and steps[-1][1] == 0 and steps[0][1] > 0
    assert over_all < run_cfg.deep_style_scale <= cfg.deep_style_scale
    assert setup[-1] == 0.0 and len(costs) == 3
    assert budget.plan_seconds(costs, [n for _, n in steps], setup) <= 30.0
    # with time for every scale nothing changes: the scale chosen over all of them
    slow = Config(size=512, time="10m").with_model_layers()
    run_cfg, _, _, _, steps = planning.budget_plan(
        slow, plan, (384, 512), layers, memory, styles, deep_layers, deepest, rate,
        time.perf_counter())
    assert steps[-1][1] > 0 and run_cfg.deep_style_scale == slow.deep_style_scale


def test_the_plan_line_says_which_scales_reuse_freed_memory():
    """A tiled scale does not keep its freed memory under --reuse-memory auto: the plan line
    names the scales that do, unless all do."""
    import io

    from impasto.api import PlanEvent
    from impasto.cli.progress import print_plan

    def line(reuse, tiles=(None, 384)):
        out = io.StringIO()
        print_plan(PlanEvent([(256, 5), (512, 3)], (384, 512), "fp32", "cpu", 2**30, None,
                             None, [], tiles=list(tiles), history=4, budget_bytes=2**30,
                             reuse=list(reuse)), stream=out)
        return out.getvalue()
    assert "(L-BFGS history 4, freed memory reused at 256px)" in line([True, False])
    assert "(L-BFGS history 4, freed memory reused)" in line([True, True])
    assert "(L-BFGS history 4)" in line([False, False])
