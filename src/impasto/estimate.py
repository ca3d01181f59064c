"""Before a large run starts: how much memory and time it will take.

Time: the convolution FLOPs of every step in the coarse-to-fine plan (forward, plus the same
again for the gradient with respect to the image), divided by the throughput this device
reaches on the same network, measured with a short timed run at start-up.
Memory: the activations of every layer up to the deepest one at the largest scale, times the
bytes autograd and the losses keep per activation, plus a fixed base (torch, weights, images).
Both constants are fitted to the peak RSS benchmarks/speed.py measured here (AMD EPYC, torch
2.13 CPU: 947 and 2164 MiB in bf16, 1094 and 2799 MiB in fp32, at 512 and 1024 px).
"""
from __future__ import annotations

import time

import torch

from . import backbones, image as imageio, tile_geometry

BASE_BYTES = 0.55 * 2**30                      # interpreter, torch, weights, images
BYTES_PER_ACTIVATION = {"fp32": 5.0, "bf16": 3.5, "fp16": 3.5}   # fitted, see above
VALUE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0}   # one value of a map in the network's dtype


def _layer_plan(model, deepest):
    """(kind, channels, downsample factor) for every layer up to ``deepest``."""
    names = backbones.layers(model)
    out, ch, down = [], 3, 1
    for name in names[: names.index(deepest) + 1]:
        if name.startswith("conv"):
            cin, ch = ch, backbones.vgg.channels(name)
            out.append(("conv", cin, ch, down))
        elif name.startswith("pool"):
            down *= 2
            out.append(("pool", ch, ch, down))
        else:
            out.append(("relu", ch, ch, down))
    return out


