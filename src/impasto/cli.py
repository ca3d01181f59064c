"""The command line: argparse built from the config's fields, one typed config, one call
into the core. A user's mistake is one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import typing
from pathlib import Path

from . import backbones, config as config_mod
from .config import EXPLORE_DEFAULTS, INITS, TASKS, Config
from .errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

POSITIONALS = {
    "transfer": [("content", None, "content image (the photo)"),
                 ("styles", "*", "style image(s) (the painting)")],
    "reconstruct": [("content", None, "image to reconstruct from its features")],
    "texture": [("styles", "*", "style image whose texture to synthesise")],
}
DESCRIPTIONS = {
    "transfer": "Paint CONTENT in the style of STYLE (Gatys et al. 2016).",
    "reconstruct": "Reconstruct CONTENT from its features at one layer, starting from noise.",
    "texture": "Synthesise a texture with the style statistics of STYLE, starting from noise.",
    "video": "Stylise a video with temporal consistency, optionally a style per moving object.",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line (and exit status 2)."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _is_weight_list(name):
    return name.endswith("layer_weights") or name == "style_blend"


def _split(values, convert, option):
    out = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if part:
                try:
                    out.append(convert(part))
                except ValueError:
                    raise UserError(f"option --{option}: '{part}' is not a number") from None
    return out


def add_config_options(parser, task, defaults=None):
    """One option per Config field that applies to ``task``; the defaults shown are the
    task's defaults (or ``defaults``); nothing is set unless given (argparse.SUPPRESS)."""
    defaults = defaults or Config.for_task(task)
    group = parser.add_argument_group("options")
    for f in dataclasses.fields(Config):
        if task not in f.metadata["tasks"]:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        if default is None and f.metadata.get("default_text"):
            shown = f.metadata["default_text"]
        help_text = f.metadata["help"]
        if "(default:" not in help_text:
            help_text += f" (default: {shown})"
        kw = dict(default=argparse.SUPPRESS, help=help_text.replace("%", "%%"), dest=f.name)
        if f.metadata.get("metavar"):
            kw["metavar"] = f.metadata["metavar"]
        ftype = config_mod.field_type(f.name)[0]
        if ftype is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif ftype is list or typing.get_origin(ftype) is list:
            group.add_argument(flag, nargs="+", **kw)
        else:
            if f.metadata.get("choices"):
                kw["choices"] = f.metadata["choices"]
            group.add_argument(flag, type=ftype, **kw)
        if task == "reconstruct" and f.name == "content_layers":
            group.add_argument("--layer", dest="content_layers", nargs="+", default=argparse.SUPPRESS,
                               metavar="LAYER", help="same as --content-layers")


def add_run_options(parser):
    run = parser.add_argument_group("run")
    run.add_argument("-o", "--output", required=True, help="output image file (.png or .jpg); "
                     "a run record OUTPUT.json is written beside it")
    run.add_argument("--from-record", metavar="RECORD", help="repeat the run a record (.json, or "
                     "a .png impasto wrote) describes; options given here override it")
    run.add_argument("--save-every", type=int, default=0, metavar="N",
                     help="also write the image every N steps (OUTPUT_stepN.png)")
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    run.add_argument("--plot", action="store_true", help="also plot the loss terms against step "
                     "and time (OUTPUT_loss.png; needs matplotlib: pip install 'impasto[plot]')")


