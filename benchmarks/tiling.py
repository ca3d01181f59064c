"""One evaluation (loss and gradient) of the default objective, untiled against tiled with
each stage's graph recomputed or kept from the statistics pass, at one size, in one run.
Run by hand: `python benchmarks/tiling.py [--size 1024] [--tiles 384] [--keep 4,2,1,0]`.

Each configuration runs in its own process (peak RSS of that process alone): a warm-up
evaluation, then the median of ``--repeats`` timed ones at the same random image. "of
calibrated" is the share of the machine's VGG19 rate (benchmarks/speed.py's calibration, in
this run) that one evaluation reaches, counting the FLOPs of one untiled evaluation; "work"
is what tile_geometry.work_factor says the configuration computes against an untiled one, and
"for its work" the rate on what it computes. --no-untiled skips the untiled evaluation where
its network does not fit (4096 px).
"keep K" keeps the graphs of the stages from K on (0: every stage, 4: none, the old way);
"K/12" also keeps the tails of stages 1 and 2 compact (see impasto.compact), so only their
heads are recomputed; "K/012/2" starts stage 2's tail early (tile_geometry.early_cut: the maps
it reads kept whole, nothing of it recomputed).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def one(args):
    """Time one configuration in this process; print a JSON line."""
    import torch
    from impasto import allocator, tiled
    from impasto.losses import Objective
    from large import objective_args
    on = args.reuse_memory == "on"
    if on:      # as a run's steps do (--reuse-memory on, or auto where the budget has room)
        allocator.one_arena()
    torch.manual_seed(0)
    net, kw, hw = objective_args(args, args.size)
    if args.one == "untiled":
        obj = Objective(net, **kw)
    else:
        tile, keep, comp, early = parse(args.one)
        obj = tiled.TiledObjective(net, tile=tile, keep_from=keep, compact=comp, early=early,
                                   **kw)
    x = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(0))
    # as a run's steps do: a tiled scale keeps its heap for the tiles only (allocator.tile_heap)
    with allocator.reusing_freed_memory(on, tiled=args.one != "untiled"):
        times, loss, grad = evaluate(obj, x, args.repeats + 1)
    print(json.dumps({"hw": hw, "seconds": statistics.median(times[1:]), "loss": loss,
                      "grad": grad}))


def evaluate(obj, x, n):
    """``n`` evaluations (loss and gradient) of ``obj`` at ``x``: (their times, the last
    loss, the sum of the last gradient's magnitudes)."""
    times = []
    for _ in range(n):
        xi = x.clone().requires_grad_(True)
        t = time.perf_counter()
        total = obj(xi)[0]
        total.backward()
        times.append(time.perf_counter() - t)
    return times, total.item(), float(xi.grad.abs().sum())


def parse(config):
    """"TILE:KEEP", "TILE:KEEP/STAGES" (the recomputed stages whose tails are kept compact,
    as digits: "384:3/12") or "TILE:KEEP/STAGES/EARLY" (those of them whose tails start
    early) -> (tile, keep_from, compact stages, early stages)."""
    tile, rest = config.split(":")
    keep, comp, early = (rest.split("/") + ["", ""])[:3]
    return (int(tile), int(keep), tuple(int(c) for c in comp),
            tuple(int(c) for c in early))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--content", default="examples/tubingen.jpg")
    p.add_argument("--style", default="examples/starry_night.jpg")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--tiles", default="384", help="tile sizes, comma-separated")
    p.add_argument("--keep", default="4,2,1,0",
                   help="keep_from values, comma-separated; K/STAGES also keeps the tails of "
                        "those recomputed stages compact (3/12: stages 1 and 2); K/STAGES/EARLY "
                        "starts those tails early (3/012/2)")
    p.add_argument("--precision", default="fp32", help="fp32, bf16, fp16 or auto")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--reuse-memory", choices=("on", "off"), default="on",
                   help="evaluate with freed memory reused, as a run's steps do where the "
                        "budget has room (impasto's --reuse-memory; default on)")
    p.add_argument("--no-untiled", action="store_true",
                   help="skip the untiled evaluation (at sizes whose network does not fit)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.one:
        return one(args)
    from speed import calibrate
    import torch
    from impasto import Config, allocator, estimate, precision as precisions, tile_geometry
    args.precision = precisions.resolve(args.precision, torch.device("cpu"))  # "auto" too
    on = args.reuse_memory == "on"
    if on:
        allocator.one_arena()
    with allocator.reusing_freed_memory(on):
        calib = calibrate((384, 512), precisions=(args.precision,))[args.precision]
    layers = Config().with_model_layers()
    layers = layers.content_layers + layers.style_layers
    configs = ([] if args.no_untiled else ["untiled"]) + [f"{t}:{k}" for t in args.tiles.split(",")
                             for k in args.keep.split(",")]
    rows = []
    for c in configs:
        cmd = [sys.executable, __file__, "--one", c, "--size", str(args.size), "--content",
               args.content, "--style", args.style, "--precision", args.precision,
               "--reuse-memory", args.reuse_memory,
               "--repeats", str(args.repeats)]
        proc = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            rows.append((c, None, proc.stderr.strip().splitlines()[-1]))
            continue
        out = proc.stdout.strip().splitlines()
        rows.append((c, json.loads(out[-2]), int(out[-1]) / 1024))
        print(f"done {c}", file=sys.stderr, flush=True)
    base = next((r[1] for r in rows if r[0] == "untiled" and r[1]), None)
    hw = (base or next(r[1] for r in rows if r[1]))["hw"]
    flops = estimate.step_flops("vgg19", "relu5_1", hw)
    lines = [f"{args.size} px ({hw[1]}x{hw[0]}), {args.precision}, one evaluation (median of "
             f"{args.repeats}); {args.content} / {args.style}; --reuse-memory {args.reuse_memory}; "
             "calibrated VGG19 rate "
             f"{calib / 1e9:.1f} GFLOP/s (512x384)", "",
             "| evaluation | work | s | of calibrated | for its work | against untiled | "
             "loss differs | peak RSS MiB |", "|---|---|---|---|---|---|---|---|"]
    for c, r, peak in rows:
        if r is None:
            lines.append(f"| {c} | error: {peak} | | | | | | |")
            continue
        if c == "untiled":
            name, work = "untiled", 1.0
        else:
            t, k, comp, early = parse(c)
            name = f"tiles of {t} px, graphs kept from stage {k}" + (
                f", tails of stages {'/'.join(map(str, comp))} kept compact" if comp else "") + (
                f" ({'/'.join(map(str, early))} from their start)" if early else "")
            work = tile_geometry.work_factor("vgg19", layers, hw, t, k, comp, early)
        speedup = f"{base['seconds'] / r['seconds']:.2f}x" if base else ""
        diff = f"{abs(r['loss'] - base['loss']) / abs(base['loss']):.1e}" if base else ""
        share = flops / r["seconds"] / calib
        lines.append(f"| {name} | {work:.2f} | {r['seconds']:.2f} | {share:.0%} | "
                     f"{share * work:.0%} | {speedup} | {diff} | {peak:.0f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
