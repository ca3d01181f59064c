"""Peak memory and time for large outputs, single-scale against coarse-to-fine, and tiled
print sizes within a memory budget, in one run.
Run by hand: `python benchmarks/large.py [--sizes 512,1024,2048] [--tiled 4096:6G] [--steps 10]`.

Each row is the real CLI in its own process (peak RSS of that process alone), next to the
estimate impasto prints before it starts, so the memory model can be checked too. s/step is the
median over the steps at full size; "of calibrated" is the share of the machine's VGG19 rate
(forward + input gradient to relu5_1, measured in this run by benchmarks/speed.py's
calibration, taken both with glibc's defaults and with freed memory reused, before the rows
and after them: each row against the mean of the two taken the way its full-size scale ran,
which the run record says) that one step reaches,
counting the FLOPs of one untiled step. A tiled step computes more: the statistics pass, the
stages whose graphs it could not keep run again in the backward pass, and their margins.
"work" is that factor (tile_geometry.work_factor for the plan's tile and kept stages), and
"for its work" the rate on what the step computes.

The exactness line compares the tiled objective with the untiled one (loss and gradient) at
--exact-size, the largest size where both fit.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def run(size, scales, steps, args, out_dir, budget=None):
    out = out_dir / f"large_{size}_{scales or 'auto'}{'_' + budget if budget else ''}.png"
    cmd = [sys.executable, "-m", "impasto", "transfer", args.content, args.style, "-o", str(out),
           "--size", str(size), "--steps", str(steps), "--seed", "0", "--precision",
           args.precision]
    if scales:
        cmd += ["--scales", str(scales)]
    if budget:
        cmd += ["--max-memory", budget]
    if args.reuse_memory:
        cmd += ["--reuse-memory", args.reuse_memory]
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        return {"size": size, "error": proc.stderr.strip().splitlines()[-1]}
    peak_mib = int(proc.stdout.strip().splitlines()[-1]) / 1024
    estimate = next((l for l in proc.stderr.splitlines() if "estimated peak memory" in l), "")
    rec = json.loads(out.with_suffix(".json").read_text())
    full = [h for h in rec["history"] if h["side"] == size]
    times = [b["time"] - a["time"] for a, b in zip(full, full[1:])]
    memory = rec.get("memory") or {}
    tiles = memory.get("tiles") or []
    top = len(rec["schedule"]) - 1     # the full-size scale: reuse and tiling as it ran
    reused = bool((memory.get("reuse") or [False] * (top + 1))[top])
    work = 1.0
    if tiles and tiles[top]:
        from impasto import tile_geometry
        w, h = map(int, rec_hw(out).split("x"))
        work = tile_geometry.work_factor("vgg19", default_layers(), (h, w), tiles[top],
                                         (memory.get("keep") or [None] * (top + 1))[top],
                                         (memory.get("compact") or [None] * (top + 1))[top]
                                         or (), (memory.get("early") or [None] * (top + 1))[top]
                                         or ())
    mode = "single-scale" if scales == 1 else "coarse-to-fine"
    if budget:
        mode += f", --max-memory {budget}, tiles " + "/".join(str(t or "-") for t in tiles)
        comp = (memory.get("compact") or [None] * (top + 1))[top]
        early = (memory.get("early") or [None] * (top + 1))[top]
        if comp:
            mode += ", tails of stages " + "/".join(map(str, comp)) + " kept compact"
        if early:
            mode += " (" + "/".join(map(str, early)) + " from their start)"
    return {"size": size, "mode": mode, "flops": step_flops(rec_hw(out)),
            "schedule": " + ".join(f"{n}@{s}" for s, n in rec["schedule"]),
            "wall": wall, "s_step": statistics.median(times) if times else float("nan"),
            "peak": peak_mib, "reused": reused, "work": work, "estimate": estimate.split("estimated peak memory ")[-1]
            .split(", time")[0].split(";")[0].split(" -")[0], "hw": f"{rec_hw(out)}"}


def rec_hw(path):
    from PIL import Image
    with Image.open(path) as im:
        return f"{im.width}x{im.height}"


def default_layers():
    """The layers a default run uses (its statistics and content layers)."""
    from impasto import Config
    cfg = Config().with_model_layers()
    return list(dict.fromkeys(cfg.style_layers + cfg.content_layers))


def step_flops(hw_text):
    from impasto import estimate
    w, h = map(int, hw_text.split("x"))
    return estimate.step_flops("vgg19", "relu5_1", (h, w))


def objective_args(args, size):
    """(network, the Objective's arguments, image size): the default objective for
    ``args.content`` and ``args.style`` at ``size``."""
    import torch
    from impasto import Config, image as imageio, precision as precisions, tasks
    from impasto.losses import Region
    resolved = precisions.resolve(args.precision, torch.device("cpu"))
    cfg = Config(precision=resolved).with_model_layers()
    content = imageio.to_tensor(imageio.load(args.content, long_side=size))
    hw = imageio.fit_size(*content.shape[-2:], size)
    content = imageio.resize(content, hw)
    style = imageio.resize_long(imageio.to_tensor(imageio.load(args.style, long_side=size)), size)
    net, _ = tasks.get_backbone(cfg, cfg.content_layers + cfg.style_layers, torch.device("cpu"),
                                resolved)
    kw = dict(content=content, regions=[Region(None, [style])],
              content_layers=cfg.content_layers, style_layers=cfg.style_layers,
              style_stat=cfg.style_loss, content_weight=cfg.content_weight,
              style_weight=cfg.style_weight, tv_weight=cfg.tv_weight, tv_norm=cfg.tv_norm)
    return net, kw, hw


def exactness(size, args):
    """Relative difference of the tiled objective's loss and gradient from the untiled one at
    ``size``, with the default layers and tiles of a quarter of the long side."""
    import torch
    from impasto import tiled
    from impasto.losses import Objective
    # in fp32: the algorithm's exactness (in bf16 both sides carry bf16's rounding, about 1e-3)
    net, kw, hw = objective_args(argparse.Namespace(**{**vars(args), "precision": "fp32"}), size)
    x = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(0))
    out = []
    for obj in (Objective(net, **kw), tiled.TiledObjective(net, tile=size // 4, **kw)):
        xi = x.clone().requires_grad_(True)
        loss = obj(xi)[0]
        loss.backward()
        out.append((loss.item(), xi.grad))
    (l0, g0), (l1, g1) = out
    return abs(l1 - l0) / abs(l0), float((g1 - g0).abs().max() / g0.abs().max()), hw


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--content", default="examples/tubingen.jpg")
    p.add_argument("--style", default="examples/starry_night.jpg")
    p.add_argument("--sizes", default="512,1024,2048")
    p.add_argument("--tiled", default="4096:6G", help="SIZE:BUDGET[,SIZE:BUDGET...] single-scale "
                   "runs within --max-memory BUDGET ('' for none)")
    p.add_argument("--exact-size", type=int, default=1024)
    p.add_argument("--precision", default="auto")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--reuse-memory", choices=("auto", "on", "off"), default=None,
                   help="passed to every run (default: impasto's own)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from speed import calibrate
    from impasto import allocator, precision as precisions
    import torch
    allocator.one_arena()       # as a run does (it changes nothing outside reusing_freed_memory)
    resolved = precisions.resolve(args.precision, torch.device("cpu"))

    def calibrated():       # (with glibc's defaults, with freed memory reused)
        mapped = calibrate((384, 512), precisions=(resolved,))[resolved]
        with allocator.reusing_freed_memory():
            return mapped, calibrate((384, 512), precisions=(resolved,))[resolved]
    before = calibrated()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",") if s):
            for scales in (1, None):
                rows.append(run(size, scales, args.steps, args, Path(tmp)))
                print(f"done {size} {scales or 'auto'}", file=sys.stderr, flush=True)
        for spec in (s for s in args.tiled.split(",") if s):
            size, budget = spec.split(":")
            rows.append(run(int(size), 1, args.steps, args, Path(tmp), budget))
            print(f"done {size} tiled {budget}", file=sys.stderr, flush=True)
    # the machine's rate drifts over a long run (10% between runs of the same code here):
    # calibrated again after the rows, each share is against the mean of the two
    after = calibrated()
    calib_mapped, calib_reused = [(a + b) / 2 for a, b in zip(before, after)]
    loss_err, grad_err, hw = exactness(args.exact_size, args)
    lines = [f"{args.steps} steps each; {args.content} / {args.style}; {resolved}; "
             f"--reuse-memory {args.reuse_memory or 'default'}; calibrated VGG19 rate (512x384, "
             f"the mean of before the rows and after them) {calib_mapped / 1e9:.1f} GFLOP/s "
             f"with glibc's defaults ({before[0] / 1e9:.1f} before, {after[0] / 1e9:.1f} after), "
             f"{calib_reused / 1e9:.1f} with freed memory reused ({before[1] / 1e9:.1f}, "
             f"{after[1] / 1e9:.1f}); each row's share is against the one its "
             "full-size scale ran under (reuse: yes/no). \"of calibrated\" counts an untiled "
             "step's FLOPs; "
             "\"work\" is what a tiled step computes against that (tile_geometry.work_factor: "
             "the statistics pass, the recomputed stages, the margins), and \"for its work\" "
             "the rate on what it computes", "",
             "| output | mode | schedule (steps@px) | wall s | s/step at full size | reuse | "
             "of calibrated | work | for its work | peak RSS MiB | estimated peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['size']} | error: {r['error']} | | | | | | | | | |")
            continue
        calib = calib_reused if r["reused"] else calib_mapped
        share = r["flops"] / r["s_step"] / calib if r["s_step"] == r["s_step"] else float("nan")
        lines.append(f"| {r['hw']} | {r['mode']} | {r['schedule']} | {r['wall']:.1f} | "
                     f"{r['s_step']:.2f} | {'yes' if r['reused'] else 'no'} | {share:.0%} | "
                     f"{r['work']:.2f} | {share * r['work']:.0%} | {r['peak']:.0f} | "
                     f"{r['estimate']} |")
    lines += ["", f"Exactness at {hw[1]}x{hw[0]} in fp32, tiles of {args.exact_size // 4} px: loss "
              f"differs by {loss_err:.1e} (relative), gradient by {grad_err:.1e} of its largest "
              "value."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