def build_parser():
    parser = OneLineParser(prog="impasto", description="Neural style transfer by optimisation "
                           "(Gatys, Ecker & Bethge 2016).")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"impasto {__version__}")
    sub = parser.add_subparsers(dest="task", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for task in TASKS:
        p = sub.add_parser(task, help=DESCRIPTIONS[task], description=DESCRIPTIONS[task])
        if task == "video":   # its own positionals, regions and run options: see video_cli
            from . import video_cli
            video_cli.add_arguments(p, add_config_options)
            continue
        for name, nargs, help_text in POSITIONALS[task]:
            p.add_argument(name, nargs=nargs or "?", help=help_text)
        if task == "transfer":
            g = p.add_argument_group("regions")
            g.add_argument("--mask", metavar="MASK", help="a colour-coded image at the content's "
                           "aspect ratio: each colour marks a region with its own style")
            g.add_argument("--region-style", action="append", metavar="COLOUR=STYLE",
                           help="the style of the region painted COLOUR in --mask (hex like "
                           "ff0000 or a name like red); STYLE an image, or none to keep the "
                           "content there. Repeat once per colour")
        add_config_options(p, task)
        add_run_options(p)
    add_sweep_parser(sub)
    add_explore_parser(sub)
    sub.add_parser("options", help="print every option with its default, as a markdown table",
                   description="Print every option of every task with its default (markdown).")
    lp = sub.add_parser("layers", help="list the layer names of a model",
                        description="List the layer names of a model, in order; the second "
                        "column marks its default content and style layers.")
    lp.add_argument("--model", default=Config().model, choices=list(backbones.MODELS))
    return parser


def _workbench_run_options(p, what):
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", required=True, metavar="DIR", help=f"folder for the {what} "
                   "(created if missing): one image and run record per run, results.csv, the "
                   "figures; a re-run skips the runs that are already done")
    g.add_argument("--tile", type=int, default=256, metavar="PX", help="long side of each "
                   "picture in the figures (default: 256)")
    g.add_argument("--plot", action="store_true", help="also plot each run's loss terms "
                   "(STEM_loss.png); the overlay of all runs, losses.png, is always drawn when "
                   "matplotlib is installed")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def add_sweep_parser(sub):
    p = sub.add_parser("sweep", help="run every combination of the varied options into a "
                       "labelled contact sheet, a CSV and loss curves",
                       description="Run every combination of the --vary options with the same "
                       "seed; each output is named after its options. Writes contact_sheet.png "
                       "(rows and columns are the varied options), results.csv (final loss "
                       "terms, steps, seconds) and losses.png (every run's loss curve).")
    p.add_argument("inputs", nargs="*", metavar="IMAGE", help="CONTENT STYLE [STYLE ...] for "
                   "transfer, CONTENT for reconstruct, STYLE for texture")
    p.add_argument("--task", dest="sweep_task", choices=("transfer", "reconstruct", "texture"),
                   default="transfer", help="what each run does (default: transfer)")
    p.add_argument("--vary", action="append", required=True, metavar="NAME=V1,V2",
                   help="an option and its values, e.g. style_weight=1e2,1e3,1e4 or "
                   "init=content,gaussian; list values join items with +, e.g. "
                   "style_layers=relu1_1+relu2_1,relu1_1+relu2_1+relu3_1; options that change "
                   "together are linked with ':', e.g. optimizer:lr=lbfgs:1,adam:0.02. Repeat for "
                   "more axes: the last one gives the columns of the contact sheet")
    add_config_options(p, "transfer")
    _workbench_run_options(p, "sweep")


def add_explore_parser(sub):
    p = sub.add_parser("explore", help="reconstruct the content from each block and synthesise "
                       "textures from growing sets of style layers, as figures",
                       description="Layer exploration as in Gatys et al.: reconstructions.png, the "
                       "content reconstructed from the features of each block (relu1_1 ... "
                       "relu5_1), and textures.png, textures from growing sets of style layers "
                       "(relu1_1; relu1_1 + relu2_1; ...).")
    p.add_argument("content", help="content image (for the reconstructions)")
    p.add_argument("style", help="style image (for the textures)")
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="the layers, shallow to deep "
                   "(default: the model's default style layers, relu1_1 ... relu5_1 for VGG)")
    add_config_options(p, "transfer", defaults=Config.for_task("transfer", **EXPLORE_DEFAULTS))
    _workbench_run_options(p, "figures")


def options_markdown() -> str:
    """Every option, the tasks it applies to and its default per task, from Config."""
    per_task = {t: Config.for_task(t) for t in TASKS}
    rows = ["| option | tasks | default | what it does |", "|---|---|---|---|"]
    for f in dataclasses.fields(Config):
        tasks = f.metadata["tasks"]
        values = {t: getattr(per_task[t], f.name) for t in tasks}
        fmt = lambda v: ",".join(map(str, v)) if isinstance(v, list) else (
            f.metadata.get("default_text") or "None" if v is None else str(v))
        if len({fmt(v) for v in values.values()}) == 1:
            default = fmt(next(iter(values.values())))
        else:
            default = "; ".join(f"{t}: {fmt(v)}" for t, v in values.items())
        choices = f.metadata.get("choices")
        text = f.metadata["help"] + (f" ({' / '.join(choices)})" if choices else "")
        rows.append(f"| `--{f.name.replace('_', '-')}` | {', '.join(tasks)} | `{default}` | "
                    f"{text.replace('|', '/')} |")
    return "\n".join(rows)


