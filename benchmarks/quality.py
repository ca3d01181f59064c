"""Does the fast default lose quality? Run by hand: `python benchmarks/quality.py`.

Runs the README's default command (coarse to fine, --precision auto) and two single-scale
references at the same total step count (fp32, and bf16), each as the real CLI in a subprocess,
then scores every output with one common fp32 evaluator (speed.evaluate: the default
objective on the Caffe VGG19 in fp32) and prints a markdown table: wall time (start-up
included) and fp32 loss, relative to the single-scale fp32 reference. Also writes a
side-by-side PNG of the outputs for looking at.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import evaluate  # noqa: E402

RUNS = [  # label, extra CLI options
    ("default (coarse-to-fine, auto precision)", []),
    ("single-scale fp32", ["--scales", "1", "--precision", "fp32"]),
    ("single-scale bf16", ["--scales", "1", "--precision", "bf16"]),
]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--content", default="examples/tubingen.jpg")
    p.add_argument("--style", default="examples/starry_night.jpg")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--only", type=int, nargs="*", help="indices of RUNS to run (default: all)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (label, extra) in enumerate(RUNS):
        if args.only is not None and i not in args.only:
            continue
        out = args.out / f"quality_{args.size}_{i}.png"
        cmd = [sys.executable, "-m", "impasto", "transfer", args.content, args.style, "-o", str(out),
               "--size", str(args.size), "--steps", str(args.steps), "--seed", str(args.seed),
               "--quiet", *extra]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        rows.append({"label": label, "output": str(out), "wall": time.perf_counter() - t,
                     "cmd": " ".join(["impasto", *cmd[3:]])})
        print(f"{label}: {rows[-1]['wall']:.1f} s", file=sys.stderr, flush=True)
    evaluate(rows, args.size, args)
    ref = next((r["loss"][0] for r in rows if r["label"] == "single-scale fp32"), None)
    lines = [f"{args.content} in the style of {args.style}, --size {args.size}, "
             f"--steps {args.steps}, --seed {args.seed}", "",
             "| run | wall s | fp32 loss | content | style | tv | vs single-scale fp32 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        total, c, s, tv = r["loss"]
        rel = f"{(total / ref - 1) * 100:+.1f}%" if ref else "n/a"
        lines.append(f"| {r['label']} | {r['wall']:.1f} | {total:.4f} | {c:.4f} | {s:.4f} | "
                     f"{tv:.4f} | {rel} |")
    report = "\n".join(lines)
    print(report)
    (args.out / f"quality-{args.size}-{time.strftime('%Y%m%d-%H%M')}.md").write_text(report + "\n")
    from PIL import Image
    tiles = [Image.open(r["output"]) for r in rows]
    sheet = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width
    sheet.save(args.out / f"quality_{args.size}_side_by_side.png")


if __name__ == "__main__":
    main()
