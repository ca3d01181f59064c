"""``impasto transfer | reconstruct | texture``: the command line as a Request to the run API,
its events printed."""
from __future__ import annotations

import sys

from .. import api
from ..budget import process_start
from .parser import EXIT_INTERRUPTED, options_from_args
from .progress import Progress, print_plan


def request_from_args(args, argv) -> api.Request:
    task = args.task
    regions = list(getattr(args, "region_style", None) or [])
    return api.Request(
        task, options_from_args(args, task),
        content=getattr(args, "content", None) if task != "texture" else None,
        styles=list(getattr(args, "styles", None) or []) if task != "reconstruct" else [],
        mask=getattr(args, "mask", None), region_styles=regions, output=args.output,
        from_record=args.from_record, overwrite=args.overwrite, save_every=args.save_every,
        plot=args.plot, max_input_pixels=args.max_input_pixels, argv=["impasto", *argv],
        started_at=process_start())


def run(args, argv, interrupt=None) -> int:
    request = request_from_args(args, argv)
    job = api.prepare(request)
    progress = Progress(quiet=args.quiet)

    def on_event(e):
        if e.kind == "plan":
            if interrupt is not None:
                interrupt.arm()
            progress.set_schedule(e.schedule, e.step_seconds)
            if not args.quiet:
                print_plan(e, show_reads=bool(args.from_record))
        elif e.kind == "step":
            progress(e)

    try:
        done = job.run(on_event, cancel=interrupt)
    finally:
        progress.close()
    result, out = done.result, done.result.outcome
    if not args.quiet:
        terms = " ".join(f"{k} {v:.4g}" for k, v in out.terms.items())
        h, w = result.tensor.shape[-2:]
        print(f"wrote {done.output} ({w}x{h}) in {result.timings['total_s']:.1f} s: {out.steps} "
              f"steps, stop: {out.stop_reason}, loss {out.loss:.4g} ({terms}), "
              f"{result.precision} on {result.device}, seed {result.config.seed}; record "
              f"{done.record_path}", file=sys.stderr)
    if done.interrupted:
        print(f"impasto: interrupted; the best image so far is in {done.output}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