def layers_text(model: str) -> str:
    """Every layer of ``model``, one a line, its default content/style layers marked."""
    content, style = backbones.default_layers(model)
    lines = []
    for name in backbones.layers(model):
        marks = [m for m, ds in (("default content", content), ("default style", style))
                 if name in ds]
        lines.append(f"{name}\t{', '.join(marks)}" if marks else name)
    return "\n".join(lines)


def _layers_for_model(options: dict, given: dict) -> None:
    """A record's layers belong to its model: with another --model (and no layers given),
    layers that model lacks fall back to its defaults."""
    for name in ("content_layers", "style_layers"):
        if name in given or options.get(name) is None:
            continue
        try:
            backbones.check_layers(options["model"], options[name])
        except UserError:
            options[name] = None
            options[name.replace("layers", "layer_weights")] = None


def options_from_args(args, task) -> dict:
    """The Config options the user gave on the command line (and only those)."""
    given = {}
    for f in dataclasses.fields(Config):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if isinstance(value, list):
            conv = float if _is_weight_list(f.name) else str
            value = _split(value, conv, f.name.replace("_", "-"))
        given[f.name] = value
    return given


class Progress:
    """A progress bar on stderr: step, loss terms, rate; a line per 10% when not a terminal."""

    def __init__(self, stream=sys.stderr, quiet=False):
        self.stream, self.quiet = stream, quiet
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last_print = -1.0
        self.width = 24
        self.work = None   # cumulative work (pixels) after each step, from the schedule

    def set_schedule(self, schedule):
        """Weight the ETA by each step's pixel count: coarse steps are cheap, fine ones dear."""
        self.work, total = [], 0
        for side, n in schedule:
            for _ in range(n):
                total += side * side
                self.work.append(total)

    def eta(self, s):
        if self.work and 0 < s.step <= len(self.work):
            done, total = self.work[s.step - 1], self.work[-1]
            return s.elapsed / done * (total - done)
        rate = s.step / s.elapsed if s.elapsed > 0 else 0.0
        return (s.total_steps - s.step) / rate if rate > 0 else 0.0

    def __call__(self, s):
        if self.quiet:
            return
        frac = s.step / max(1, s.total_steps)
        rate = s.step / s.elapsed if s.elapsed > 0 else 0.0
        eta = self.eta(s)
        terms = " ".join(f"{k} {v:.4g}" for k, v in s.terms.items())
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        line = (f"step {s.step}/{s.total_steps} [{bar}] loss {s.loss:.4g} ({terms}) "
                f"{rate:.2f} step/s eta {_duration(eta)}")
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
            self.stream.flush()
        else:
            tick = math.floor(frac * 10)
            if tick > self.last_print or s.step == s.total_steps:
                self.last_print = tick
                self.stream.write(line + "\n")
                self.stream.flush()

    def close(self):
        if self.tty and not self.quiet:
            self.stream.write("\n")


def _duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def load_inputs(task, args, record):
    """Content/style paths and region specs from the command line, else from the record."""
    rec_inputs = (record or {}).get("inputs", {})
    content = getattr(args, "content", None) or rec_inputs.get("content")
    styles = getattr(args, "styles", None) or rec_inputs.get("styles") or []
    mask = getattr(args, "mask", None) or rec_inputs.get("mask")
    region_styles = getattr(args, "region_style", None) or rec_inputs.get("region_styles") or []
    if task in ("transfer", "reconstruct") and not content:
        raise UserError(f"impasto {task}: give a CONTENT image (or --from-record RECORD)")
    if mask or region_styles:
        if not mask:
            raise UserError("option --region-style: needs --mask MASK.png (the regions' colours)")
        if not region_styles:
            raise UserError("option --mask: give one --region-style COLOUR=STYLE per region "
                            "colour (STYLE an image or none)")
        if styles:
            raise UserError("impasto transfer: with --mask, give the styles with --region-style "
                            "COLOUR=STYLE, not as STYLE arguments")
    elif task in ("transfer", "texture") and not styles:
        raise UserError(f"impasto {task}: give a STYLE image (or --from-record RECORD)")
    if task == "texture" and len(styles) > 1:
        raise UserError("impasto texture: give one STYLE image")
    return ((content if task != "texture" else None), (styles if task != "reconstruct" else []),
            mask, [parse_region_style(r) for r in region_styles])