def step_flops(model, deepest, hw) -> float:
    """Convolution FLOPs of one step: forward and gradient w.r.t. the input (2x forward)."""
    h, w = hw
    if not backbones.spec(model).is_vgg:   # a shape-only dry run of the torchvision network
        return 2.0 * backbones.profile(model, deepest, (h, w))[0]
    fwd = sum(2 * cin * cout * 9 * (h // d) * (w // d)
              for kind, cin, cout, d in _layer_plan(model, deepest) if kind == "conv")
    return 2.0 * fwd


def activation_elements(model, deepest, hw) -> float:
    h, w = hw
    if not backbones.spec(model).is_vgg:   # every module's output; the constants were fitted
        return backbones.profile(model, deepest, (h, w))[1]   # on VGG19 only
    return float(sum(cout * (h // d) * (w // d) for _, _, cout, d in _layer_plan(model, deepest)))


def measure_throughput(net, deepest, device, side=192, repeats=2) -> float:
    """FLOP/s of one forward + input-gradient pass at ``side`` px on this device: the fastest
    of ``repeats`` timed passes after a warm-up one, so that one pass slowed by something else
    on the machine does not slow every estimate made from it."""
    x = torch.rand(1, 3, side, side, device=device, requires_grad=True)

    def once():
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        f = net.features(x, [deepest])[deepest]
        f.float().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t
    once()
    seconds = min(once() for _ in range(max(1, repeats)))
    model = getattr(net, "model", None) or ("vgg16" if net.arch == "vgg16" else "vgg19")
    return step_flops(model, deepest, (side, side)) / max(seconds, 1e-9)


def estimate(model, layers, plan, aspect_hw, precision, throughput=None, style_hws=(),
             tiles=None, keep=None, compact=None, early=None) -> dict:
    """Peak memory (bytes) and time (seconds, when ``throughput`` is given) of a run.

    ``style_hws``: the style images' sizes at full scale (``--size`` x ``--style-scale``). Their
    targets are computed once, without autograd: every activation is held at most once, in the
    network's dtype, so a style image much larger than the output can set the peak."""
    deepest = backbones.deepest(model, layers)
    peak_hw = imageio.fit_size(*aspect_hw, max(side for side, _ in plan))
    peak = BASE_BYTES + BYTES_PER_ACTIVATION[precision] * activation_elements(model, deepest,
                                                                               peak_hw)
    value_bytes = VALUE_BYTES[precision]
    for hw in style_hws:
        peak = max(peak, BASE_BYTES + value_bytes * activation_elements(model, deepest, hw))
    tiles = tiles or [None] * len(plan)
    flops = 0.0
    for (side, n), tile, k, c, e in zip(plan, tiles, keep or [None] * len(plan),
                                        compact or [None] * len(plan),
                                        early or [None] * len(plan)):
        hw = imageio.fit_size(*aspect_hw, side)
        extra = tile_geometry.work_factor(model, layers, hw, tile, k, c or (), e or ()) \
            if tile else 1.0
        flops += n * step_flops(model, deepest, hw) * extra
    return {"peak_bytes": peak, "flops": flops,
            "seconds": flops / throughput if throughput else None}


def history_bytes(hw, history: int) -> float:
    """L-BFGS keeps two image-sized float32 vectors per history entry once it fills."""
    return 4.0 * 3 * hw[0] * hw[1] * 2 * history


def content_elements(model, content_layers, hw) -> float:
    """The content targets' elements: one feature map per content layer at its stride."""
    out = 0.0
    if not backbones.spec(model).is_vgg:
        return out
    for name in content_layers:
        s = backbones.stride(model, name)
        out += _channels(model, name) * (hw[0] // s) * (hw[1] // s)
    return out


def _channels(model, name) -> int:
    deepest_plan = _layer_plan(model, name)
    return deepest_plan[-1][2]


def tiled_bytes(model, layers, hw, tile, precision, content_elems) -> float:
    """Peak memory of one tiled scale: the network's first stage on one tile with its margins
    (the later stages' tiles hold no more), the whole maps the stages keep between them (in
    the network's dtype, their gradients in float32), the content targets (in the network's
    dtype), plus the image-sized float32 tensors every step keeps (image, gradient, best
    image, the optimiser's own vectors)."""
    return (BASE_BYTES + TILED_BASE + _first_tile_bytes(model, layers, hw, tile, precision)
            + _image_bytes(model, layers, hw, content_elems, precision))


def _first_tile_bytes(model, layers, hw, tile, precision) -> float:
    """The network's first stage on one tile with its margins, with its graph."""
    first = tile_geometry.stages(model, layers)[0]
    return BYTES_PER_ACTIVATION[precision] * activation_elements(
        model, first.names[-1], _window(first.geom, hw, tile))


# Fitted on an AMD EPYC Zen 4, torch 2.13, bf16, tiles of 384 px with no graph kept, to the
# peak RSS of one tiled evaluation (benchmarks/tiling.py: 1522 MiB at 2048x1536, 3212 at
# 4096x3072) and of runs of the CLI (4096x3072 within 6G: 4472 MiB after 6 steps, 4861 over a
# converged coarse-to-fine run; 2048x1536 within 3G: 2888 MiB over 40 steps):
# - what a tiled scale holds whatever the image's size, beyond BASE_BYTES and the first
#   stage's tile: 0.94 GiB less those two;
# - the image-sized float32 tensors alive at its peak: 8 in the evaluation (the image, its
#   gradient and the backward pass's, TV's copies and their gradients), and up to 8 more in
#   the optimiser over a converged run (best image, L-BFGS's gradient, previous gradient,
#   direction and two-loop vector), the history aside.
# The count was 20, with the maps and content targets counted in float32: 5.9 GiB estimated
# at 4096x3072 within 6G where 4.4-4.75 were measured.
TILED_BASE = 0.18 * 2**30
IMAGE_TENSORS = 16


def _image_bytes(model, layers, hw, content_elems, precision) -> float:
    """What a tiled scale keeps whatever the tile: image-sized tensors, the content targets
    and the stages' whole maps with their gradients."""
    value = VALUE_BYTES[precision]
    maps, grads = tile_geometry.kept_elements(model, layers, hw)
    return 4.0 * (3 * hw[0] * hw[1] * IMAGE_TENSORS + grads) + value * (content_elems + maps)


# Tiles larger than this run slower per pixel on a CPU: their first block's maps (64 channels)
# outgrow the caches. Measured on an AMD EPYC Zen 3 at 2048x1536: one tiled evaluation took
# 83 s in tiles of 352 px and 105 s in tiles of 512 (1024x768: 18.6 s at 352, 19.8 at 256).
CPU_TILE = 384


# The L-BFGS history a tiled scale keeps before the earlier stages' graphs take what the budget
# leaves (then the history grows into what is left, up to --history): below about 20 entries
# L-BFGS loses more per step than the kept graphs gain.
HISTORY_FLOOR = 20


# The L-BFGS history a tiled scale keeps before the recomputed stages' compact tails (and
# then their early starts) take what the budget leaves: with fewer than two entries L-BFGS is
# close to gradient descent.
HISTORY_BEFORE_TAILS = 2


# Steps that keep freed memory in the heap (``allocator.reusing_freed_memory``) hold their
# activations' holes too. Fitted: one evaluation at 2048x1536 peaked at 10.4 GiB with reuse
# against 7.4 without, 1.10x the model's count of its activations (1.05x at 1024x768).
REUSE_FACTOR = 1.25


def plan_memory(model, layers, content_layers, plan, aspect_hw, precision, budget,
                history: int, tile=None, style_hws=(), largest=None, reuse="off") -> dict:
    """Which scales of ``plan`` are evaluated in tiles, of what size, which of their stages
    keep their graphs from the statistics pass, and how much L-BFGS history fits, so that the
    run stays within ``budget`` bytes (None: no limit). A tile the budget chooses is at most
    ``largest`` px (``CPU_TILE`` on a CPU), a forced ``tile`` is kept.

    ``reuse`` ("auto", "on" or "off"): whether a scale's steps keep their freed memory for the
    next step (``allocator``); "auto" at the untiled scales where it fits in the budget after
    the history was chosen, so reuse never costs a tile or a shorter history. At a tiled
    scale, within its evaluations' passes only (``allocator.tile_heap``): reusing through the
    whole steps, the heap's holes grew from step to step, which no factor of one evaluation's
    activations bounds (a 4096x3072 tiled scale planned at 6.0 GiB rose 3.4 -> 6.1 GiB over
    its first six steps, and a converged run peaked at 7.0 GiB). On a CPU (``largest`` given)
    the budget's tile is the one, up to ``REUSE_TILE`` px where reuse fits, whose plan computes
    the least (``_tiled_plan``).

    Returns {"tiles": [tile px or None per scale], "keep": [the first stage whose graphs are
    kept, per tiled scale, else None], "compact": [the recomputed stages whose tails are kept
    compact, per tiled scale, else None], "early": [those of them whose tails start early,
    per tiled scale, else None], "reuse": [bool per scale], "history": entries,
    "peak_bytes": the estimated peak of the whole run}. Raises UserError when even the
    smallest tile does not fit, naming --max-memory."""
    from .errors import UserError
    deepest = backbones.deepest(model, layers)
    first = tile_geometry.stages(model, layers)[0] if backbones.spec(model).is_vgg else None
    geom = first.geom if first is not None else None
    full = max(side for side, _ in plan)
    hw_full = imageio.fit_size(*aspect_hw, full)
    hist = history
    if budget is not None and history:
        entry = max(1.0, history_bytes(hw_full, 1))
        if geom is not None:    # what the largest scale leaves in tiles of CPU_TILE px
            fixed = tiled_bytes(model, layers, hw_full, CPU_TILE, precision,
                                content_elements(model, content_layers, hw_full))
            # what spares recomputation comes before the history beyond HISTORY_BEFORE_TAILS
            # entries: the compact tails are small (0.33 GiB at 4096x3072) and spare most of
            # it, the early ones the rest
            used = recomputation(model, layers, hw_full, CPU_TILE, precision, budget - fixed
                                 - min(history, HISTORY_BEFORE_TAILS) * entry,
                                 budget - fixed - min(history, HISTORY_FLOOR) * entry)[-1]
            room = max(0.0, budget - fixed - used)
        else:                   # at most half of what the budget leaves above the base
            room = max(0.0, (budget - BASE_BYTES) / 2)
        hist = max(1, min(history, int(room // entry)))
    tiles, keeps, compacts, earlies, reuses, peak = [], [], [], [], [], 0.0
    value_bytes = VALUE_BYTES[precision]
    for side, _ in plan:
        hw = imageio.fit_size(*aspect_hw, side)
        act = BYTES_PER_ACTIVATION[precision] * activation_elements(model, deepest, hw)
        steps = BASE_BYTES + act + history_bytes(hw, hist)      # untiled
        targets = steps     # computed before the steps (without reuse), each style image's
        for shw in style_hws:
            targets = max(targets, BASE_BYTES + value_bytes * activation_elements(
                model, deepest, imageio.fit_size(*shw, round(max(shw) * side / full))))
        chosen = None
        if tile is not None and max(hw) > tile:
            chosen = tile
        elif budget is not None and targets > budget:
            chosen = _largest_tile(model, layers, hw, geom, precision, budget - history_bytes(
                hw, hist), content_elements(model, content_layers, hw), side)
        if chosen is not None and geom is None:
            raise UserError(f"option --max-memory: {model} at {side} px needs more than "
                            f"{_gib(budget)}, and tiled evaluation supports the VGG models only; "
                            "use a smaller --size or a larger --max-memory")
        if chosen is None:
            tiles.append(None)
            keeps.append(None)
            compacts.append(None)
            earlies.append(None)
            held = steps + (REUSE_FACTOR - 1) * act
            reuses.append(reuse == "on" or (reuse == "auto" and (budget is None
                                                                 or held <= budget)))
            peak = max(peak, targets, held if reuses[-1] else steps)
            continue
        args = (model, layers, content_layers, hw, precision, budget, history, hist, reuse)
        cands = ()
        if largest is not None:     # on a CPU: the heap reused, in larger tiles where it fits
            if tile is None:        # the budget's tile
                fits = chosen
                chosen = min(fits, _stride_floor(geom, largest))
                cands = range(chosen + geom.stride,
                              min(fits, _stride_floor(geom, REUSE_TILE)) + 1,
                              geom.stride * max(1, 64 // geom.stride))
            cands = (chosen, *cands)
        plans = [_tiled_plan(chosen, *args)]
        plans += [p for p in (_tiled_plan(t, *args, for_reuse=True) for t in cands)
                  if p["reuse"]]
        best = min(plans, key=lambda p: (round(p["work"], 3), p["tile"]))
        for out, key in ((tiles, "tile"), (keeps, "keep"), (compacts, "compact"),
                         (earlies, "early"), (reuses, "reuse")):
            out.append(best[key])
        peak = max(peak, best["peak"])
    return {"tiles": tiles, "keep": keeps, "compact": compacts, "early": earlies,
            "reuse": reuses, "history": hist, "peak_bytes": peak}


# Tiles up to this size where a tiled scale's steps reuse freed memory within their passes
# (``allocator.tile_heap``), if the budget has room, and the plan computes less with them
# (``_tiled_plan``'s work: margins against recomputation). Without reuse, ``CPU_TILE``: a larger
# tile's blocks are mapped and faulted in afresh at every tile. Measured at 2048x1536 (bf16,
# 2-core Zen 4, one evaluation, block 4's tail early), s with reuse: 16.0 at 384 px, 14.7 at 768.
REUSE_TILE = 768


def _stride_floor(geom, px):
    return max(geom.stride, px // geom.stride * geom.stride)


def _tiled_plan(tile, model, layers, content_layers, hw, precision, budget, history, hist,
                reuse, for_reuse=False) -> dict:
    """One tiled scale in tiles of ``tile`` px: what it keeps from its statistics pass
    (``recomputation``, in what the budget leaves, less the heap's holes ``for_reuse``),
    whether its steps reuse freed memory (``allocator.tile_heap``: "auto" where the budget has
    room for the holes), the work it computes against an untiled step, and its peak."""
    fixed = history_bytes(hw, hist) + tiled_bytes(
        model, layers, hw, tile, precision, content_elements(model, content_layers, hw))
    room = None if budget is None else budget - fixed
    first = _first_tile_bytes(model, layers, hw, tile, precision)
    if room is not None and for_reuse:
        room = (room - (REUSE_FACTOR - 1) * first) / REUSE_FACTOR
    # the earlier stages' graphs where the history, at this scale's entries, reaches its
    # floor beside them (at a coarser scale than the one it was sized at, sooner)
    graph_room = None if budget is None or for_reuse else room - max(
        0, min(history, HISTORY_FLOOR) - hist) * history_bytes(hw, 1)
    # with the heap reused, every tail that fits starts early (``REUSED_EARLY_GAIN``) and the
    # earlier stages keep no graphs: an early tail spares the same for less memory, and ran
    # faster than the graphs (66.5 s a 4096x3072 evaluation with block 3-4's graphs, 62.4
    # with block 4's early tail and 55.5 with every tail early, tiles of 708 px)
    k, c, e, graphs = recomputation(model, layers, hw, tile, precision, room, graph_room,
                                    REUSED_EARLY_GAIN if for_reuse else EARLY_MIN_GAIN)
    steps = fixed + graphs
    held = steps + (REUSE_FACTOR - 1) * (graphs + first)
    reused = reuse == "on" or (reuse == "auto" and (budget is None or held <= budget))
    return {"tile": tile, "keep": k, "compact": c, "early": e, "reuse": reused,
            "work": tile_geometry.work_factor(model, layers, hw, tile, k, c, e),
            "peak": held if reused else steps}


def _window(geom, hw, tile):
    """A first-stage tile's size with its margins, within the image."""
    side = tile + 2 * geom.margin
    return (min(hw[0], side), min(hw[1], side))


# What a kept tile graph holds per activation of the layer table (tile_geometry.graph_elements
# counts every conv, ReLU and pooling output): a fused conv + ReLU keeps one map for its two
# layers, a max pooling its int64 indices. Fitted to one tiled evaluation's peak RSS with graphs
# kept against none, on an AMD EPYC Zen 4 with torch 2.13: 1.3 bytes (bf16) and 2.4 (fp32) an
# activation with every stage's graph kept at 2048x1536; 0.5 and 1.15 with the later stages'
# at 4096x3072 (bf16), where the graphs' memory is reused by the backward pass.
GRAPH_BYTES = {"fp32": 2.7, "bf16": 1.5, "fp16": 1.5}


def graph_bytes(model, layers, hw, tile, precision, keep) -> float:
    """What the stages from ``keep`` on add to a tiled scale's peak with their graphs (see
    ``tiled``): their activations, less the first stage's tile with its graph, which
    ``tiled_bytes`` counts and which is only built once every kept graph has been freed (the
    first stage is never kept at a scale that needs tiles)."""
    graphs = GRAPH_BYTES[precision] * tile_geometry.graph_elements(model, layers, hw, tile, keep)
    if not graphs:
        return 0.0
    if keep == 0:
        return graphs
    return max(0.0, graphs - _first_tile_bytes(model, layers, hw, tile, precision))


def compact_from(model, layers, hw, tile, keep, room) -> tuple:
    """The stages, of those recomputed (before ``keep``, the last one aside), whose tails are
    kept compact (see ``compact``): the deepest first (their tails spare the most
    recomputation for their bytes) while they fit in ``room`` bytes (None: no limit)."""
    chosen, used = [], 0.0
    for k in reversed(range(min(keep, len(tile_geometry.stages(model, layers)) - 1))):
        b = tile_geometry.compact_bytes(model, layers, hw, tile, (k,))
        if room is None or used + b <= room:
            chosen.append(k)
            used += b
    return tuple(sorted(chosen))


# With the heap reused through a tiled evaluation's passes (``allocator.tile_heap``: the
# tails' maps and masks reuse the last evaluation's pages), every tail that fits starts early:
# at 4096x3072 in tiles of 708 px (bf16, 2-core Zen 4, one evaluation each), 55.5 s against
# 57.9 with block 4's alone.
REUSED_EARLY_GAIN = 0

# A tail starts early only where that spares this many multiply-adds per value its tail then
# passes over in addition (``tile_geometry.early_gain``). Measured at 4096x3072 (bf16, tiles of
# 384 px, 2-core AMD EPYC Zen 4, one evaluation each): block 4's early tail (1152) took 76.3 ->
# 70.2 s, every early tail (blocks 1-3 too: 230 and 384) 86.7 s, slower than none: their
# masks, codes and maps are at a quarter to full resolution, their heads' convolutions cheap.
EARLY_MIN_GAIN = 600


def early_from(model, layers, hw, tile, compact, precision, room,
               min_gain=EARLY_MIN_GAIN) -> tuple:
    """Of the ``compact`` stages, those whose tails start early (``tile_geometry.early_cut``:
    the maps the objective reads in them kept whole, in the network's dtype) where that pays
    (``min_gain``): the most recomputation spared per byte first, while they fit in ``room``
    bytes (None: no limit)."""
    value = VALUE_BYTES[precision]
    sts, wanted = tile_geometry.stages(model, layers), set(layers)
    compact = [k for k in compact if tile_geometry.early_gain(sts[k], wanted) >= min_gain]

    cost = {k: tile_geometry.compact_bytes(model, layers, hw, tile, (k,), (k,), value)
            - tile_geometry.compact_bytes(model, layers, hw, tile, (k,), (), value)
            for k in compact}
    spared = {k: tile_geometry.work_factor(model, layers, hw, tile, None, (k,))
              - tile_geometry.work_factor(model, layers, hw, tile, None, (k,), (k,))
              for k in compact}
    chosen, used = [], 0.0
    for k in sorted(compact, key=lambda k: spared[k] / max(cost[k], 1.0), reverse=True):
        if room is None or used + cost[k] <= room:
            chosen.append(k)
            used += cost[k]
    return tuple(sorted(chosen))


def recomputation(model, layers, hw, tile, precision, room, graph_room=None,
                  min_gain=EARLY_MIN_GAIN) -> tuple:
    """What a tiled scale keeps from its statistics pass to recompute less in its backward
    pass, and what that costs: (keep_from, compact, early, bytes). Within ``room`` bytes (None:
    no limit): the last stage's graph where it fits (conv5_1 and relu5_1: small), every other
    stage's tail kept compact, the deepest first (``compact_from``), then those tails started
    early where that pays (``early_from``). Within ``graph_room`` (None: never) the graphs of
    the earliest stages that fit are kept too, and those stages need no tail: an early tail
    spares what a graph spares for a third of its bytes (block 4 at 4096x3072 in bf16: 0.45
    GiB against 1.45), but where one does not pay (blocks 1-3) only a graph spares their
    heads' recomputation. Without a budget no graph is kept, every tail kept. ``min_gain``:
    see ``early_from``."""
    n = len(tile_geometry.stages(model, layers))
    value = VALUE_BYTES[precision]

    def keeping(keep, room):
        graphs = graph_bytes(model, layers, hw, tile, precision, keep) if keep < n else 0.0
        comp = compact_from(model, layers, hw, tile, keep,
                            None if room is None else room - graphs)
        tails = tile_geometry.compact_bytes(model, layers, hw, tile, comp, (), value)
        early = early_from(model, layers, hw, tile, comp, precision,
                           None if room is None else room - graphs - tails, min_gain)
        if early:
            tails = tile_geometry.compact_bytes(model, layers, hw, tile, comp, early, value)
        return keep, comp, early, graphs + tails
    last = n if room is None or graph_bytes(model, layers, hw, tile, precision, n - 1) > room \
        else n - 1
    if graph_room is not None:
        for k in range(last):
            if graph_bytes(model, layers, hw, tile, precision, k) <= graph_room:
                return keeping(k, room)
    return keeping(last, room)


def _largest_tile(model, layers, hw, geom, precision, budget, content_elems, side):
    from .errors import UserError
    if geom is None:
        return max(hw)          # reported by the caller
    t = -(-max(hw) // geom.stride) * geom.stride
    while t >= geom.stride:
        if tiled_bytes(model, layers, hw, t, precision, content_elems) <= budget:
            return t
        t -= geom.stride * max(1, t // (8 * geom.stride))
    raise UserError(f"option --max-memory: {_gib(budget)} is too little for {side} px even in "
                    f"tiles of {geom.stride} px with their {geom.margin} px margins; give a "
                    "larger --max-memory or a smaller --size")


def _gib(n) -> str:
    return f"{n / 2**30:.2f} GiB"


def available_bytes(device) -> float | None:
    """Free memory on ``device`` (MemAvailable on Linux for the CPU), or None if unknown."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return float(line.split()[1]) * 1024
        except OSError:
            pass
    return None
