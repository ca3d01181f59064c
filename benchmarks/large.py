"""Peak memory and time for large outputs, single-scale against coarse-to-fine, in one run.
Run by hand: `python benchmarks/large.py [--sizes 512,1024,2048] [--steps 10]`.

Each row is the real CLI in its own process (peak RSS of that process alone), next to the
estimate impasto prints before it starts, so the memory model can be checked too. s/step is the
median over the steps at full size.
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


def run(size, scales, steps, args, out_dir):
    out = out_dir / f"large_{size}_{scales or 'auto'}.png"
    cmd = [sys.executable, "-m", "impasto", "transfer", args.content, args.style, "-o", str(out),
           "--size", str(size), "--steps", str(steps), "--seed", "0"]
    if scales:
        cmd += ["--scales", str(scales)]
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
    return {"size": size, "mode": "single-scale" if scales == 1 else "coarse-to-fine",
            "schedule": " + ".join(f"{n}@{s}" for s, n in rec["schedule"]),
            "wall": wall, "s_step": statistics.median(times) if times else float("nan"),
            "peak": peak_mib, "estimate": estimate.split("estimated peak memory ")[-1]
            .split(",")[0].split(" -")[0], "hw": f"{rec_hw(out)}"}


def rec_hw(path):
    from PIL import Image
    with Image.open(path) as im:
        return f"{im.width}x{im.height}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--content", default="examples/tubingen.jpg")
    p.add_argument("--style", default="examples/starry_night.jpg")
    p.add_argument("--sizes", default="512,1024,2048")
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            for scales in (1, None):
                rows.append(run(size, scales, args.steps, args, Path(tmp)))
                print(f"done {size} {scales or 'auto'}", file=sys.stderr, flush=True)
    lines = [f"{args.steps} steps each; {args.content} / {args.style}", "",
             "| output | mode | schedule (steps@px) | wall s | s/step at full size | "
             "peak RSS MiB | estimated peak |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['size']} | error: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['hw']} | {r['mode']} | {r['schedule']} | {r['wall']:.1f} | "
                     f"{r['s_step']:.2f} | {r['peak']:.0f} | {r['estimate']} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
