"""Speed benchmark: impasto against pastiche on one content/style pair.

For each --sizes entry (the output's long side) four jobs run, one after another, each in a
fresh subprocess (this script with --worker) so that peak memory is per job:

  impasto-auto     impasto.run(..., scales=1, precision="auto")   every step at full size
  impasto-fp32     the same with precision="fp32"
  impasto-default  coarse-to-fine (scales=None), the same total step budget
  pastiche         pastiche 1.6.0's own CLI (L-BFGS, its loss weights) with --size S and
                   --style-size S, so its output and style image have impasto's pixel sizes

Each worker reports its start-up time (worker start -> the first optimiser step begins:
imports, weights, image loading, setup and targets), the seconds of every step (impasto:
differences of Result.history 'time'; pastiche: its PasticheArtist.draw, one L-BFGS step, timed
by a wrapper), its total wall time and its peak RSS, and saves its output PNG into --out.

Afterwards the parent process scores every output of a size with one fp32 objective (impasto's
losses.Objective on the Caffe VGG19 with impasto.Config()'s defaults, content and style images
resized exactly as impasto resizes them), so a speed-up that hurts the result shows. It also
calibrates the machine: the best throughput of the VGG19 itself (conv1_1..relu5_1, forward plus
input gradient, frozen weights) in fp32 and in bf16 (autocast, channels_last), from which the
"fraction of peak" column is computed. The markdown table is printed and written to
--out/speed-<date>.md.

    python benchmarks/speed.py                                # 256, 512, 1024 px; 50 steps
    python benchmarks/speed.py --sizes 512 --steps 100 --skip-pastiche
    python benchmarks/speed.py --quick                        # 128 px, 5 steps: a smoke test
"""
import time

_T0 = time.perf_counter()  # worker start, taken before torch is imported (hence the imports below)

import argparse
import datetime
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOBS = {  # name: impasto.run options (None: pastiche)
    "impasto-auto": {"scales": 1, "precision": "auto"},
    "impasto-fp32": {"scales": 1, "precision": "fp32"},
    "impasto-default": {"scales": None, "precision": "auto"},
    "pastiche": None,
}
CALIBRATION_MAX_SIDE = 512  # calibrate at the largest size run, at most 512 px (512x384 here)


# ----------------------------------------------------------------------------- worker side
def run_impasto(spec: dict) -> dict:
    import impasto
    from impasto import image as imageio

    first_step = []

    def on_step(step):
        if not first_step:
            first_step.append(time.perf_counter() - step.elapsed)

    result = impasto.run("transfer", imageio.load(spec["content"]), imageio.load(spec["style"]),
                         size=spec["size"], steps=spec["steps"], seed=0, callback=on_step,
                         **spec["options"])
    imageio.save(result.tensor, spec["output"])
    return {"precision": result.precision, "startup_s": first_step[0] - _T0,
            "steps": step_seconds(result.history), "schedule": result.schedule}


def step_seconds(history: list) -> list:
    """[long side, seconds] per step from the history's 'time' stamps (seconds since the
    optimisation started, running on across scales; the first step of a scale includes
    preparing that scale's targets)."""
    out, prev = [], 0.0
    for h in history:
        out.append([h["side"], h["time"] - prev])
        prev = h["time"]
    return out


def run_pastiche(spec: dict) -> dict:
    """pastiche's CLI, with PasticheArtist.draw (one L-BFGS step, max_iter=1) timed."""
    from pastiche import pastiche

    stamps, draw = [], pastiche.PasticheArtist.draw

    def timed_draw(self):
        start = time.perf_counter()
        draw(self)
        stamps.append((start, time.perf_counter()))

    pastiche.PasticheArtist.draw = timed_draw
    size = str(spec["size"])
    pastiche.main(["pastiche", "--device", "cpu", "--seed", "0", "--no-verbose",
                   "--size", size, "--style-size", size, "--num-steps", str(spec["steps"]),
                   "--content", spec["content"], "--styles", spec["style"],
                   "--output", spec["output"]])
    return {"precision": "fp32", "startup_s": stamps[0][0] - _T0,
            "steps": [[spec["size"], end - start] for start, end in stamps],
            "schedule": [[spec["size"], spec["steps"]]]}


def worker(spec: dict) -> None:
    """Run one job and print its measurements as one JSON line."""
    out = (run_pastiche if spec["job"] == "pastiche" else run_impasto)(spec)
    out["wall_s"] = time.perf_counter() - _T0
    out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps(out))


