"""``impasto video``: the command line around ``impasto.video.stylise``.

Frames stream from ``video_io`` into the core and each finished frame is written at once into a
work folder beside the output (``OUT.frames/000001.png`` and ``state.json``). A re-run of the
same command finds them and carries on from the last finished frame; when every frame is done
the output is assembled under a temporary name, renamed into place, and the work folder is
removed. Changed options or inputs start the work over (and say so).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

DESCRIPTION = ("Stylise a video with temporal consistency (Ruder et al. 2016), optionally a "
               "style per moving object.")


def add_arguments(parser, add_config_options):
    parser.add_argument("input", nargs="?", help="video file (mp4, mov, webm, gif, ...), folder "
                        "of frames, or a glob of frames such as 'frames/*.png'")
    parser.add_argument("styles", nargs="*", help="style image(s)")
    g = parser.add_argument_group("regions (a style per moving object)")
    g.add_argument("--mask-video", metavar="MASKS", help="colour-coded masks, one per frame: a "
                   "video (lossless: gif, or PNG frames) or a folder or glob of frames")
    g.add_argument("--first-mask", metavar="MASK", help="the colour-coded mask of the first "
                   "frame only; impasto carries it through the clip with the optical flow")
    g.add_argument("--region-style", action="append", metavar="COLOUR=STYLE",
                   help="the style of the region painted COLOUR in the masks (STYLE an image, "
                   "or none to keep the video there). Repeat once per colour")
    add_config_options(parser, "video")
    run = parser.add_argument_group("run")
    run.add_argument("-o", "--output", required=True, help="output: .mp4/.mov/.mkv (H.264), "
                     ".gif, or a folder name (PNG frames); a run record OUTPUT.json is written "
                     "beside it. Finished frames wait in OUTPUT.frames/: the same command again "
                     "resumes an interrupted run")
    run.add_argument("--restart", action="store_true", help="discard the finished frames of an "
                     "earlier run of this output and start over")
    run.add_argument("--quiet", action="store_true", help="no progress or summary")
    run.add_argument("--plot", action="store_true", help="also plot each frame's final loss "
                     "terms and temporal error (OUTPUT_loss.png; needs matplotlib: pip install "
                     "'impasto[plot]')")


# ----------------------------------------------------------------------------- progress
class FrameProgress:
    """Frame i/N and step j/M with an ETA over the whole clip; on a terminal one updating line,
    otherwise one line per finished frame."""

    def __init__(self, count, stream=sys.stderr, quiet=False):
        self.count, self.stream, self.quiet = count, stream, quiet
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.start = time.perf_counter()
        self.computed = 0          # later frames computed in this run (not resumed)
        self.computed_s = 0.0
        self.first_s = None        # the first frame (the full budget) is timed apart
        self.remaining = count

    def eta(self):
        if not self.computed and self.first_s is None:
            return ""
        per = self.computed_s / self.computed if self.computed else self.first_s
        from .cli import _duration
        return f" eta {_duration(per * self.remaining)}"

    def step(self, i, s):
        if self.quiet or not self.tty:
            return
        frac = s.step / max(1, s.total_steps)
        bar = "#" * int(frac * 16) + "-" * (16 - int(frac * 16))
        self.stream.write(f"\rframe {i + 1}/{self.count} step {s.step}/{s.total_steps} [{bar}] "
                          f"loss {s.loss:.4g}{self.eta()}\033[K")
        self.stream.flush()

    def frame(self, f):
        self.remaining -= 1
        if not f.resumed and f.index == 0:
            self.first_s = f.seconds
        elif not f.resumed:
            self.computed += 1
            self.computed_s += f.seconds
        if self.quiet:
            return
        err = "" if f.temporal_error is None else f" temporal error {f.temporal_error:.5f}"
        if f.resumed:
            what = "resumed (finished earlier)"
        else:
            o = f.result.outcome
            what = f"{o.steps} steps, loss {o.loss:.4g}, {f.seconds:.1f} s"
        line = f"frame {f.index + 1}/{self.count}: {what}{err}{self.eta()}"
        self.stream.write(("\r" + line + "\033[K\n") if self.tty else line + "\n")
        self.stream.flush()


# ----------------------------------------------------------------------------- the run
def _file_id(path):
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return [str(p.resolve()), st.st_size, st.st_mtime_ns]
    return [str(p.resolve()) if p.exists() else str(path)]


def _key(cfg_dict, inputs, source) -> str:
    """What the finished frames depend on: options, input files and the frames read."""
    data = {"options": {k: v for k, v in cfg_dict.items() if k != "seed" or v is not None},
            "inputs": {k: ([_file_id(p) for p in v] if isinstance(v, list) else
                           _file_id(v) if v else None) for k, v in inputs.items()
                       if k != "region_styles"},
            "region_styles": inputs.get("region_styles"),
            "frames": [source.count, list(source.size), source.fps]}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class WorkFolder:
    """OUT.frames/: finished frames as PNG and state.json (the key, the seed, per-frame data)."""

    def __init__(self, output: Path):
        self.path = output.parent / (output.name + ".frames")
        self.state_path = self.path / "state.json"
        self.state = None

    def frame_path(self, i):
        return self.path / f"{i + 1:06d}.png"

    def open(self, key, seed, restart, say):
        old = None
        if self.state_path.is_file():
            try:
                old = json.loads(self.state_path.read_text())
            except (OSError, ValueError):
                old = None
        if self.path.exists() and old is not None and old.get("key") == key and not restart:
            self.state = old
            done = self.finished()
            if done:
                say(f"impasto: resuming: {len(done)} finished frames in {self.path}")
            return
        if self.path.exists():
            why = ("--restart" if restart else "the options or inputs changed since"
                   if old is not None else "it is not impasto's")
            if old is None and any(self.path.iterdir()):
                from .errors import UserError
                raise UserError(f"{self.path}: exists and is not an impasto work folder; "
                                "remove it or choose another output name")
            if old is not None and self.finished(old):
                say(f"impasto: starting over ({why} the frames in {self.path} were made)")
            shutil.rmtree(self.path)
        self.path.mkdir()
        self.state = {"key": key, "seed": seed, "frames": {}}
        self.write_state()

    def finished(self, state=None) -> dict:
        state = state or self.state
        return {int(k): v for k, v in state["frames"].items()
                if (self.path / f"{int(k) + 1:06d}.png").is_file()}

    def write_state(self):
        from .image import atomic_write
        text = json.dumps(self.state, indent=1, allow_nan=True)
        atomic_write(self.state_path, lambda fh: fh.write(text.encode()))


def _load_regions(args, source, styles_given):
    """Region specs, per-frame mask source or first mask; checked before the first frame."""
    from . import cli, image as imageio, regions, video_io
    from .errors import UserError

    specs = [cli.parse_region_style(r) for r in (args.region_style or [])]
    mask_video, first_mask = args.mask_video, args.first_mask
    if mask_video and first_mask:
        raise UserError("give either --mask-video or --first-mask, not both")
    if not (mask_video or first_mask or specs):
        return None
    if not (mask_video or first_mask):
        raise UserError("option --region-style: needs --mask-video MASKS or --first-mask MASK.png")
    if not specs:
        raise UserError(f"option --{'mask-video' if mask_video else 'first-mask'}: give one "
                        "--region-style COLOUR=STYLE per region colour (STYLE an image or none)")
    if styles_given:
        raise UserError("impasto video: with masks, give the styles with --region-style "
                        "COLOUR=STYLE, not as STYLE arguments")
    colours = [regions.parse_color(c) for c, _ in specs]
    if len(set(colours)) != len(colours):
        raise UserError("option --region-style: the same colour is given twice")
    region_styles = [([imageio.load(p)] if p else [], None) for _, p in specs]
    if first_mask:
        im = imageio.load(first_mask)
        regions.check_aspect(im.size, source.size, str(first_mask))
        hard = regions.masks_from_image(im, colours, str(first_mask), soften=False)
        return {"region_styles": region_styles, "first_mask": hard, "specs": specs,
                "mask_path": first_mask, "kind": "first_mask"}
    msrc = video_io.open_source(mask_video, source.fps if source.kind == "video" else None,
                                source.start, source.duration, what="masks")
    if msrc.count != source.count:
        raise UserError(f"{mask_video}: {msrc.count} mask frames for {source.count} video "
                        "frames: give one mask per frame")
    if msrc.size != source.size:
        regions.check_aspect(msrc.size, source.size, str(mask_video))
    first = next(iter(msrc.frames()))
    regions.masks_from_image(first, colours, f"{mask_video} frame 1")     # colours check

    def masks():
        for n, im in enumerate(msrc.frames(), start=1):
            yield regions.masks_from_image(im, colours, f"{mask_video} frame {n}")
    return {"region_styles": region_styles, "masks": masks(), "specs": specs,
            "mask_path": mask_video, "kind": "mask_video"}


def run_video(args, argv) -> int:
    from . import cli, image as imageio, record as records, video, video_io
    from .config import Config
    from .errors import UserError

    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr,
                                                                      flush=True))
    options = cli.options_from_args(args, "video")
    cfg = Config.for_task("video", **options)
    if not args.input:
        raise UserError("impasto video: give an INPUT video (a file, a folder of frames or a "
                        "glob)")
    output = Path(args.output)
    if args.plot:
        from . import figures
        figures.require_plotting()
    kind = video_io.output_kind(output)
    source = video_io.open_source(args.input, cfg.fps, cfg.start, cfg.duration)
    styles_paths = list(args.styles or [])
    regions = _load_regions(args, source, bool(styles_paths))
    if regions is None and not styles_paths:
        raise UserError("impasto video: give a STYLE image (or --mask-video/--first-mask with "
                        "--region-style COLOUR=STYLE)")
    styles = [imageio.load(p) for p in styles_paths]
    inputs = {"input": args.input, "styles": styles_paths}
    if regions:
        inputs[regions["kind"]] = regions["mask_path"]
        inputs["region_styles"] = [[c, p] for c, p in regions["specs"]]

    work = WorkFolder(output)
    seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(4), "little")
    work.open(_key(cfg.to_dict(), inputs, source), seed, args.restart, say)
    cfg = cfg.replace(seed=work.state["seed"])
    done = work.finished()

    def finished(i):
        if i in done:
            return imageio.to_tensor(imageio.load(work.frame_path(i)))
        return None

    progress = FrameProgress(source.count, quiet=args.quiet)
    h, w = imageio.fit_size(source.size[1], source.size[0], cfg.size)
    say(f"impasto: {source.count} frames of {w}x{h} at {source.fps:g} fps from {args.input}; "
        f"first frame {cfg.steps} steps, then "
        + (f"{cfg.frame_steps} steps per frame, temporal weight {cfg.temporal_weight:g}, "
           f"{cfg.flow} flow" if cfg.temporal else f"{cfg.steps} steps per frame (--no-temporal)"))
    t0 = time.perf_counter()
    interrupted = False
    frames_meta = {}
    stream = video.stylise(
        source.frames(), cfg, styles, region_styles=regions and regions["region_styles"],
        masks=regions and regions.get("masks"), first_mask=regions and regions.get("first_mask"),
        finished=finished, callback=progress.step)
    try:
        for f in stream:
            if f.resumed:
                meta = dict(done[f.index])
                meta["temporal_error"] = f.temporal_error
                meta["resumed"] = True
            else:
                o = f.result.outcome
                if o.stop_reason == "interrupted":
                    interrupted = True
                    break
                imageio.save(f.tensor, work.frame_path(f.index))
                meta = {"loss": o.loss, "terms": o.terms, "steps": o.steps,
                        "stop_reason": o.stop_reason, "seconds": round(f.seconds, 3),
                        "temporal_error": f.temporal_error, "occluded": round(f.occluded, 4),
                        "precision": f.result.precision, "device": f.result.device,
                        "weights": f.result.weights_id}
                work.state["frames"][str(f.index)] = meta
                work.write_state()
            frames_meta[f.index] = meta
            progress.frame(f)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stream.close()
    if interrupted:
        n = len(work.finished())
        print(f"impasto: interrupted; {n} of {source.count} frames are finished in {work.path}: "
              "run the same command again to resume", file=sys.stderr)
        return cli.EXIT_INTERRUPTED

    # assemble the output from the finished frames, then the record, then clean up
    paths = [work.frame_path(i) for i in range(source.count)]
    note = video_io.write((imageio.load(p) for p in paths), output, source.fps,
                          audio_from=source)
    total_s = time.perf_counter() - t0
    metas = [frames_meta[i] for i in range(source.count)]
    errors = [m["temporal_error"] for m in metas]
    mean_err = video.summary(errors)
    computed = [m for m in metas if not m.get("resumed")]

    def mean(values):
        values = [v for v in values if v is not None and math.isfinite(v)]
        return sum(values) / len(values) if values else None
    first = next((m for m in metas if "weights" in m), {})
    rec = {
        "format": records.FORMAT, "task": "video",
        "inputs": {k: records._rel_input(k, v, output.parent) for k, v in inputs.items()},
        "output": output.name, "options": cfg.to_dict(), "seed": cfg.seed,
        "weights": first.get("weights"), "device": first.get("device"),
        "precision": first.get("precision"), "versions": records.versions(),
        "command": ["impasto", *argv],
        "video": {"frames": source.count, "fps": source.fps, "size": [w, h],
                  "audio": note or None},
        "result": {"temporal_error": mean_err,
                   "style": mean(m["terms"].get("style") for m in metas),
                   "content": mean(m["terms"].get("content") for m in metas),
                   "seconds_per_frame": mean(m["seconds"] for m in computed),
                   "resumed_frames": sum(1 for m in metas if m.get("resumed"))},
        "timings": {"total_s": round(total_s, 3)},
        "frames": metas,
    }
    rec_path = output.parent / (output.name + ".json") if kind == "folder" else \
        records.record_path(output)
    records.write(rec, rec_path)
    if args.plot:
        from . import figures, sweep
        figures.plot_frames(metas, sweep.loss_weights(rec["options"]),
                            output.parent / f"{output.stem}_loss.png", title=output.name)
    shutil.rmtree(work.path, ignore_errors=True)
    if not args.quiet:
        spf = rec["result"]["seconds_per_frame"]
        err = "n/a (one frame)" if mean_err is None else f"{mean_err:.5f}"
        print(f"wrote {output} ({w}x{h}, {source.count} frames at {source.fps:g} fps) in "
              f"{total_s:.1f} s" + (f" ({spf:.1f} s per frame)" if spf else "")
              + f": temporal error {err}, style {rec['result']['style']:.4g}, content "
              f"{rec['result']['content']:.4g}" + (f"; {note}" if note else "")
              + f"; record {rec_path}", file=sys.stderr)
    return 0
