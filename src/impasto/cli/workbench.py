"""``impasto sweep`` and ``impasto explore``: many runs into one folder, every run checked
before the folder is created or anything runs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .. import backbones, explore, sweep
from ..config import EXPLORE_DEFAULTS, Config
from ..errors import UserError
from .executing import executor_from_args
from .parser import EXIT_INTERRUPTED, options_from_args
from .progress import Progress

EXIT_FAILED = 1          # some runs failed (each is named in the summary); the rest were done


MAX_THUMB = 2048     # a 10 x 10 sweep's contact sheet at this tile is already 1.2 GB of pixels
SUMMARIES = {"sweep": ("sweep.json", "results.csv", "contact_sheet.png", "losses.png"),
             "explore": ("explore.json", "results.csv", "losses.png", "reconstructions.png",
                         "textures.png")}


def check_tile(args):
    if not 16 <= args.thumb <= MAX_THUMB:
        raise UserError(f"option --thumb: must be between 16 and {MAX_THUMB} pixels, got "
                        f"{args.thumb}")
    if args.plot:
        from .. import figures
        figures.require_plotting()


def remembered_seed(outdir: Path, options: dict, kind: str) -> int:
    """The seed every run shares: the one given, else the one an earlier run of this folder
    chose (so a re-run can skip finished runs), else a new random one. Reads only."""
    from ..tasks import new_seed
    if options.get("seed") is not None:
        return options["seed"]
    try:
        seed = json.loads((outdir / f"{kind}.json").read_text())["seed"]
        if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**63:
            return seed
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        pass
    return new_seed()


def open_folder(outdir: Path, seed: int, kind: str, argv) -> None:
    """Create the folder (everything has been checked) and remember the seed in it."""
    from .. import image as imageio
    try:
        outdir.mkdir(exist_ok=True)
    except OSError as e:
        raise UserError(f"-o {outdir}: cannot create the folder ({e.strerror})") from None
    text = json.dumps({"seed": seed, "command": ["impasto", *argv]}, indent=1)
    imageio.atomic_write(outdir / f"{kind}.json", lambda fh: fh.write(text.encode()))


def _announcer(kind, quiet):
    def announce(n, total, cell, skipped):
        if quiet:
            return
        what = "done earlier, skipped" if skipped else "running"
        print(f"impasto {kind}: [{n}/{total}] {cell.stem}: {what}", file=sys.stderr, flush=True)
    return announce


class _CellProgress(Progress):
    """The progress bar of one cell, fed with the run API's events."""

    def __init__(self, interrupt, quiet):
        super().__init__(quiet=quiet)
        self.interrupt = interrupt

    def __call__(self, e):
        if e.kind == "plan":
            if self.interrupt is not None:
                self.interrupt.arm()
            self.set_schedule(e.schedule, e.step_seconds)
        elif e.kind == "step":
            super().__call__(e)


def run(kind, cells, jobs, outdir, seed, args, argv, interrupt, executor=None,
        check=sweep.check_outputs):
    """Check the outputs (and the summaries the folder will get), create the folder, run every
    cell on the executor the options chose (``executor`` when given, already made). Returns
    whether every cell was done."""
    from .executing import JobsProgress, detail
    executor = executor or executor_from_args(args)
    check(jobs, outdir, args.overwrite, SUMMARIES.get(kind, ()), kind)
    if executor.name != "local":
        executor.start()            # a cluster that cannot be reached: one line, no folder
    open_folder(outdir, seed, kind, argv)
    complete = False
    if executor.name == "local":
        kw = dict(progress=lambda cell: _CellProgress(interrupt, args.quiet),
                  announce=_announcer(kind, args.quiet))
    else:
        bar = JobsProgress(kind, len(cells), quiet=args.quiet)
        kw = dict(announce=lambda n, total, cell, skipped: bar(cell.stem, "done earlier, "
                                                                 "skipped"),
                  finished=lambda n, total, cell: bar(cell.stem, cell.status, detail(cell)))
    try:
        if executor.name != "local":
            bar.started(sum(1 for c in cells if c.status == "pending"),
                        f"Ray ({executor.cpus():g} CPUs, {executor.threads} per run)")
            if interrupt is not None:
                interrupt.arm()          # Ctrl-C now cancels the running tasks
        complete = sweep.run_cells(cells, jobs, outdir, seed=seed, cancel=interrupt,
                                   executor=executor, **kw)
    except KeyboardInterrupt:
        complete = False
    finally:
        executor.close()
        if executor.name != "local":
            bar.close()
    return complete