def parse_region_style(spec):
    """'COLOUR=STYLE' (or a [colour, style] pair from a record) -> (colour text, path or None)."""
    if isinstance(spec, (list, tuple)):
        colour, style = spec
    else:
        colour, sep, style = spec.partition("=")
        if not sep or not colour or not style:
            raise UserError(f"option --region-style: '{spec}' is not COLOUR=STYLE (e.g. "
                            "ff0000=starry.jpg or 00ff00=none)")
    return colour, (None if style is None or style.lower() == "none" else style)


def load_regions(mask_path, specs, content):
    """(mask, styles, blend) per region from a colour mask file and COLOUR=STYLE specs."""
    from . import image as imageio, regions

    mask_img = imageio.load(mask_path)
    regions.check_aspect(mask_img.size, content.size, str(mask_path))
    colours = [regions.parse_color(c) for c, _ in specs]
    if len(set(colours)) != len(colours):
        raise UserError("option --region-style: the same colour is given twice")
    masks = regions.masks_from_image(mask_img, colours, str(mask_path))
    return [(m, [imageio.load(p)] if p else [], None) for m, (_, p) in zip(masks, specs)]


def print_plan(info):
    """One line before the first step: the output size, the scales, and for large runs the
    estimated peak memory and time."""
    h, w = info["output_hw"]
    scales = " -> ".join(f"{side}px x{n}" for side, n in info["schedule"])
    line = (f"impasto: {w}x{h} output, scales {scales}, {info['precision']} on {info['device']}; "
            f"estimated peak memory {info['peak_bytes'] / 2**30:.1f} GiB")
    if info.get("seconds"):
        line += f", time {_duration(info['seconds'])}"
    free = info.get("available_bytes")
    if free and info["peak_bytes"] > free:
        line += (f" - more than the {free / 2**30:.1f} GiB free: it may run out of memory; "
                 "use a smaller --size")
    print(line, file=sys.stderr, flush=True)


def run_task(args, argv) -> int:
    from . import image as imageio, record as records, tasks

    task = args.task
    record = records.read(args.from_record) if args.from_record else None
    if record is not None and record["task"] != task:
        raise UserError(f"--from-record {args.from_record}: the record is of an 'impasto "
                        f"{record['task']}' run, not '{task}'")
    options = dict(record["options"]) if record else {}
    options = {k: v for k, v in options.items() if k in config_mod.field_names()}
    given = options_from_args(args, task)
    options.update(given)
    if record is not None and "model" in given:
        _layers_for_model(options, given)
    cfg = Config.for_task(task, **options)

    output = imageio.check_writable(args.output)
    if args.plot:
        from . import figures
        figures.require_plotting()
    if args.save_every < 0:
        raise UserError(f"option --save-every: must be zero or more, got {args.save_every}")
    content_path, style_paths, mask_path, region_specs = load_inputs(task, args, record)
    content = imageio.load(content_path) if content_path else None
    styles = [imageio.load(p) for p in style_paths]
    regions = load_regions(mask_path, region_specs, content) if mask_path else None
    init_image = init_path = None
    if cfg.init not in INITS:
        # a record keeps its init file relative to itself (inputs), like content and style
        rec_init = (record or {}).get("inputs", {}).get("init")
        init_path = rec_init if rec_init and not hasattr(args, "init") else cfg.init
        init_image = imageio.load(init_path)

    progress = Progress(quiet=args.quiet)

    def on_plan(info):
        progress.set_schedule(info["schedule"])
        print_plan(info)

    def callback(s):
        progress(s)
        if args.save_every and s.step % args.save_every == 0:
            snap = output.with_name(f"{output.stem}_step{s.step:05d}{output.suffix}")
            imageio.save(s.image.clamp(0, 1).cpu(), snap)

    try:
        result = tasks.run(task, cfg, content, styles, init_image=init_image, callback=callback,
                           regions=regions, on_plan=None if args.quiet else on_plan)
    finally:
        progress.close()
    inputs = {"content": content_path, "styles": list(style_paths)}
    if init_image is not None:
        inputs["init"] = init_path
    if mask_path:
        inputs["mask"] = mask_path
        inputs["region_styles"] = [[c, p] for c, p in region_specs]
    rec = records.build(result, output, inputs, argv=["impasto", *argv])
    imageio.save(result.tensor, output, metadata=records.png_metadata(rec)
                 if output.suffix.lower() == ".png" else None)
    records.write(rec, records.record_path(output))
    if args.plot:
        from . import figures, sweep
        figures.plot_history(result.history, sweep.loss_weights(rec["options"]),
                             output.with_name(f"{output.stem}_loss.png"), title=output.name)
    out = result.outcome
    if not args.quiet:
        terms = " ".join(f"{k} {v:.4g}" for k, v in out.terms.items())
        h, w = result.tensor.shape[-2:]
        print(f"wrote {output} ({w}x{h}) in {result.timings['total_s']:.1f} s: {out.steps} steps, "
              f"stop: {out.stop_reason}, loss {out.loss:.4g} ({terms}), {result.precision} on "
              f"{result.device}, seed {result.config.seed}; record {records.record_path(output)}",
              file=sys.stderr)
    return EXIT_INTERRUPTED if out.stop_reason == "interrupted" else 0