# ----------------------------------------------------------------------------- parent side
def run_job(job: str, size: int, args) -> dict:
    """One job in a fresh subprocess; its measurements, or {'error': ...}."""
    spec = {"job": job, "size": size, "steps": args.steps, "options": JOBS[job],
            "content": str(args.content), "style": str(args.style),
            "output": str(args.out / f"{size}-{job}.png")}
    print(f"running {job} at {size} px, {args.steps} steps ...", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return {**spec, "error": f"exit status {proc.returncode}"}
    return {**spec, **json.loads(proc.stdout.splitlines()[-1])}


@functools.lru_cache(maxsize=None)
def output_hw(content_path, size: int) -> tuple:
    """(h, w) of impasto's output (and of the content image it is scored against) at ``size``."""
    from impasto import image as imageio
    im = imageio.load(content_path)
    return imageio.fit_size(im.height, im.width, size)


def conv_flops(hw, last: str = "relu5_1") -> int:
    """Forward FLOPs of the VGG19 convolutions up to ``last`` at ``hw``: 2·Cin·Cout·9·H·W each."""
    from impasto import backbones
    (h, w), cin, flops = hw, 3, 0
    for name in backbones.layers("vgg19"):
        if name.startswith("conv"):
            cout = min(64 * 2 ** (int(name[4]) - 1), 512)
            flops += 2 * cin * cout * 9 * h * w
            cin = cout
        elif name.startswith("pool"):
            h, w = h // 2, w // 2
        if name == last:
            return flops
    raise ValueError(last)


def step_flops(hw) -> int:
    """FLOPs of one Gatys step: the forward pass to relu5_1 and its backward, which computes
    input gradients only (the weights are frozen), as many FLOPs again. Gram matrices, losses
    and L-BFGS are not counted."""
    return 2 * conv_flops(hw)


def calibrate(hw, repeats: int = 3, precisions=("fp32", "bf16")) -> dict:
    """Best FLOP/s of a forward + input-gradient pass through VGG19 to relu5_1 at ``hw``, per
    precision (bf16: autocast with channels_last, as impasto runs it)."""
    import torch
    from impasto import Config, tasks

    peaks = {}
    for precision in precisions:
        net, _ = tasks.get_backbone(Config(), ["relu5_1"], torch.device("cpu"), precision)
        x = torch.rand(1, 3, *hw, requires_grad=True)

        def once():
            start = time.perf_counter()
            net.features(x, ["relu5_1"])["relu5_1"].float().sum().backward()
            return time.perf_counter() - start

        once()  # warm-up: oneDNN primitive creation
        peaks[precision] = step_flops(hw) / min(once() for _ in range(repeats))
    return peaks


def evaluate(rows: list, size: int, args, key: str = "loss", deep_style_scale=None,
             style_layers=None) -> None:
    """Add the fp32 loss (total and terms) of every row's output image to the row, as
    ``row[key]``: impasto's default objective at ``size``, the deep style layers' painting
    enlarged as a run does; with ``deep_style_scale=1`` the classic objective (every style
    layer from the painting at the output's size: what Gatys et al. and pastiche minimise);
    ``style_layers`` (a list) in place of the default ones."""
    import torch
    from impasto import Config, tasks, image as imageio
    from impasto.losses import Objective

    cfg = Config(size=size).with_model_layers()
    if deep_style_scale is not None:
        cfg = cfg.replace(deep_style_scale=deep_style_scale)
    if style_layers is not None:
        cfg = cfg.replace(style_layers=list(style_layers))
    hw = output_hw(args.content, size)
    content = imageio.resize(imageio.to_tensor(imageio.load(args.content)), hw)
    painting = imageio.to_tensor(imageio.load(args.style))
    region = tasks.style_region(cfg, None, [painting], None, size, tasks.deep_style_layers(cfg))
    net, _ = tasks.get_backbone(cfg, cfg.content_layers + cfg.style_layers, torch.device("cpu"))
    objective = Objective(
        net, content=content, regions=[region],
        content_layers=cfg.content_layers, content_layer_weights=cfg.content_layer_weights,
        style_layers=cfg.style_layers, style_layer_weights=cfg.style_layer_weights,
        content_weight=cfg.content_weight, style_weight=cfg.style_weight,
        tv_weight=cfg.tv_weight, tv_norm=cfg.tv_norm, style_stat=cfg.style_loss)
    for row in rows:
        if "error" in row:
            continue
        image = imageio.to_tensor(imageio.load(row["output"]))
        if tuple(image.shape[-2:]) != hw:
            row["error"] = f"output is {image.shape[-1]}x{image.shape[-2]}, not {hw[1]}x{hw[0]}"
            continue
        with torch.no_grad():
            total, terms = objective(image)
        row[key] = [total.item(), *terms.tolist()]


def summarise(row: dict, hw_at, peaks: dict) -> None:
    """Median s/step and fraction of peak. For a coarse-to-fine run the fraction is the FLOPs
    of all its steps over the time they take at each scale's median s/step."""
    by_side = {}
    for side, seconds in row["steps"]:
        by_side.setdefault(side, []).append(seconds)
    row["median_s"] = statistics.median(s for _, s in row["steps"])
    work = sum(len(ts) * step_flops(hw_at(side)) for side, ts in by_side.items())
    spent = sum(len(ts) * statistics.median(ts) for ts in by_side.values())
    row["peak_fraction"] = work / spent / peaks[row["precision"]]


def method_label(row: dict) -> str:
    if row["job"] == "pastiche":
        return "pastiche (L-BFGS, own weights)"
    if row["job"] == "impasto-default":
        plan = " + ".join(f"{n}@{side}" for side, n in row.get("schedule", []))
        return f"impasto default ({plan})" if plan else "impasto default"
    return "impasto single-scale"


def cells(row: dict, pastiche_median) -> list:
    """The table cells after size and method; a failed job shows its error."""
    auto = JOBS[row["job"]] and JOBS[row["job"]]["precision"] == "auto"
    precision = ("auto→" if auto else "") + row.get("precision", "?")
    if "median_s" not in row:
        return [precision, f"failed: {row['error']}"] + [""] * 9
    timing = [str(len(row["steps"])), f"{row['median_s']:.3f}", f"{row['wall_s']:.1f}",
              f"{row['startup_s']:.2f}", f"{row['rss_mib']:.0f}"]
    loss = [f"{x:.4g}" for x in row["loss"]] if "loss" in row else [row["error"], "", ""]
    speedup = f"{pastiche_median / row['median_s']:.2f}x" if pastiche_median else "–"
    return [precision, *timing, *loss[:3], speedup, f"{row['peak_fraction']:.0%}"]


def table(rows: list, hw_of) -> str:
    head = ["size", "method", "precision", "steps", "median s/step", "total wall s",
            "start-up s", "peak RSS MiB", "fp32 loss", "content", "style",
            "speed-up/step vs pastiche", "fraction of peak"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        h, w = hw_of(row["size"])
        ref = next((r.get("median_s") for r in rows
                    if r["size"] == row["size"] and r["job"] == "pastiche"), None)
        lines.append("| " + " | ".join([f"{w}x{h}", method_label(row), *cells(row, ref)]) + " |")
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def report(rows: list, peaks: dict, calib_hw, load_before, args) -> str:
    import torch
    from impasto import Config

    cfg = Config().with_model_layers()
    gf = step_flops(calib_hw) / 1e9
    notes = [
        f"Calibration: VGG19 to relu5_1 at {calib_hw[1]}x{calib_hw[0]}, forward + input "
        f"gradient ({gf:.1f} GFLOP): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s (best of 3).",
        "",
        table(rows, lambda size: output_hw(args.content, size)),
        "",
        f"- fp32 loss: every output scored by one fp32 impasto Objective (Caffe VGG19; "
        f"content {'+'.join(cfg.content_layers)}, style {'+'.join(cfg.style_layers)}; "
        f"total = {cfg.content_weight:g}·content + {cfg.style_weight:g}·style + "
        f"{cfg.tv_weight:g}·tv ({cfg.tv_norm}); content and style columns unweighted).",
        "- start-up: worker start (before `import torch`) to the first optimiser step.",
        "- fraction of peak: FLOPs of a step (VGG19 convolutions to relu5_1, forward + input "
        "gradient) / s per step / the calibration peak of the row's precision.",
        "- impasto default runs most of its steps at the coarse scales (N@side): its s/step "
        "and speed-up/step are medians over all of them; compare its total wall time.",
    ]
    title = (f"# impasto speed, {datetime.date.today()}\n\n{cpu_name()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads; {args.content.name} in the style of "
             f"{args.style.name}, {args.steps} steps, seed 0. Load average (1 min) "
             f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after: other work on the "
             "machine slows every column.\n")
    return title + "\n" + "\n".join(notes) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="256,512,1024",
                   type=lambda s: [int(x) for x in s.split(",")], help="long sides, comma-separated")
    p.add_argument("--steps", type=int, default=50, help="optimiser steps per job (at least 1)")
    p.add_argument("--content", type=Path, default=ROOT / "examples" / "tubingen.jpg")
    p.add_argument("--style", type=Path, default=ROOT / "examples" / "starry_night.jpg")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--skip-pastiche", action="store_true")
    p.add_argument("--quick", action="store_true", help="sizes 128, steps 5")
    p.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.steps = [128], 5
    if args.steps < 1:
        p.error("--steps must be at least 1")
    for image in (args.content, args.style):
        if not args.worker and not image.is_file():
            p.error(f"{image}: no such file")
    args.content, args.style, args.out = (x.resolve() for x in (args.content, args.style, args.out))
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    jobs = [j for j in JOBS if not (args.skip_pastiche and j == "pastiche")]
    rows = [run_job(job, size, args) for size in args.sizes for job in jobs]

    calib_hw = output_hw(args.content, min(max(args.sizes), CALIBRATION_MAX_SIDE))
    peaks = calibrate(calib_hw)
    for size in args.sizes:
        evaluate([r for r in rows if r["size"] == size], size, args)
    for row in rows:
        if "steps" in row:
            summarise(row, lambda side: output_hw(args.content, side), peaks)
    text = report(rows, peaks, calib_hw, load_before, args)
    print(text)
    (args.out / f"speed-{datetime.date.today()}.md").write_text(text)


if __name__ == "__main__":
    main()
