"""The quality-against-time curve, impasto against pastiche: `python benchmarks/quality.py`.

For every content/style pair, in one run on one machine, one after another:

  impasto default     the real CLI, `impasto transfer C S -o OUT --size S --seed N --quiet`
  impasto --time B    the same with each time budget B (--budgets)
  pastiche            pastiche 1.6.0's own CLI, unedited, in one run at its default 1000 steps,
                      with --size S --style-size S (so that its output and style image have
                      impasto's pixel sizes) and --workspace: it saves its image every
                      --workspace-step steps, and each image's file time, less the run's start,
                      is the wall time at which pastiche had that many steps done. The images
                      at --pastiche-steps (e.g. 100, 250, 500) are its shorter runs, and its
                      final output is its default run. (Saving those ~20 PNGs costs pastiche
                      about a second of its ~25 minutes.)

Every run is a subprocess; its wall time is measured around it (start-up included). The
impasto subprocesses run this checkout's src/ (PYTHONPATH), and so does the evaluator.

Every output is then scored by three common evaluators (speed.evaluate; EVALUATORS), fp32 on
the Caffe VGG19 at the same size, the same for both tools:
  impasto's default objective   what impasto's default run minimises (the deep style layers
                                read from the painting enlarged, --deep-style-scale). It FAVOURS
                                IMPASTO, and it penalises pastiche for matching the painting's
                                objects, which is what impasto's default avoids on purpose.
  the classic objective         every style layer from the painting at the output's size: what
                                Gatys et al. and pastiche minimise (up to pastiche's weights and
                                normalisation). It FAVOURS PASTICHE.
  the shared terms              content, TV and the shallow style layers (relu1_1-relu3_1),
                                whose targets are the same in both tools: it favours neither
                                by its targets, only by the weights.
A lower loss does not prove a better picture under any of them. The contact sheet (rows: pairs;
columns: the content, the style, then every run labelled with its setting, wall time and its
losses) is there to check the numbers against the eye.

Printed per pair: a markdown table (tool, setting, steps, wall s, each evaluator's loss)
and, per evaluator, the time each tool needs to reach the loss of pastiche's 1000-step default
(the smallest measured wall time whose loss is at most that) and their ratio. Written to --out:
the report (quality-<size>-<date>.md), the measurements (quality-<size>-<date>.json), the contact
sheet (quality_<size>_sheet.png) and a figure of the curves per evaluator
(quality_<size>_curve.png, quality_<size>_curve_classic.png, quality_<size>_curve_shared.png).

    python benchmarks/quality.py               # 3 pairs, 512 px: hours (pastiche ~25 min a pair)
    python benchmarks/quality.py --skip-pastiche --budgets 15,30
    python benchmarks/quality.py --report-only   # the report of a run stopped after some pairs
    python benchmarks/quality.py --keep-pastiche # impasto changed: run it again, keep pastiche's
    python benchmarks/quality.py --pairs examples/tubingen.jpg:examples/starry_night.jpg \\
        --size 48 --budgets 15 --impasto-steps 5 --pastiche-steps 3,5 --pastiche-default-steps 8 \\
        --out /tmp/q                                   # a smoke test: about a minute
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # score with this checkout's impasto
sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import cpu_name, evaluate  # noqa: E402

PAIRS = ["examples/tubingen.jpg:examples/starry_night.jpg",
         "../shared/images/golden_gate.jpg:../shared/images/woman-with-hat-matisse.jpg",
         "../shared/images/hoovertowernight.jpg:../shared/images/the_scream.jpg"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}


def ints(text: str) -> list:
    return [int(x) for x in text.split(",") if x.strip()]


def timed(cmd: list) -> tuple:
    """Run ``cmd``; its wall time in seconds, and its error output if it failed (else None)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        log(f"{' '.join(cmd)}\nfailed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return wall, (proc.stderr.strip().splitlines() or ["?"])[-1]
    return wall, None


def run_impasto(pair, budget, folder: Path, args) -> dict:
    """impasto's CLI, with --time BUDGET unless budget is None (its default command)."""
    setting = "default" if budget is None else f"--time {budget}s"
    out = folder / ("impasto-default.png" if budget is None else f"impasto-{budget}s.png")
    cmd = [sys.executable, "-m", "impasto", "transfer", str(pair.content), str(pair.style),
           "-o", str(out), "--size", str(args.size), "--seed", str(args.seed), "--quiet",
           "--overwrite", *([] if budget is None else ["--time", f"{budget}s"]),
           *([] if args.impasto_steps is None else ["--steps", str(args.impasto_steps)])]
    log(f"  impasto {setting} ...")
    wall, error = timed(cmd)
    row = {"tool": "impasto", "setting": setting, "steps": 0, "wall": wall, "output": str(out)}
    if error:
        return {**row, "error": error}
    return {**row, "steps": json.loads(out.with_suffix(".json").read_text())["result"]["steps"]}


def run_pastiche(pair, folder: Path, args) -> list:
    """One pastiche run to --pastiche-default-steps, saving its image at the step counts of
    --pastiche-steps on the way; a row per step count, the default (its final output) last."""
    last = args.pastiche_default_steps
    every = math.gcd(last, *args.pastiche_steps)
    work, out = folder / "pastiche-steps", folder / f"pastiche-{last}.png"
    size = str(args.size)
    cmd = [sys.executable, "-m", "pastiche", "--device", "cpu", "--seed", str(args.seed),
           "--no-verbose", "--size", size, "--style-size", size, "--num-steps", str(last),
           "--workspace", str(work), "--workspace-step", str(every),
           "--content", str(pair.content), "--styles", str(pair.style), "--output", str(out)]
    log(f"  pastiche {last} steps (images every {every}) ...")
    start = time.time()  # the clock file times are on
    wall, error = timed(cmd)
    if error:
        return [{"tool": "pastiche", "setting": f"default ({last} steps)", "steps": last,
                 "wall": wall, "output": str(out), "error": error}]
    rows = []
    for steps in args.pastiche_steps:
        image = work / f"{steps:0{len(str(last))}d}.png"
        rows.append({"tool": "pastiche", "setting": f"{steps} steps", "steps": steps,
                     "wall": image.stat().st_mtime - start, "output": str(image)})
    rows.append({"tool": "pastiche", "setting": f"default ({last} steps)", "steps": last,
                 "wall": wall, "output": str(out), "default": True})
    return rows


# The evaluators every output is scored by, fp32 on the Caffe VGG19, the same for both tools:
# (row key, label, deep_style_scale, style layers) for speed.evaluate.
EVALUATORS = [
    # what impasto minimises (the evaluator): it favours impasto, and it penalises
    # matching the painting's objects, which impasto's default avoids on purpose
    ("loss", "impasto's default objective", None, None),
    # every style layer from the painting at the output's size: what Gatys et al. and pastiche
    # minimise (up to pastiche's weights): it favours pastiche
    ("classic", "the classic objective", 1.0, None),
    # the terms whose targets both tools share: content, TV and the shallow style layers
    # (relu1_1-relu3_1: the painting at the output's size in both); it favours neither by
    # its targets, only by the weights
    ("shared", "the shared terms", 1.0, ["relu1_1", "relu2_1", "relu3_1"]),
]


def in_folder(output: str, folder: Path) -> Path:
    """A kept row's image, found in the pair's ``folder`` (a relative path in rows.json is
    relative to where that run was started, which need not be here)."""
    path = Path(output)
    if path.is_file():
        return path.resolve()
    parts = path.parts
    return folder.joinpath(*parts[parts.index(folder.name) + 1:]) if folder.name in parts \
        else path


def reach(rows: list, tool: str, target: float, key: str = "loss"):
    """The first row of ``tool`` in wall time whose ``key`` loss is at most ``target``, or
    None."""
    done = sorted((r for r in rows if r["tool"] == tool and key in r), key=lambda r: r["wall"])
    return next((r for r in done if r[key][0] <= target), None)


def reached(rows: list, key: str = "loss"):
    """(the ``key`` loss of pastiche's default run, pastiche's row and impasto's row that
    first reach it (impasto's: None if none does)), or None without a scored pastiche
    default."""
    ref = next((r for r in rows if r.get("default") and key in r), None)
    if ref is None:
        return None
    target = ref[key][0]
    return target, reach(rows, "pastiche", target, key), reach(rows, "impasto", target, key)


def report_pair(pair, rows: list) -> str:
    keys = [(k, label) for k, label, _, _ in EVALUATORS if any(k in r for r in rows)]
    lines = [f"## {pair.content.name} in the style of {pair.style.name}", "",
             "Loss by each evaluator (total; its style term in brackets; every term is in the "
             "JSON).", "",
             "| tool | setting | steps | wall s | " + " | ".join(label for _, label in keys)
             + " |", "|---|---|---|---|" + "---|" * len(keys)]
    for r in rows:
        cells = [f"{r[k][0]:.4g} ({r[k][2]:.3g})" if k in r else r.get("error", "?")
                 for k, _ in keys]
        setting = r["setting"] + (" (kept from an earlier run)" if "kept" in r else "")
        lines.append(f"| {r['tool']} | {setting} | {r['steps']} | {r['wall']:.1f} | "
                     + " | ".join(cells) + " |")
    lines.append("")
    for k, label in keys:
        ref = reached(rows, k)
        if ref is None:
            continue
        target, p, i = ref
        text = (f"By {label}: pastiche reaches its own default's loss {target:.4g} at "
                f"{p['wall']:.1f} s ({p['setting']}); impasto ")
        if i is None:
            text += "does not reach it in any run (not reached)."
        else:
            text += (f"at {i['wall']:.1f} s ({i['setting']}, loss {i[k][0]:.4g}): "
                     f"**{p['wall'] / i['wall']:.1f}x sooner** (bar: 10x).")
        lines += [text, ""]
    return "\n".join(lines).rstrip()


def contact_sheet(results: list, size: int, path: Path) -> None:
    """Rows: pairs; columns: content, style, then every run, labelled underneath."""
    from PIL import Image, ImageDraw, ImageFont

    fs = max(10, size // 32)  # font size
    col, pad = max(size, 200), 4  # column width: room for the labels at small sizes
    font, chars = ImageFont.load_default(size=fs), max(size, 200) * 2 // fs  # chars per line
    label_h = 4 * (fs + 4)
    sheet_rows = []  # per pair: [(image, label)]
    for pair, rows in results:
        cells = [(Image.open(pair.content), f"content\n{pair.content.name}"),
                 (Image.open(pair.style), f"style\n{pair.style.name}")]
        for r in rows:
            if "error" in r:  # a failed run: a grey tile, its error underneath
                image, what = Image.new("RGB", (size, size), "lightgrey"), r["error"][:2 * chars]
            else:
                image, what = Image.open(r["output"]), ", ".join(
                    f"{k} {r[k][0]:.3g}" for k, _, _, _ in EVALUATORS if k in r)
            cells.append((image, f"{r['tool']} {r['setting']}\n{r['wall']:.1f} s, {what}"))
        for image, _ in cells:
            image.thumbnail((size, size))  # in place; the outputs are this size already
        sheet_rows.append([(image.convert("RGB"), "\n".join(
            [part for line in label.split("\n") for part in textwrap.wrap(line, chars)][:4]))
            for image, label in cells])
    ncols = max(len(row) for row in sheet_rows)
    heights = [max(image.height for image, _ in row) + label_h for row in sheet_rows]
    sheet = Image.new("RGB", (ncols * (col + pad) + pad, sum(heights) + pad * (len(heights) + 1)),
                      "white")
    draw, y = ImageDraw.Draw(sheet), pad
    for row, h in zip(sheet_rows, heights):
        for i, (image, label) in enumerate(row):
            x = pad + i * (col + pad)
            sheet.paste(image, (x, y))
            draw.multiline_text((x, y + h - label_h + 2), label, fill="black", font=font)
        y += h + pad
    sheet.save(path)


def curve_figure(results: list, size: int, path: Path, key: str = "loss",
                 label: str = "impasto's default objective") -> None:
    """Evaluator loss (``key``) against wall time (log x), one panel per pair."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (pair, rows) in zip(axes[0], results):
        for tool, style in (("impasto", "o-"), ("pastiche", "s-")):
            pts = sorted((r["wall"], r[key][0], r["setting"]) for r in rows
                         if r["tool"] == tool and key in r)
            if pts:
                line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=tool)
                for i, (wall, loss, setting) in enumerate(labelled(pts)):   # above, below
                    ax.annotate(setting, (wall, loss), fontsize=7, color=line.get_color(),
                                xytext=(3, 3 if i % 2 == 0 else -10), textcoords="offset points")
        ref, verdict = reached(rows, key), ""
        if ref:
            target, p, i = ref
            ax.axhline(target, color="grey", ls="--", lw=0.8, label="pastiche default's loss")
            verdict = (f"\nimpasto {p['wall'] / i['wall']:.1f}x sooner" if i else
                       "\nimpasto: not reached")
        ax.set(xscale="log", xlabel="wall time, s (start-up included)",
               ylabel=f"loss, {label} (fp32)",
               title=f"{pair.content.stem} × {pair.style.stem}, {size} px{verdict}")
        lo, hi = ax.get_xlim()  # plain numbers as ticks, 1-2-5 steps, whatever the range
        ax.set_xticks([t * 10 ** e for e in range(5) for t in (1, 2, 5) if lo <= t * 10 ** e <= hi])
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def labelled(pts: list, apart: float = 1.4) -> list:
    """``pts`` (wall, loss, setting), sorted by wall, with the points that lie within
    ``apart`` times each other's wall time merged into one label at the first of them (runs
    that all ended at the same step ceiling would print their labels over each other)."""
    groups = []
    for wall, loss, setting in pts:
        if groups and wall <= groups[-1][0] * apart:
            groups[-1][2].append(setting)
        else:
            groups.append((wall, loss, [setting]))
    return [(wall, loss, ", ".join(settings)) for wall, loss, settings in groups]


def trimmed(args) -> str:
    """A warning when the runs are not the real defaults (smoke-test settings)."""
    cut = ([f"impasto --steps {args.impasto_steps}"] if args.impasto_steps is not None else []) \
        + ([f"pastiche {args.pastiche_default_steps} steps"]
           if args.pastiche_default_steps != 1000 and not args.skip_pastiche else [])
    return f" TRIMMED, not the defaults: {', '.join(cut)}." if cut else ""


def score(rows: list, size: int, pair) -> None:
    """Every row's loss by each of EVALUATORS."""
    for key, _, deep, layers in EVALUATORS:
        evaluate(rows, size, pair, key, deep, layers)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", nargs="+", default=PAIRS, metavar="CONTENT:STYLE",
                   help="image pairs, paths relative to the repository root")
    p.add_argument("--size", type=int, default=512, help="long side of every output")
    p.add_argument("--budgets", type=ints, default=[15, 30, 60, 120],
                   help="impasto --time budgets in seconds, comma-separated (empty: none)")
    p.add_argument("--impasto-steps", type=int, default=None,
                   help="--steps for every impasto run (default: impasto's own); for smoke tests")
    p.add_argument("--pastiche-steps", type=ints, default=[100, 250, 500],
                   help="pastiche's shorter step counts, images saved on the way of its one run")
    p.add_argument("--pastiche-default-steps", type=int, default=1000,
                   help="pastiche's default run (its own default: 1000); lower only to smoke-test")
    p.add_argument("--skip-pastiche", action="store_true")
    p.add_argument("--rescore", action="store_true",
                   help="with --report-only: score the saved outputs again with this checkout's "
                        "evaluators (after a change to impasto's default objective)")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: report the pairs already measured in --out (each pair's "
                        "rows.json, written when it is done), e.g. of a run stopped early")
    p.add_argument("--keep-pastiche", action="store_true",
                   help="run impasto again but keep the pastiche rows and images of the pairs "
                        "already measured in --out (after a change to impasto: pastiche is the "
                        "same); pastiche runs for the others")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality")
    args = p.parse_args(argv)
    args.pairs = [SimpleNamespace(content=ROOT / c, style=ROOT / s)
                  for c, s in (x.split(":", 1) for x in args.pairs)]
    for image in (x for pair in args.pairs for x in (pair.content, pair.style)):
        if not image.is_file():
            p.error(f"{image}: no such file")
    if any(not 0 < n < args.pastiche_default_steps for n in args.pastiche_steps):
        p.error("--pastiche-steps must lie between 0 and --pastiche-default-steps")
    args.out = args.out.resolve()
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    load = os.getloadavg()
    machine = (f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
               f"({torch.get_num_threads()} threads); load average {load[0]:.2f} {load[1]:.2f} "
               f"{load[2]:.2f} at start")
    print(machine + "." + trimmed(args), flush=True)
    results = []
    for pair in args.pairs:
        folder = args.out / f"{pair.content.stem}-{pair.style.stem}"
        if args.report_only:
            if (folder / "rows.json").is_file():
                saved = json.loads((folder / "rows.json").read_text())
                machine = saved.get("machine", machine)
                if args.rescore:
                    score(saved["rows"], args.size, pair)
                    (folder / "rows.json").write_text(json.dumps(saved, indent=1))
                results.append((pair, saved["rows"]))
            continue
        log(f"{pair.content.name} x {pair.style.name} at {args.size} px")
        folder.mkdir(parents=True, exist_ok=True)
        kept = []
        if args.keep_pastiche and (folder / "rows.json").is_file():
            saved = json.loads((folder / "rows.json").read_text())
            kept = [{**r, "kept": r.get("kept", saved.get("machine", "?")),
                     "output": str(in_folder(r["output"], folder))}
                    for r in saved["rows"] if r["tool"] == "pastiche"]
            log(f"  pastiche: {len(kept)} rows kept from {folder / 'rows.json'} "
                f"({saved.get('machine', '?')})")
        rows = [run_impasto(pair, b, folder, args) for b in [None, *args.budgets]]
        if kept:
            rows += kept
        elif not args.skip_pastiche:
            rows += run_pastiche(pair, folder, args)
        score(rows, args.size, pair)
        (folder / "rows.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
        results.append((pair, rows))
        print("\n" + report_pair(pair, rows) + "\n", flush=True)
    if not results:
        sys.exit(f"quality.py: nothing measured in {args.out} for these pairs")

    stamp = f"{args.size}-{datetime.datetime.now():%Y%m%d-%H%M}"
    text = "\n\n".join([f"# impasto quality against time, {args.size} px, seed {args.seed}",
                        machine + f"; {os.getloadavg()[0]:.2f} at the end.",
                        "Losses in fp32 on the Caffe VGG19 by three evaluators: impasto's own "
                        "default objective (it favours impasto), the classic objective (every "
                        "style layer from the painting at the output's size: it favours "
                        "pastiche) and the terms both share (content, TV, relu1_1-relu3_1); "
                        "check the contact sheet." + trimmed(args),
                        *(report_pair(pair, rows) for pair, rows in results)])
    (args.out / f"quality-{stamp}.md").write_text(text + "\n")
    (args.out / f"quality-{stamp}.json").write_text(json.dumps(
        {"machine": machine, "size": args.size, "seed": args.seed,
         "pairs": [{"content": str(p.content), "style": str(p.style), "runs": rows}
                   for p, rows in results]}, indent=1) + "\n")
    contact_sheet(results, args.size, args.out / f"quality_{args.size}_sheet.png")
    for key, label, _, _ in EVALUATORS:
        if any(key in r for _, rows in results for r in rows):
            suffix = "" if key == "loss" else f"_{key}"
            curve_figure(results, args.size, args.out / f"quality_{args.size}_curve{suffix}.png",
                         key, label)
    log(f"written to {args.out}")


if __name__ == "__main__":
    main()