def _output_dir(path) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out}: is a file; give a folder for the results")
    if not out.parent.is_dir():
        raise UserError(f"-o {out}: folder {out.parent} does not exist (create it first)")
    try:
        out.mkdir(exist_ok=True)
    except OSError as e:
        raise UserError(f"-o {out}: cannot create the folder ({e.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"-o {out}: cannot write to this folder (permission denied)")
    return out


def _seed_for(outdir, options, kind, argv):
    """The seed every run of a sweep shares: the one given, else the one an earlier run of
    this folder chose (so a re-run can skip finished runs), else a new random one."""
    import json
    from . import image as imageio
    state = outdir / f"{kind}.json"
    seed = options.get("seed")
    if seed is None:
        try:
            seed = int(json.loads(state.read_text())["seed"])
        except (OSError, ValueError, KeyError, TypeError):
            seed = int.from_bytes(os.urandom(4), "little")
    text = json.dumps({"seed": seed, "command": ["impasto", *argv]}, indent=1)
    imageio.atomic_write(state, lambda fh: fh.write(text.encode()))
    return seed


def _init_images(cells):
    from . import image as imageio
    paths = {c.options.get("init") for c in cells} - set(INITS) - {None}
    return {p: imageio.load(p) for p in sorted(paths)}


def _announcer(kind, quiet):
    def announce(n, total, cell, skipped):
        if quiet:
            return
        what = "done earlier, skipped" if skipped else "running"
        print(f"impasto {kind}: [{n}/{total}] {cell.stem}: {what}", file=sys.stderr, flush=True)
    return announce


def _progress_factory(quiet):
    return None if quiet else (lambda cell: Progress())


def _finish(kind, cells, outdir, written, complete):
    ran = sum(c.status == "ran" for c in cells)
    skipped = sum(c.status == "done" for c in cells)
    names = ", ".join(p.name for p in written)
    print(f"impasto {kind}: {ran} run, {skipped} skipped (done earlier), "
          f"{len(cells) - ran - skipped} not run; wrote {names} in {outdir}", file=sys.stderr)
    if not complete:
        print(f"impasto {kind}: interrupted; run the same command again to continue",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def run_sweep(args, argv) -> int:
    from . import image as imageio, sweep

    task = args.sweep_task
    wanted = {"transfer": "CONTENT STYLE [STYLE ...]", "reconstruct": "CONTENT",
              "texture": "STYLE"}[task]
    n = len(args.inputs)
    if (task == "transfer" and n < 2) or (task != "transfer" and n != 1):
        raise UserError(f"impasto sweep --task {task}: give {wanted} (got {n} image"
                        f"{'s' if n != 1 else ''})")
    if args.tile < 16:
        raise UserError(f"option --tile: must be at least 16 pixels, got {args.tile}")
    if args.plot:
        from . import figures
        figures.require_plotting()
    varies = [sweep.parse_vary(spec, task) for spec in args.vary]
    sweep.check_axes(varies)
    base = {k: v for k, v in options_from_args(args, "transfer").items()
            if k in sweep.known_fields(task)}
    content_path = args.inputs[0] if task != "texture" else None
    style_paths = args.inputs[1:] if task == "transfer" else (args.inputs if task == "texture" else [])
    images = {p: imageio.load(p) for p in args.inputs}
    outdir = _output_dir(args.output)
    base["seed"] = _seed_for(outdir, base, "sweep", argv)
    prefix = "_".join(sweep.slug(p) for p in args.inputs)
    cells = sweep.sweep_cells(task, base, varies, prefix)
    init_images = _init_images(cells)
    content = images[content_path] if content_path else None
    styles = [images[p] for p in style_paths]
    inputs = {task: {"content": content_path, "styles": list(style_paths)}}
    title = sweep.sweep_title(task, [p.split("/")[-1] for p in args.inputs],
                              Config.for_task(task, **base), {n for v in varies for n in v.names})
    complete = False
    try:
        complete = sweep.run_cells(cells, {task: (content, styles)}, inputs, outdir,
                                   init_images=init_images, progress=_progress_factory(args.quiet),
                                   announce=_announcer("sweep", args.quiet), plot=args.plot,
                                   argv=["impasto", *argv])
    finally:
        written = sweep.write_summaries(cells, varies, outdir, title, args.tile)
    return _finish("sweep", cells, outdir, written, complete)


def run_explore(args, argv) -> int:
    from . import explore, image as imageio, sweep

    if args.tile < 16:
        raise UserError(f"option --tile: must be at least 16 pixels, got {args.tile}")
    if args.plot:
        from . import figures
        figures.require_plotting()
    options = {**EXPLORE_DEFAULTS, **options_from_args(args, "transfer")}
    model = options.get("model", Config().model)
    layers = args.layers or explore.blocks(model)
    backbones.check_layers(model, layers, "layers")
    content, style = imageio.load(args.content), imageio.load(args.style)
    outdir = _output_dir(args.output)
    options["seed"] = _seed_for(outdir, options, "explore", argv)
    recon, textures = explore.cells(options, layers)
    cells = recon + textures
    init_images = _init_images(cells)
    inputs = {"reconstruct": {"content": args.content, "styles": []},
              "texture": {"content": None, "styles": [args.style]}}
    sources = {"reconstruct": (content, []), "texture": (None, [style])}
    complete = False
    try:
        complete = sweep.run_cells(cells, sources, inputs, outdir, init_images=init_images,
                                   progress=_progress_factory(args.quiet),
                                   announce=_announcer("explore", args.quiet), plot=args.plot,
                                   argv=["impasto", *argv])
    finally:
        written = sweep.write_summaries(cells, None, outdir, "", args.tile)
        if written:   # something was made: the two figures
            size = Config.for_task("reconstruct", **explore._for("reconstruct", options)).size
            about = f"({model}, {size} px, seed {options['seed']})"
            for name, row, source, label, what in (
                    ("reconstructions.png", recon, content, "original",
                     f"Content reconstructed from one layer's features, from noise {about}"),
                    ("textures.png", textures, style, "style image",
                     f"Textures from growing sets of style layers {about}")):
                fig = explore.figure(source, label, row, outdir, what, args.tile)
                imageio.save(fig, outdir / name)
                written.append(outdir / name)
    return _finish("explore", cells, outdir, written, complete)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.task == "options":
            print(options_markdown())
            return 0
        if args.task == "layers":
            print(layers_text(args.model))
            return 0
        if args.task == "sweep":
            return run_sweep(args, argv)
        if args.task == "explore":
            return run_explore(args, argv)
        if args.task == "video":
            from .video_cli import run_video
            return run_video(args, argv)
        return run_task(args, argv)
    except UserError as e:
        print(f"impasto: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("impasto: interrupted before the first step; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print("impasto: error: out of memory: use a smaller --size", file=sys.stderr)
        return EXIT_USER_ERROR
    except RuntimeError as e:
        if "out of memory" in str(e).lower():
            print("impasto: error: out of memory on the device: use a smaller --size or "
                  "--device cpu", file=sys.stderr)
            return EXIT_USER_ERROR
        raise


if __name__ == "__main__":
    sys.exit(main())
