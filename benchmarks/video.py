"""Temporal consistency against per-frame stylisation on the same clip.

Makes the test clip (scripts/make_clip.py: a pan and zoom across examples/tubingen.jpg with a
disc moving over it), runs ``impasto video`` on it with and without ``--no-temporal`` through the
real CLI, and prints a markdown table from the two run records: the temporal error (mean
squared difference to the previous output warped onto the frame, over non-occluded pixels),
the mean style and content losses, and seconds per frame.

    python benchmarks/video.py --frames 12 --width 128
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--steps", type=int, default=100, help="first frame (and every per-frame "
                   "frame)")
    p.add_argument("--frame-steps", type=int, default=50)
    p.add_argument("--temporal-weight", type=float, default=None)
    p.add_argument("--style", default=str(ROOT / "examples" / "starry_night.jpg"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "video"))
    p.add_argument("--only", choices=("temporal", "per-frame"), help="run one mode")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    clip = out / "clip.mp4"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_clip.py"),
                    str(ROOT / "examples" / "tubingen.jpg"), str(clip), "--frames",
                    str(a.frames), "--width", str(a.width)], check=True)
    common = [str(clip), a.style, "--size", str(a.width), "--steps", str(a.steps), "--seed",
              "1", "--precision", "fp32", "--frame-steps", str(a.frame_steps)]
    if a.temporal_weight is not None:
        common += ["--temporal-weight", str(a.temporal_weight)]
    runs = [("temporal", []), ("per-frame (--no-temporal)", ["--no-temporal"])]
    if a.only:
        runs = [r for r in runs if r[0].startswith(a.only)]
    rows = []
    for name, extra in runs:
        target = out / ("temporal.mp4" if not extra else "per_frame.mp4")
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "impasto", "video", *common, *extra, "-o", str(target),
               "--quiet", "--restart"]
        subprocess.run(cmd, check=True, env={**os.environ})
        wall = time.perf_counter() - t0
        rec = json.loads(target.with_suffix(".json").read_text())
        r = rec["result"]
        rows.append((name, r["temporal_error"], r["style"], r["content"],
                     r["seconds_per_frame"], wall, rec))
    print(f"\nclip: {a.frames} frames at {rec['video']['size'][0]}x{rec['video']['size'][1]}, "
          f"first frame {a.steps} steps, later frames {a.frame_steps} steps (temporal) or "
          f"{a.steps} (per-frame), fp32\n")
    print("| mode | temporal error | vs per-frame | style loss | content loss | s/frame | "
          "wall s |")
    print("|---|---|---|---|---|---|---|")
    base = rows[-1][1]
    for name, err, style, content, spf, wall, _ in rows:
        ratio = f"{base / err:.1f}x lower" if err and base and err != base else ""
        print(f"| {name} | {err:.5f} | {ratio} | {style:.4f} | {content:.4f} | {spf:.1f} | "
              f"{wall:.0f} |")


if __name__ == "__main__":
    main()
