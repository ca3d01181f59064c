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

from .. import (api, image as imageio, outputs, record as records, regions, safe_io, sources,
               video, video_io)
from ..errors import UserError
from ..tasks import new_seed
from .executing import executor_from_args
from .parser import EXIT_INTERRUPTED, options_from_args
from .progress import FrameProgress

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
            except (OSError, ValueError, RecursionError):
                old = None
            if not (isinstance(old, dict) and isinstance(old.get("frames"), dict)
                    and all(isinstance(k, str) and k.isdigit() and isinstance(v, dict)
                            for k, v in old["frames"].items())):
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
        from ..image import atomic_write
        text = json.dumps(self.state, indent=1, allow_nan=True)
        atomic_write(self.state_path, lambda fh: fh.write(text.encode()))


def _load_regions(args, cfg, source, styles_given, max_pixels):
    """Region specs, per-frame mask source or first mask; checked before the first frame."""
    specs = [sources.parse_region_style(r) for r in (args.region_style or [])]
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
    colours = sources.region_colours(specs)
    style_side = cfg.style_load_side()
    region_styles = [([imageio.load(p, long_side=style_side, max_pixels=max_pixels,
                                    what=f"style of region {c}")] if p else [], None)
                     for c, p in specs]
    if first_mask:
        im = imageio.load(first_mask, max_pixels=max_pixels, what="first mask")
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


ROLES = {"input": "input video", "styles": "style image", "first_mask": "first mask",
         "mask_video": "mask video"}


def _check_output(output: Path, kind: str, record: Path, inputs: dict, overwrite: bool,
                  plot: bool = False, weights=None):
    """The video's output, record, work folder and plot: never an input, never a file
    impasto did not write (unless ``overwrite``), in a folder that can really be written."""
    paths = {}
    for key, value in inputs.items():
        role = ROLES.get(key, key)
        if key == "region_styles":
            paths.update({f"style of region {c}": Path(p) for c, p in value if p})
        elif isinstance(value, list):
            paths.update({(f"{role} {i + 1}" if len(value) > 1 else role): Path(p)
                          for i, p in enumerate(value)})
        elif value:
            paths[role] = Path(value)
    if weights:
        paths["--weights file"] = Path(weights)
    work = WorkFolder(output).path
    plot_path = output.parent / f"{output.stem}_loss.png"
    safe_io.refuse_overwriting_inputs({"-o": output, "the run record": record,
                                       "the work folder": work,
                                       **({"--plot": plot_path} if plot else {})}, paths)
    if work.exists() and (work.is_symlink() or not work.is_dir()):
        raise UserError(f"-o {output}: its work folder's place {work} is taken by a file or "
                        "link; move it or choose another output name")
    if plot:
        imageio.check_output(plot_path, "--plot")
        if plot_path.exists() and not overwrite and not outputs.written_by_impasto(output,
                                                                                  record):
            raise UserError(f"--plot {plot_path}: exists and impasto did not write it; move "
                            "it, choose another output name, or add --overwrite")
    parent = output.parent
    if not parent.is_dir():
        raise UserError(f"-o {output}: folder {parent} does not exist (create it first)")
    outputs.check_folder_writable(parent, f"-o {output}")
    if record.exists() and not record.is_file():
        raise UserError(f"-o {output}: the run record's place {record} is taken by a folder; "
                        "move it or choose another output name")
    if not overwrite and not outputs.written_by_impasto(output, record):
        if record.exists():
            raise UserError(f"-o {output}: {record} exists and is not impasto's run record of "
                            f"{output.name}; choose another output name, or add --overwrite")
        if output.exists() and (kind != "folder" or any(output.iterdir())):
            raise UserError(f"-o {output}: exists and impasto did not write it (no run record "
                            "beside it); choose another output name, or add --overwrite")


def _flows_on(executor, source, cfg):
    """``flows(i)`` for ``video.stylise``: the flow pairs of the clip computed by ``executor``
    (a few frames ahead, in parallel), each frame put in the object store once."""
    from .. import flow as flowmod

    def pairs():
        prev = None
        for frame in video.content_frames(source.frames(), cfg.size):
            cur = executor.put(frame)
            if prev is not None:
                yield prev, cur, cfg.flow
            prev = cur
    results = executor.ordered(flowmod.pair, pairs())
    return lambda i: next(results)