def finish(kind, cells, outdir, written, complete):
    """The summary line(s) and the exit status: 130 when interrupted, 1 when a run failed."""
    ran = sum(c.status == "ran" for c in cells)
    skipped = sum(c.status == "done" for c in cells)
    failed = [c for c in cells if c.status == "failed"]
    names = ", ".join(p.name for p in written)
    print(f"impasto {kind}: {ran} run, {skipped} skipped (done earlier), "
          + (f"{len(failed)} failed, " if failed else "")
          + f"{len(cells) - ran - skipped - len(failed)} not run; wrote {names} in {outdir}",
          file=sys.stderr)
    for c in failed:
        print(f"impasto {kind}: failed: {c.stem}: {c.error}", file=sys.stderr)
    if not complete:
        print(f"impasto {kind}: interrupted; run the same command again to continue",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_FAILED if failed else 0


def run_sweep(args, argv, interrupt=None) -> int:
    from .. import outputs
    task = args.sweep_task
    wanted = {"transfer": "CONTENT STYLE [STYLE ...]", "reconstruct": "CONTENT",
              "texture": "STYLE"}[task]
    n = len(args.inputs)
    if (task == "transfer" and n < 2) or (task != "transfer" and n != 1):
        raise UserError(f"impasto sweep --task {task}: give {wanted} (got {n} image"
                        f"{'s' if n != 1 else ''})")
    check_tile(args)
    executor = executor_from_args(args)
    varies = [sweep.parse_vary(spec, task) for spec in args.vary]
    sweep.check_axes(varies)
    base = {k: v for k, v in options_from_args(args, "transfer").items()
            if k in sweep.known_fields(task)}
    content = args.inputs[0] if task != "texture" else None
    styles = args.inputs[1:] if task == "transfer" else (args.inputs if task == "texture" else [])
    outdir = outputs.check_output_dir(args.output, {f"input {p}": Path(p) for p in args.inputs})
    prefix = "_".join(sweep.slug(p) for p in args.inputs)
    cells = sweep.sweep_cells(task, base, varies, prefix)
    jobs = sweep.prepare(cells, {task: (content, styles)}, outdir, plot=args.plot,
                         max_input_pixels=args.max_input_pixels, argv=["impasto", *argv])
    seed = remembered_seed(outdir, base, "sweep")
    title = sweep.sweep_title(task, [p.split("/")[-1] for p in args.inputs],
                              Config.for_task(task, **{**base, "seed": seed}),
                              {n for v in varies for n in v.names})
    complete = False
    try:
        complete = run("sweep", cells, jobs, outdir, seed, args, argv, interrupt, executor)
    finally:
        written = sweep.write_summaries(cells, varies, outdir, title, args.thumb) \
            if outdir.is_dir() else []
    return finish("sweep", cells, outdir, written, complete)


def run_explore(args, argv, interrupt=None) -> int:
    from .. import image as imageio, outputs
    check_tile(args)
    executor = executor_from_args(args)
    options = {**EXPLORE_DEFAULTS, **options_from_args(args, "transfer")}
    model = Config.for_task("transfer", **options).model    # the options' errors first
    layers = args.layers or explore.blocks(model)
    backbones.check_layers(model, layers, "layers")
    twice = sorted({n for n in layers if layers.count(n) > 1})
    if twice:
        raise UserError(f"option --layers: {', '.join(twice)} given twice; give each layer once")
    outdir = outputs.check_output_dir(args.output, {"content image": Path(args.content),
                                                    "style image": Path(args.style)})
    recon, textures = explore.cells(options, layers)
    cells = recon + textures
    jobs = sweep.prepare(cells, {"reconstruct": (args.content, []),
                                 "texture": (None, [args.style])}, outdir, plot=args.plot,
                         max_input_pixels=args.max_input_pixels, argv=["impasto", *argv])
    seed = remembered_seed(outdir, options, "explore")
    complete = False
    try:
        complete = run("explore", cells, jobs, outdir, seed, args, argv, interrupt, executor)
    finally:
        written = sweep.write_summaries(cells, None, outdir, "", args.thumb) \
            if outdir.is_dir() else []
        if written:   # something was made: the two figures
            size = jobs[0].cfg.size
            about = f"({model}, {size} px, seed {seed})"
            content = jobs[0].loaded.content
            style = jobs[len(recon)].loaded.styles[0]
            for name, row, source, label, what in (
                    ("reconstructions.png", recon, content, "original",
                     f"Content reconstructed from one layer's features, from noise {about}"),
                    ("textures.png", textures, style, "style image",
                     f"Textures from growing sets of style layers {about}")):
                fig = explore.figure(source, label, row, outdir, what, args.thumb)
                imageio.save(fig, outdir / name)
                written.append(outdir / name)
    return finish("explore", cells, outdir, written, complete)
