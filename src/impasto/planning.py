"""The plan of a run before it starts: the paintings' sizes each scale reads, what a step
costs at each scale on this machine, how a time budget is spent, and the memory plan (which
scales are tiled, in what tiles, which stages keep their graphs, how much L-BFGS history fits).
"""
from __future__ import annotations

import time

from . import backbones, image as imageio
from .config import Config
from .losses import Region


def deep_style_layers(cfg: Config) -> list:
    """The style layers that read the painting's larger copy (``--deep-style-scale``): those
    at stride 8 and more (vgg19: relu4_1, relu5_1)."""
    return [k for k in cfg.style_layers if backbones.stride(cfg.model, k) >= 8]


def deep_copy_side(cfg: Config, long_side: int, deep_layers):
    """The long side of the paintings' copy that ``deep_layers`` read at an output long side of
    ``long_side``, or None where they read the painting itself (no deep layers, or no
    enlargement)."""
    side, deep = cfg.style_sides(long_side)
    return deep if deep_layers and deep > side else None


def style_region(cfg: Config, mask, paintings, blend, long_side: int, deep_layers) -> Region:
    """A Region of ``paintings`` at an output long side of ``long_side``: each painting at the
    style side, and where ``deep_layers`` read a larger copy, that copy too."""
    deep = deep_copy_side(cfg, long_side, deep_layers)
    copies = None if deep is None else [imageio.resize_long(x, deep) for x in paintings]
    return Region(mask, [imageio.resize_long(x, cfg.style_sides(long_side)[0])
                         for x in paintings], blend, deep_styles=copies, deep_layers=deep_layers)


def time_plan(cfg, plan, aspect_hw, layers, memory, throughput, began, setup):
    """(deadline, seconds per step at each scale, the plan of steps that fills the budget)."""
    from . import budget
    seconds = budget.parse_duration(cfg.time)
    deadline = began + seconds * (1 - budget.RESERVE)
    costs = step_costs(cfg, plan, aspect_hw, layers, memory, throughput)
    left = deadline - time.perf_counter()
    budget.check_fits(left, budget.WARM_UP_STEPS * costs[-1] + setup[-1], seconds)
    counts = budget.plan_steps(costs, left, cfg.steps, setup)
    return deadline, costs, [(side, n) for (side, _), n in zip(plan, counts)]


def budget_plan(cfg, plan, aspect_hw, layers, memory, styles, deep_layers, deepest,
                throughput, began):
    """What a ``--time`` budget buys: (cfg with the deep style scale it affords, deadline,
    seconds per step and setup seconds at each scale, the plan of steps).

    The deep style layers' enlarged paintings cost one forward pass per scale, and
    ``budget.deep_scale`` keeps them within a fifth of the budget. When the budget then gives
    the finest scale no steps (``budget.MIN_FINEST_STEPS``), that scale's painting, the
    largest (1536 px at 3x for 512 px), is never read: the scale is chosen again over the
    scales that run, and their steps planned again with it. (A 30 s budget at 512 px had
    lowered it to 1x for a painting it never used, and Matisse's eye came back in the sky.)"""
    from . import budget
    seconds, asked = budget.parse_duration(cfg.time), cfg.deep_style_scale

    def affordable(scales):
        return cfg.replace(deep_style_scale=budget.deep_scale(asked, lambda s: setup_costs(
            cfg.replace(deep_style_scale=s), scales, styles, deep_layers, deepest,
            throughput), seconds))

    def timed(run_cfg, scales):
        setup = setup_costs(run_cfg, scales, styles, deep_layers, deepest, throughput)
        return (setup, *time_plan(run_cfg, scales, aspect_hw, layers, memory, throughput,
                                  began, setup))

    run_cfg = affordable(plan)
    setup, deadline, costs, steps = timed(run_cfg, plan)
    k = sum(1 for _, n in steps if n > 0)
    if k < len(plan) and run_cfg.deep_style_scale < asked:
        again = affordable(plan[:k])
        if again.deep_style_scale > run_cfg.deep_style_scale:
            setup_k, deadline, costs_k, steps_k = timed(again, plan[:k])
            run_cfg, setup = again, setup_k + [0.0] * (len(plan) - k)
            costs = costs_k + costs[k:]
            steps = steps_k + [(side, 0) for side, _ in plan[k:]]
    return run_cfg, deadline, costs, setup, steps


def setup_costs(cfg, plan, styles, deep_layers, deepest, throughput) -> list:
    """Seconds each scale spends on its deep layers' larger paintings (one forward pass each)
    before its first step; 0 where there are none."""
    from . import budget, estimate
    out = []
    for side, _ in plan:
        deep = deep_copy_side(cfg, side, deep_layers)
        out.append(0.0 if deep is None else sum(
            budget.seconds_per_step(estimate.step_flops(
                cfg.model, deepest, imageio.fit_size(*st.shape[-2:], deep)) / 2, throughput)
            for st in styles))
    return out


def step_costs(cfg, plan, aspect_hw, layers, memory, throughput) -> list:
    """Seconds one step takes at each scale of ``plan`` at ``throughput`` FLOP/s, tiling's
    extra work included."""
    from . import budget, estimate
    from .tile_geometry import work_factor
    deepest = backbones.deepest(cfg.model, layers)
    costs = []
    for (side, _), tile, keep, comp, early in zip(
            plan, memory["tiles"], memory["keep"], memory.get("compact") or [None] * len(plan),
            memory.get("early") or [None] * len(plan)):
        hw = imageio.fit_size(*aspect_hw, side)
        flops = estimate.step_flops(cfg.model, deepest, hw)
        if tile:
            flops *= work_factor(cfg.model, layers, hw, tile, keep, comp or (), early or ())
        costs.append(budget.seconds_per_step(flops, throughput)
                     * budget.LOSS_COST.get(cfg.style_loss, 1.0))
    return costs


def plan_memory(cfg: Config, layers, content_layers, plan, aspect_hw, precision, device,
                style_hws) -> dict:
    """The memory plan of a run (see ``estimate.plan_memory``) within ``--max-memory``, or
    by default within 90% of the memory free on the device."""
    from . import estimate
    from .config import parse_bytes
    if cfg.max_memory is not None:
        budget = parse_bytes(cfg.max_memory)
    else:
        free = estimate.available_bytes(device)
        budget = None if free is None else 0.9 * free
    history = cfg.history_size if cfg.optimizer == "lbfgs" else 0
    if not layers:
        return {"tiles": [None] * len(plan), "keep": [None] * len(plan),
                "compact": [None] * len(plan), "early": [None] * len(plan),
                "reuse": [False] * len(plan), "history": history,
                "peak_bytes": 0.0,
                "budget_bytes": budget}
    memory = estimate.plan_memory(cfg.model, layers, content_layers, plan, aspect_hw, precision,
                                  budget, history, cfg.tile, style_hws,
                                  largest=estimate.CPU_TILE if device.type == "cpu" else None,
                                  reuse=cfg.reuse_memory if device.type == "cpu" else "off")
    if cfg.optimizer != "lbfgs":
        memory["history"] = cfg.history_size
    return {**memory, "budget_bytes": budget}