def run(args, argv, interrupt=None) -> int:
    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr,
                                                                      flush=True))
    executor = executor_from_args(args)
    options = options_from_args(args, "video")
    cfg = api.make_config("video", options)
    api.check_network(cfg, "video")
    if not args.input:
        raise UserError("impasto video: give an INPUT video (a file, a folder of frames or a "
                        "glob)")
    output = Path(args.output)
    if args.plot:
        from .. import figures
        figures.require_plotting()
    kind = video_io.output_kind(args.output)
    for path, role in ((args.input, "input video"), (args.mask_video, "mask video")):
        if path and Path(path).exists() and not Path(path).is_dir():
            imageio.check_input_file(path, role)      # a FIFO or device is never opened
    source = video_io.open_source(args.input, cfg.fps, cfg.start, cfg.duration)
    styles_paths = list(args.styles or [])
    regions = _load_regions(args, cfg, source, bool(styles_paths), args.max_input_pixels)
    if regions is None and not styles_paths:
        raise UserError("impasto video: give a STYLE image (or --mask-video/--first-mask with "
                        "--region-style COLOUR=STYLE)")
    style_side = cfg.style_load_side()
    styles = [imageio.load(p, long_side=style_side, max_pixels=args.max_input_pixels,
                           what="style image") for p in styles_paths]
    inputs = {"input": args.input, "styles": styles_paths}
    if regions:
        inputs[regions["kind"]] = regions["mask_path"]
        inputs["region_styles"] = [[c, p] for c, p in regions["specs"]]
    rec_path = output.parent / (output.name + ".json") if kind == "folder" else \
        records.record_path(output)
    _check_output(output, kind, rec_path, inputs, args.overwrite, args.plot, cfg.weights)

    work = WorkFolder(output)
    seed = cfg.seed if cfg.seed is not None else new_seed()
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
    flows = None
    if executor.name == "ray":
        executor.start()        # the optical flow of every frame pair, as Ray tasks ahead
        say(f"impasto: optical flow on Ray ({executor.cpus():g} CPUs), frames one after "
            "another here (each starts from the one before)")
        flows = _flows_on(executor, source, cfg)
    if interrupt is not None:
        interrupt.arm()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    stream = video.stylise(
        source.frames(), cfg, styles, region_styles=regions and regions["region_styles"],
        masks=regions and regions.get("masks"), first_mask=regions and regions.get("first_mask"),
        finished=finished, callback=progress.step,
        should_stop=None if interrupt is None else interrupt.is_set, flows=flows)
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
        executor.close()
    if interrupted:
        n = len(work.finished())
        print(f"impasto: interrupted; {n} of {source.count} frames are finished in {work.path}: "
              "run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED

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
        "output": output.name, "options": records.relative_options(cfg.to_dict(), output.parent), "seed": cfg.seed,
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
    records.write(rec, rec_path)
    if args.plot:
        from .. import figures
        figures.plot_frames(metas, api.loss_weights(rec["options"]),
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


# ----------------------------------------------------------------------------- clips of a batch
def run_clip(content: str, style: str, output: str, options: dict, threads: int) -> dict:
    """One clip of ``impasto batch``, in whichever process runs it (here or a Ray worker): this
    command with ``options``, quietly, its frames one after another. Returns the summary an
    executor reports (see ``executors.base.run_request``)."""
    from .. import executors
    from . import parser as parser_mod
    t0 = time.perf_counter()
    argv = ["video", content, style, "-o", output, "--quiet", "--threads", str(threads)]
    args = parser_mod.build_parser().parse_args(argv)
    for k, v in options.items():
        setattr(args, k, v)
    out = {"pid": os.getpid(), "threads": threads, "node": executors.base.node()}
    try:
        rc = run(args, argv)
        rec = json.loads(records.record_path(Path(output)).read_text()) if rc == 0 else None
        out.update(status="ran" if rc == 0 else "interrupted", record=rec)
    except UserError as e:
        out.update(status="failed", error=str(e))
    out["seconds"] = time.perf_counter() - t0
    return out


class ClipJob:
    """A video clip as a job of a batch (``sweep.run_cells`` and the executors take it where
    they take an ``api.Job``): checked options, and the call that runs it."""

    def __init__(self, content, style, output: Path, options: dict):
        from types import SimpleNamespace
        self.content, self.style, self.output = str(content), str(style), Path(output)
        self.cfg = api.make_config("video", options)
        self.request = SimpleNamespace(options=dict(options))
        self.name = self.output.name

    def call(self, threads: int):
        return run_clip, (os.path.abspath(self.content), os.path.abspath(self.style),
                          os.path.abspath(self.output), self.request.options, threads)

    def is_done(self, cell, outdir: Path) -> bool:
        """Done when the clip and its record exist and the record is of these options and
        inputs."""
        try:
            rec = json.loads(records.record_path(self.output).read_text())
        except (OSError, ValueError):
            return False
        rel = lambda p: records._rel_input("input", p, outdir)
        ok = isinstance(rec, dict) and self.output.is_file() and rec.get("task") == "video" \
            and rec.get("options") == records.relative_options(self.cfg.to_dict(), outdir) \
            and rec.get("inputs") == {"input": rel(self.content), "styles": [rel(self.style)]}
        if ok:
            cell.record = rec
        return ok
