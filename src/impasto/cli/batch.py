"""``impasto batch``: every content × style pair into one folder, on the local or the Ray
executor. The options are checked once for all pairs (a bad one stops the batch before any
work); a bad input file fails only its own pairs, which are reported in results.csv, on the
contact sheet and in the summary, with exit status 1."""
from __future__ import annotations

import sys
from pathlib import Path

from .. import api, batch, outputs, sweep
from ..errors import UserError
from . import workbench
from .executing import executor_from_args
from .parser import options_from_args


def _for(task: str, options: dict) -> dict:
    """The options that apply to ``task`` (transfer for images, video for clips)."""
    return {k: v for k, v in options.items() if k in sweep.known_fields(task)}


def _pairs(args) -> tuple[list, dict]:
    """The pairs, and every input path given (files and folders), to keep outputs off them."""
    if args.pairs:
        if args.contents or args.style:
            raise UserError("impasto batch: give either CONTENT... --style STYLE... or --pairs "
                            "FILE.csv, not both")
        pairs = batch.read_pairs(args.pairs)
        given = {"--pairs file": Path(args.pairs)}
    else:
        if not args.contents:
            raise UserError("impasto batch: give CONTENT images (files, folders or globs) and "
                            "--style STYLE ..., or --pairs FILE.csv")
        if not args.style:
            raise UserError("impasto batch: give --style STYLE ... (files, folders or globs)")
        pairs = batch.cross(batch.expand(args.contents, "content"),
                            batch.expand(args.style, "--style"))
        given = {f"input {p}": Path(p) for p in [*args.contents, *args.style]
                 if Path(p).exists()}
    given.update({f"input {p}": Path(p) for pair in pairs for p in (pair.content, pair.style)})
    return pairs, given


def _prepare(cells, outdir, args, argv):
    """A checked job for every cell whose inputs are good; a cell whose input or output is bad
    is marked failed with the reason (and gets no job). Inputs are decoded once for all."""
    cache, good, jobs = {}, [], []
    for c in cells:
        if batch.is_video(c.pair.content):            # a clip: impasto video, frames in order
            from .video import ClipJob
            good.append(c)
            jobs.append(ClipJob(c.pair.content, c.pair.style,
                                batch.clip_output(outdir, c.stem, c.pair.content),
                                _for("video", c.options)))
            continue
        request = api.Request("transfer", _for("transfer", c.options), content=c.pair.content,
                              styles=[c.pair.style], output=str(outdir / f"{c.stem}{sweep.EXT}"),
                              plot=args.plot, argv=["impasto", *argv],
                              max_input_pixels=args.max_input_pixels)
        try:
            job = api.prepare(request, check_outputs=False, cache=cache)
            if outdir.is_dir():
                outputs.check_output(job.output, job.spec.input_paths(), args.overwrite)
        except UserError as e:
            c.status, c.error = "failed", str(e)
            continue
        good.append(c)
        jobs.append(job)
    return good, jobs


def run(args, argv, interrupt=None) -> int:
    executor = executor_from_args(args)
    workbench.check_tile(args)
    options = options_from_args(args, "transfer")     # the video ones too (for clips)
    cfg = api.make_config("transfer", _for("transfer", options))   # a bad option stops it all
    api.check_network(cfg, "transfer")
    pairs, given = _pairs(args)
    for p in pairs:                                   # and so does one a pair sets for itself
        if p.options or batch.is_video(p.content):
            task = "video" if batch.is_video(p.content) else "transfer"
            api.make_config(task, _for(task, {**options, **p.options}))
    outdir = outputs.check_output_dir(args.output, given)
    cells = batch.cells(pairs, options)
    good, jobs = _prepare(cells, outdir, args, argv)
    seed = workbench.remembered_seed(outdir, options, "batch")
    title = sweep.sweep_title("transfer", [], cfg.replace(seed=seed), set()).replace(
        "impasto transfer ·  · ", "impasto batch · ")
    complete = False
    try:
        if good:
            complete = workbench.run("batch", good, jobs, outdir, seed, args, argv, interrupt,
                                     executor, check=lambda *a: None)
        else:
            workbench.open_folder(outdir, seed, "batch", argv)
            complete = True
    finally:
        written = sweep.write_summaries(
            cells, None, outdir, title, args.thumb, sheet=batch.sheet(cells, outdir, title,
                                                                     args.thumb),
            columns=batch.csv_columns(pairs, options), overlay=False) if outdir.is_dir() else []
    if not args.quiet:
        print(f"impasto batch: {len(pairs)} pairs ({len({p.content for p in pairs})} contents, "
              f"{len({p.style for p in pairs})} styles)", file=sys.stderr)
    return workbench.finish("batch", cells, outdir, written, complete)
