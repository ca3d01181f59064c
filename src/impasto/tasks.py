"""The tasks: style transfer, content reconstruction and texture synthesis, on one engine.

The core takes and returns tensors (RGB, (1,3,H,W), [0,1]); it never reads files or options
from the command line.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import backbones, color, image as imageio, precision as precisions
from .config import INITS, Config
from .errors import UserError
from .losses import Objective
from .optimize import Outcome, Settings, minimise
from .planning import (budget_plan, deep_copy_side, deep_style_layers,  # noqa: F401
                       plan_memory, setup_costs, step_costs, style_region, time_plan)
from .allocator import one_arena, reusing_freed_memory
from .tiled import TiledObjective


@dataclass
class Result:
    """What a run gives back."""
    tensor: torch.Tensor      # (1, 3, H, W) in [0, 1], on the CPU
    config: Config            # the options used, with the seed filled in
    task: str
    outcome: Outcome
    weights_id: str
    device: str
    timings: dict = field(default_factory=dict)
    precision: str = "fp32"   # what --precision resolved to
    schedule: list = field(default_factory=list)  # [long side, steps] per scale, coarsest first
    memory: dict = field(default_factory=dict)    # tiles per scale (None: whole), L-BFGS history

    @property
    def image(self):
        """The result as a PIL image."""
        return imageio.to_pil(self.tensor)

    @property
    def history(self):
        return self.outcome.history


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"option --device: unknown device '{name}' (use auto, cpu, cuda, cuda:N "
                        "or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("option --device: cuda asked for, but no CUDA device is available "
                        "(use --device cpu or auto)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None)
                                  and torch.backends.mps.is_available()):
        raise UserError("option --device: mps asked for, but it is not available (use --device "
                        "cpu or auto)")
    return dev


@functools.lru_cache(maxsize=4)
def _backbone(model, last, pooling, weights, device, precision):
    net, weights_id = backbones.build(model, [last], pooling, weights, device)
    return net.set_precision(precisions.DTYPES[precision]), weights_id


def get_backbone(cfg: Config, layers, device, precision="fp32"):
    """The backbone truncated after the deepest of ``layers`` (memoised for repeated runs)."""
    backbones.check_layers(cfg.model, layers)
    return _backbone(cfg.model, backbones.deepest(cfg.model, layers), cfg.pooling, cfg.weights,
                     str(device), precision)


def used_layers(cfg: Config, task: str, has_content: bool, has_style: bool) -> list:
    layers = []
    if has_content and cfg.content_weight > 0:
        backbones.check_layers(cfg.model, cfg.content_layers, "content-layers")
        layers += cfg.content_layers
    if has_style and cfg.style_weight > 0:
        backbones.check_layers(cfg.model, cfg.style_layers, "style-layers")
        layers += cfg.style_layers
    return layers


def _noise(kind: str, shape, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        return (0.5 + 0.15 * torch.randn(shape, generator=gen)).clamp(0, 1)
    return torch.rand(shape, generator=gen)


def initial_image(init, shape, seed, content=None, style=None) -> torch.Tensor:
    """The start image: ``init`` is content, style, gaussian, uniform, or an image tensor."""
    h, w = shape[-2:]
    if not isinstance(init, str):  # an image: a tensor, or a PIL image (the CLI's --init FILE)
        return imageio.resize(imageio.to_tensor(init), (h, w))
    if init == "content":
        if content is None:
            raise UserError("option --init: 'content' needs a content image")
        return content.clone()
    if init == "style":
        if style is None:
            raise UserError("option --init: 'style' needs a style image")
        return imageio.resize(style, (h, w))
    if init in ("gaussian", "uniform"):
        return _noise(init, (1, 3, h, w), seed)
    raise UserError(f"option --init: '{init}' is not one of {', '.join(INITS)} or an image file")


def check_size(hw: tuple, need: int, what: str, deepest: str):
    h, w = hw
    if min(h, w) < need:
        raise UserError(f"{what} is {w}x{h} px at this --size; layer {deepest} needs at least "
                        f"{need} px on the short side: use a larger --size or --style-scale, or "
                        "shallower layers")


COARSEST = 128   # the auto schedule starts near this long side (pixels)
MAX_SCALES = 5


def schedule(size: int, steps: int, scales: int | None = None) -> list[tuple[int, int]]:
    """The coarse-to-fine plan: a list of (long side, steps), coarsest first.

    Each scale doubles the long side of the one before and ends at ``size``. ``scales=None``
    picks as many as fit above ~128 px (512 px -> 128, 256, 512). The ``steps`` are split so
    that each scale gets 1.5x the steps of the next finer one (2.25:1.5:1 for three scales):
    a coarse step costs a quarter of the next finer one, and coarse steps settle the large
    structure that would otherwise cost many full-size steps, while the full size keeps
    enough steps (about a fifth of the budget for three scales) to restore fine detail.
    ``scales=1`` puts every step at full size.
    """
    if scales is None:
        scales = 1
        while scales < MAX_SCALES and size / 2 ** scales >= COARSEST * 0.75:
            scales += 1
    sides = [max(1, round(size / 2 ** (scales - 1 - k))) for k in range(scales)]
    weights = [1.5 ** (scales - 1 - k) for k in range(scales)]
    counts = [int(steps * w / sum(weights)) for w in weights]
    counts[-1] += steps - sum(counts)
    return list(zip(sides, counts))


def _merge(outcomes: list) -> Outcome:
    last = outcomes[-1]
    history = [h for o in outcomes for h in o.history]
    return Outcome(last.image, last.loss, sum(o.steps for o in outcomes),
                   sum(o.evaluations for o in outcomes), last.stop_reason, history, last.terms)


def _prepare(cfg: Config, content, styles, regions):
    """Source tensors after the colour options: (content, regions as [(mask, styles, blend)],
    the image whose chroma the result takes, or None)."""
    content_t = imageio.to_tensor(content) if content is not None else None
    if regions is None:
        regions = [(None, list(styles), cfg.style_blend)] if styles else []
    regions = [(None if m is None else _mask_tensor(m), [imageio.to_tensor(x) for x in ss], b)
               for m, ss, b in regions]
    chroma = None
    if content_t is not None and cfg.color_from == "style":
        first = next((ss[0] for _, ss, _ in regions if ss), None)
        if first is not None:
            content_t = color.match_statistics(content_t, first)
    if content_t is not None and cfg.preserve_color == "histogram":
        regions = [(m, [color.match_statistics(x, content_t) for x in ss], b) for m, ss, b in regions]
    if content_t is not None and cfg.preserve_color == "luminance":
        chroma = content_t
        content_t = color.luminance(content_t)
        regions = [(m, [color.match_luminance(color.luminance(x), content_t) for x in ss], b)
                   for m, ss, b in regions]
    return content_t, regions, chroma


def _mask_tensor(mask) -> torch.Tensor:
    t = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(mask)
    t = t.float()
    while t.dim() < 4:
        t = t.unsqueeze(0)
    return t


def new_seed() -> int:
    """A fresh random seed (what a run records when none was given)."""
    return int.from_bytes(os.urandom(4), "little")


def run(task: str, cfg: Config, content=None, styles=(), init_image=None, callback=None,
        regions=None, on_plan=None, temporal=None, should_stop=None, started=None) -> Result:
    """Run ``task`` with ``cfg``. ``content``/``styles`` are images (tensors or PIL).

    ``init_image`` replaces ``cfg.init`` when given (an image read by the caller).
    ``regions`` replaces ``styles`` for region-wise stylisation: a list of (mask, styles,
    blend), the mask (H, W) weights in [0, 1] with the content's aspect ratio, ``styles`` a list
    of images (empty: that region keeps the content only), ``blend`` their weights or None.

    ``on_plan(info)``, when given, is called once before the first step with the schedule, the
    output size and an estimate of peak memory and time (see ``impasto.estimate``).

    The run goes coarse to fine (see ``schedule``): at each scale the content, style images and
    masks are resized with the output, so the style's stroke size relative to the image stays
    the same, and the result is upsampled to start the next scale.

    ``should_stop()``, when given, is asked before every step; once it is true the run ends as
    "interrupted" with the best image so far (a Stop button, the CLI's Ctrl-C handler).

    ``started`` (a ``time.perf_counter()`` value, default: now) is when the budget of
    ``cfg.time`` began: a front end passes its process's start, so start-up counts.

    ``temporal`` (video): (warped previous output, consistency weights (1, 1, H, W), weight)
    adds ``weight · temporal_loss`` (see ``impasto.video``), resized with each scale.
    """
    t0 = time.perf_counter()
    cfg = cfg.with_model_layers()
    cfg.validate(task)
    if cfg.seed is None:
        cfg = cfg.replace(seed=new_seed())
    if task in ("transfer", "reconstruct") and content is None:
        raise UserError(f"{task} needs a content image")
    if task in ("transfer", "texture") and not styles and not regions:
        raise UserError(f"{task} needs a style image")
    if cfg.style_blend is not None and regions is None and len(cfg.style_blend) != len(styles):
        raise UserError(f"option --style-blend: gives {len(cfg.style_blend)} weights for "
                        f"{len(styles)} style images: give one weight per style image")
    device = resolve_device(cfg.device)
    precision = precisions.resolve(cfg.precision, device)
    if device.type == "cpu" and cfg.reuse_memory != "off":
        one_arena()             # before torch's worker threads first allocate
    torch.manual_seed(cfg.seed)

    content_src, region_srcs, chroma_src = _prepare(cfg, content, styles, regions)
    all_styles = [x for _, ss, _ in region_srcs for x in ss]
    aspect_src = content_src if content_src is not None else all_styles[0]
    plan = schedule(cfg.size, cfg.steps, cfg.scales)

    layers = used_layers(cfg, task, content_src is not None, bool(all_styles))
    need = backbones.min_side(cfg.model, layers) if layers else 1
    deepest = backbones.deepest(cfg.model, layers) if layers else None

    def style_side(long_side):
        return cfg.style_sides(long_side)[0]

    deep_layers = deep_style_layers(cfg) if layers and all_styles else []


    def images_at(long_side):
        hw = imageio.fit_size(*aspect_src.shape[-2:], long_side)
        c = imageio.resize(content_src, hw) if content_src is not None else None
        regs = [style_region(cfg, None if m is None else F.interpolate(
                    m, size=hw, mode="bilinear", align_corners=False), ss, b, long_side,
                    deep_layers)
                for m, ss, b in region_srcs]
        return hw, c, regs

    # Every scale must be large enough for the deepest layer; the full size is checked first so
    # that the message speaks of what the user asked for.
    for i, (side, _) in enumerate(reversed(plan) if layers else []):
        where = "" if i == 0 else f" (at the coarsest of --scales {len(plan)})"
        check_size(imageio.fit_size(*aspect_src.shape[-2:], side), need,
                   "the output image" + where, deepest)
        for j, st in enumerate(all_styles):
            check_size(imageio.fit_size(*st.shape[-2:], style_side(side)), need,
                       (f"style image {j + 1}" if len(all_styles) > 1 else "the style image")
                       + where, deepest)
    net, weights_id = get_backbone(cfg, layers, device, precision) if layers else (None, "none")
    style_hws = [imageio.fit_size(*st.shape[-2:], side) for st in all_styles
                 for side in (style_side(cfg.size), deep_copy_side(cfg, cfg.size, deep_layers))
                 if side]
    content_layers = cfg.content_layers if content_src is not None and cfg.content_weight > 0 \
        else []
    memory = plan_memory(cfg, layers, content_layers, plan, aspect_src.shape[-2:], precision,
                         device, style_hws)
    deadline, throughput, costs, setup, lowered = None, None, None, None, None
    if cfg.time is not None and layers:
        from . import budget, estimate      # measured cheaply, at the coarsest scale, once
        side = min(192, plan[0][0])
        throughput = estimate.measure_throughput(net, deepest, device, side=side, repeats=2)
        asked = cfg.deep_style_scale    # a short budget affords a smaller enlarged painting
        cfg, deadline, costs, setup, plan = budget_plan(
            cfg, plan, aspect_src.shape[-2:], layers, memory, all_styles, deep_layers, deepest,
            throughput, t0 if started is None else started)
        lowered = cfg.deep_style_scale if cfg.deep_style_scale < asked else None
    if on_plan is not None and layers:
        from . import budget, estimate
        if throughput is None:      # what a step costs here: a quick measurement (~0.3 s)
            throughput = estimate.measure_throughput(net, deepest, device,
                                                     side=min(192, plan[0][0]), repeats=2)
        if costs is None:
            costs = step_costs(cfg, plan, aspect_src.shape[-2:], layers, memory, throughput)
        info = estimate.estimate(cfg.model, layers, plan, aspect_src.shape[-2:], precision,
                                 throughput, style_hws=style_hws, tiles=memory["tiles"],
                                 keep=memory["keep"], compact=memory["compact"],
                                 early=memory["early"])
        info["peak_bytes"] = memory["peak_bytes"]
        info["step_seconds"] = list(costs)
        if setup is None:
            setup = setup_costs(cfg, plan, all_styles, deep_layers, deepest, throughput)
        info["seconds"] = budget.plan_seconds(costs, [n for _, n in plan], setup)
        if deadline is not None:
            info["seconds"] = deadline - (t0 if started is None else started)
        on_plan({"schedule": plan, "output_hw": imageio.fit_size(*aspect_src.shape[-2:], cfg.size),
                 "precision": precision, "device": str(device),
                 "available_bytes": estimate.available_bytes(device), **info,
                 "tiles": memory["tiles"], "kept_from": _kept_from(cfg.model, layers, memory),
                 **dict(zip(("compact_tails", "tail_maps"),
                            _compact_tails(cfg.model, layers, memory))),
                 "reuse": memory["reuse"],
                 "history": memory["history"],
                 "budget_bytes": memory["budget_bytes"], "deep_style_scale": lowered})
    t_ready = time.perf_counter()

    settings = Settings.from_config(cfg)
    settings.history_size = memory["history"]
    outcomes, x, done, start = [], None, 0, time.perf_counter()
    # a budget may leave the finest scales without steps: the last scale that has some runs
    # to the deadline, and its picture is enlarged to the full size at the end
    end = max(k for k, (_, n) in enumerate(plan) if n > 0 or k == 0 or deadline is None) + 1
    last_k, prev_pixels = 0, 1      # the last scale run, and its pixel count (set below)
    for k, (side, steps) in enumerate(plan):
        if k >= end:                # a re-plan below left this scale no time
            break
        if deadline is not None:    # the time left, re-planned over the scales left
            from . import budget
            if outcomes:            # what the last scale's steps really cost corrects the rest
                costs = budget.corrected(costs, last_k, outcomes[-1].history)
            counts = budget.plan_steps(costs[k:end], deadline - time.perf_counter(),
                                       max(1, cfg.steps - done), setup[k:end])
            steps, end = counts[0], end if any(counts[1:]) else k + 1   # none left after it
            if k == end - 1:
                steps = max(1, cfg.steps - done)       # the deadline ends the last scale
            elif steps == 0:
                continue            # no time for this scale: not even its targets
        hw, c, regs = images_at(side)
        first_style = next((r.styles[0] for r in regs if r.styles), None)
        if x is None:
            x = initial_image(init_image if init_image is not None else cfg.init, (1, 3, *hw),
                              cfg.seed, c, first_style)
        else:
            x = imageio.resize(x, hw)
        for r in regs:
            r.styles = [st.to(device) for st in r.styles]
            r.deep_styles = r.deep_styles and [st.to(device) for st in r.deep_styles]
            r.mask = None if r.mask is None else r.mask.to(device)
        tile = memory["tiles"][k]
        make = Objective if tile is None else functools.partial(
            TiledObjective, tile=tile, keep_from=memory["keep"][k],
            compact=memory["compact"][k] or (), early=memory["early"][k] or ())
        objective = make(
            net, content=None if c is None else c.to(device), regions=regs,
            content_layers=cfg.content_layers, content_layer_weights=cfg.content_layer_weights,
            style_layers=cfg.style_layers, style_layer_weights=cfg.style_layer_weights,
            style_stat=cfg.style_loss, content_weight=cfg.content_weight,
            style_weight=cfg.style_weight, tv_weight=cfg.tv_weight, tv_norm=cfg.tv_norm,
            **_temporal_at(temporal, hw, device))
        settings.steps = steps
        # L-BFGS starts each finer scale from the last scale's curvature scale (the loss terms
        # are means over positions, so the inverse Hessian grows with the pixel count) rather
        # than with a tiny first step: 4.5% lower loss in the same 40 steps at 384 px
        curvature = None
        if outcomes and outcomes[-1].curvature > 0:
            curvature = outcomes[-1].curvature * hw[0] * hw[1] / prev_pixels
        # torch.optim.LBFGS (--line-search) allocates its own vectors: they would sit in the
        # holes of a tile heap kept between evaluations, so it is handed back after each
        with reusing_freed_memory(memory["reuse"][k], tiled=memory["tiles"][k] is not None,
                                  between=not (cfg.optimizer == "lbfgs" and cfg.line_search)):
            outcome = minimise(x.to(device), objective, settings, term_names=objective.terms,
                               callback=_at_scale(callback, k, side), step_offset=done,
                               total_steps=sum(n for _, n in plan),
                               start=start, should_stop=should_stop,
                               deadline=deadline, curvature=curvature)
        prev_pixels = hw[0] * hw[1]
        for h in outcome.history:
            h["side"] = side
        outcomes.append(outcome)
        last_k = k
        done += outcome.steps
        x = outcome.image.detach().clamp(0, 1).cpu()
        if outcome.stop_reason in ("interrupted", "non-finite"):
            break
    outcome = _merge(outcomes)
    out_hw = imageio.fit_size(*aspect_src.shape[-2:], cfg.size)
    outcome.image = imageio.resize(x, out_hw)
    if chroma_src is not None:
        outcome.image = color.combine_luminance(outcome.image, imageio.resize(chroma_src, out_hw))
    t_end = time.perf_counter()
    timings = {"setup_s": round(t_ready - t0, 3), "optimise_s": round(t_end - t_ready, 3),
               "total_s": round(t_end - t0, 3)}
    return Result(outcome.image, cfg, task, outcome, weights_id, str(device), timings, precision,
                  [list(p) for p in plan],
                  {k: memory[k] for k in ("tiles", "keep", "compact", "early", "reuse",
                                          "history")})


def _kept_from(model, layers, memory) -> list:
    """Per scale, the first layer whose tiles keep their graphs (see ``tiled``), or None."""
    from .tile_geometry import stages
    sts = stages(model, layers) if any(memory["tiles"]) else []
    return [sts[k].names[0] if t and k is not None and k < len(sts) else None
            for t, k in zip(memory["tiles"], memory["keep"])]


def _compact_tails(model, layers, memory) -> tuple:
    """Per scale, the tails kept compact (see ``compact``), as "first-last" layer names, and
    the layers read in the early ones, whose maps are kept whole."""
    from .tile_geometry import cut_of, stages
    sts = stages(model, layers) if any(memory["tiles"]) else []
    tails, maps = [], []
    for t, c, e in zip(memory["tiles"], memory["compact"], memory["early"]):
        tails.append([]), maps.append([])
        for k in (c or ()) if t else ():
            st = sts[k]
            cut = cut_of(st, set(layers), k in (e or ()))
            tails[-1].append(f"{st.names[cut]}-{st.names[-1]}")
            maps[-1] += [n for n in st.names[cut:] if n in layers]
    return tails, maps


def _at_scale(callback, index, side):
    """``callback`` with each Step told which coarse-to-fine scale it belongs to."""
    if callback is None:
        return None

    def cb(s):
        s.scale, s.side = index, side
        callback(s)
    return cb


def _temporal_at(temporal, hw, device) -> dict:
    """The Objective's temporal arguments at one scale (video frames after the first)."""
    if temporal is None:
        return {}
    warped, weights, weight = temporal
    warped = imageio.resize(warped, hw).to(device)
    if tuple(weights.shape[-2:]) != tuple(hw):
        weights = F.interpolate(weights.float(), size=hw, mode="area" if weights.shape[-1] > hw[1]
                                else "bilinear", **({} if weights.shape[-1] > hw[1]
                                                    else {"align_corners": False}))
    return {"temporal": (warped, weights.to(device)), "temporal_weight": weight}
