"""The studio's runs: a queue and one worker thread that runs them through the run API.

``Jobs.submit`` checks a run at once (``api.prepare``: every option and input, with the
command line's messages) and queues it; the worker takes one run at a time and calls
``Job.run`` with a ``threading.Event`` as its cancel flag, so Stop keeps the best image as
Ctrl-C does. Each run keeps its events (plan, steps, the end) for any number of followers,
and a preview: the worker copies the current image only when a client has asked for one,
and it is encoded once per copy however many clients ask.

Runs live in the server, not in a page: closing the page does not stop one.
"""
from __future__ import annotations

import io
import os
import secrets
import threading
import time
import traceback
from pathlib import Path
from typing import Optional

from .. import api
from ..budget import Eta
from ..errors import Cancelled, UserError
from .runspec import OUTPUT_NAME, RunSpec

TERMINAL = ("done", "stopped", "failed", "cancelled")


class Preview:
    """The current image of a running run, copied by the worker only when asked for."""

    def __init__(self):
        self.cond = threading.Condition()
        self.wanted = False
        self.image = None              # a CPU copy, (1, 3, H, W) in [0, 1]
        self.step = 0
        self.serial = 0
        self.jpeg: Optional[bytes] = None
        self.jpeg_serial = -1
        self.ended = False
        self.finish = None             # image -> image as the run will write it (colour)

    def offer(self, step: int, image) -> None:
        """Called by the worker after every step: copies the image if a client wants one."""
        if not self.wanted or image is None:
            return
        snap = image.detach().float().clamp(0, 1).cpu().clone()   # the optimiser changes x in place
        with self.cond:
            self.image, self.step = snap, step
            self.serial += 1
            self.wanted = False
            self.cond.notify_all()

    def end(self) -> None:
        with self.cond:
            self.ended = True
            self.wanted = False
            self.cond.notify_all()

    def take(self, timeout: float) -> Optional[tuple]:
        """(step, JPEG bytes) of a fresh copy (waiting up to ``timeout`` for the next step),
        or of the last one; None when there is none."""
        with self.cond:
            serial = self.serial
            if not self.ended:
                self.wanted = True
                self.cond.wait_for(lambda: self.serial != serial or self.ended, timeout)
            if self.image is None:
                return None
            if self.jpeg_serial != self.serial:
                image = self.finish(self.image) if self.finish else self.image
                self.jpeg, self.jpeg_serial = encode_jpeg(image), self.serial
            return self.step, self.jpeg


def with_content_colour(content):
    """With --preserve-color luminance the run paints the luminance alone and takes the
    content's colour at the end; a preview gets that colour now, as the result will."""
    from .. import color, image as imageio
    source, sized = imageio.to_tensor(content), {}

    def finish(t):
        hw = tuple(t.shape[-2:])
        if hw not in sized:
            sized.clear()
            sized[hw] = imageio.resize(source, hw)
        return color.combine_luminance(t, sized[hw])
    return finish


def encode_jpeg(t, quality: int = 85) -> bytes:
    from .. import image as imageio
    buf = io.BytesIO()
    imageio.to_pil(t).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class Run:
    """One run of the studio: its request, state, events and preview."""

    def __init__(self, run_id: str, spec: RunSpec, folder: Path, job):
        self.id, self.spec, self.folder, self.job = run_id, spec, folder, job
        self.output = folder / OUTPUT_NAME
        self.state = "queued"
        self.created, self.started, self.finished = time.time(), None, None
        self.error: Optional[str] = None
        self.stop_reason: Optional[str] = None
        self.stopped_by: Optional[str] = None         # "stop", "server shutdown"
        self.cancel = threading.Event()
        self.events: list[dict] = []
        self.plan: Optional[dict] = None
        self.last: Optional[dict] = None
        self.preview = Preview()
        self.eta: Optional[Eta] = None

    def emit(self, event: dict) -> None:
        event["seq"] = len(self.events) + 1
        self.events.append(event)          # list.append is atomic; followers read by index

    def eta_after(self, e) -> Optional[float]:
        if self.eta is None:
            return None
        self.eta.observe(e.step, e.elapsed, e.scale)
        return self.eta.left(e.step, e.total_steps)

    def on_event(self, e) -> None:
        if e.kind == "plan":
            h, w = e.output_hw
            self.plan = {"kind": "plan", "schedule": [list(s) for s in e.schedule],
                         "output": [w, h], "precision": e.precision, "device": e.device,
                         "peak_bytes": e.peak_bytes, "seconds": e.seconds,
                         "available_bytes": e.available_bytes}
            self.eta = Eta(e.schedule, e.step_seconds)
            job = self.job
            if job is not None and job.cfg.preserve_color == "luminance" \
                    and job.loaded.content is not None:
                self.preview.finish = with_content_colour(job.loaded.content)
            self.emit(dict(self.plan))
        elif e.kind == "step":
            rate = e.step / e.elapsed if e.elapsed > 0 else None
            self.last = {"kind": "step", "step": e.step, "total_steps": e.total_steps,
                         "loss": finite(e.loss), "terms": {k: finite(v) for k, v in e.terms.items()},
                         "elapsed": round(e.elapsed, 3), "scale": e.scale, "scales": e.scales,
                         "side": e.side, "rate": rate,
                         "eta": self.eta_after(e)}
            self.emit(dict(self.last))
            self.preview.offer(e.step, e.image)

    def stop(self, by: str = "stop") -> None:
        if not self.cancel.is_set():
            self.stopped_by = by
        self.cancel.set()

    def urls(self) -> dict:
        base = f"/api/runs/{self.id}"
        return {"self": base, "events": base + "/events", "preview": base + "/preview",
                "image": base + "/image", "record": base + "/record", "thumb": base + "/thumb"}

    def public(self, position: Optional[int] = None) -> dict:
        return {"id": self.id, "state": self.state, "position": position,
                "created": self.created, "started": self.started, "finished": self.finished,
                "error": self.error, "stop_reason": self.stop_reason,
                "stopped_by": self.stopped_by, "request": self.spec.public(),
                "plan": self.plan, "last": self.last, "events": len(self.events),
                "urls": self.urls()}


def finite(x):
    import math
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


class Jobs:
    """The queue of runs and the one worker thread that computes them, one at a time."""

    def __init__(self, runs_dir: Path, max_input_pixels: int):
        self.runs_dir = Path(runs_dir)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.max_input_pixels = max_input_pixels
        self.runs: dict[str, Run] = {}
        self.queue: list[Run] = []
        self.current: Optional[Run] = None
        self.cond = threading.Condition()
        self.closing = False
        self.thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ the front end's side
    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._work, name="impasto-studio-worker",
                                           daemon=True)
            self.thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking runs; the running one stops before its next step and keeps its best
        image; queued runs are dropped."""
        with self.cond:
            self.closing = True
            for run in self.queue:
                self._drop(run, "cancelled")
            self.queue.clear()
            if self.current is not None:
                self.current.stop("server shutdown")
            self.cond.notify_all()
        if self.thread is not None:
            self.thread.join(timeout)

    def submit(self, spec: RunSpec) -> Run:
        """Check ``spec`` with the run API (UserError with its message) and queue it. A refused
        run leaves nothing behind."""
        run_id = secrets.token_urlsafe(12)
        folder = self.runs_dir / run_id
        folder.mkdir()
        try:
            job = api.prepare(spec.request(folder / OUTPUT_NAME, run_id, self.max_input_pixels))
        except BaseException:
            remove_if_empty(folder)
            raise
        run = Run(run_id, spec, folder, job)
        with self.cond:
            if self.closing:
                remove_if_empty(folder)
                raise UserError("the studio is shutting down")
            self.runs[run_id] = run
            self.queue.append(run)
            run.emit({"kind": "queued", "position": len(self.queue)
                      + (1 if self.current is not None else 0)})
            self.cond.notify_all()
        return run

    def get(self, run_id) -> Optional[Run]:
        return self.runs.get(run_id) if isinstance(run_id, str) else None

    def position(self, run: Run) -> Optional[int]:
        """1 for the run computing now, 2 for the next, ...; None once it has ended."""
        with self.cond:
            if run is self.current:
                return 1
            if run in self.queue:
                return self.queue.index(run) + 1 + (1 if self.current is not None else 0)
        return None

    def cancel(self, run: Run) -> Run:
        """A queued run is taken off the queue; a running one stops before its next step and
        keeps its best image (as Stop or Ctrl-C)."""
        with self.cond:
            if run in self.queue:
                self.queue.remove(run)
                self._drop(run, "cancelled")
            elif run is self.current:
                run.stop("stop")
        return run

    def listing(self) -> list[dict]:
        with self.cond:
            runs = sorted(self.runs.values(), key=lambda r: r.created, reverse=True)
            return [r.public(self.position(r)) for r in runs]

    # ------------------------------------------------------------------ the worker
    def _drop(self, run: Run, state: str) -> None:
        run.state, run.finished, run.job = state, time.time(), None
        run.emit({"kind": state})
        run.preview.end()
        remove_if_empty(run.folder)

    def _work(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.queue or self.closing)
                if self.closing:
                    return
                run = self.queue.pop(0)
                self.current = run
                run.state, run.started = "running", time.time()
                run.emit({"kind": "started"})
            try:
                self._run(run)
            finally:
                with self.cond:
                    self.current = None
                    run.job = None           # the decoded inputs are no longer needed
                run.preview.end()

    def _run(self, run: Run) -> None:
        try:
            done = run.job.run(run.on_event, cancel=run.cancel)
        except Cancelled:
            run.state = "cancelled"
            run.finished = time.time()
            run.emit({"kind": "cancelled"})
            remove_if_empty(run.folder)
            return
        except Exception as e:      # the run's own failure: shown in the page, the server lives
            run.error = failure_message(e)
            if not isinstance(e, UserError):
                traceback.print_exc()
            run.state, run.finished = "failed", time.time()
            run.emit({"kind": "failed", "error": run.error})
            remove_if_empty(run.folder)
            return
        out = done.result.outcome
        run.stop_reason = out.stop_reason
        run.state = "stopped" if done.interrupted else "done"
        run.finished = time.time()
        run.emit({"kind": "done", "state": run.state, "stop_reason": out.stop_reason,
                  "stopped_by": run.stopped_by, "steps": out.steps, "loss": finite(out.loss),
                  "terms": {k: finite(v) for k, v in out.terms.items()},
                  "timings": done.result.timings, "seed": done.result.config.seed,
                  "output": list(done.result.tensor.shape[-1:-3:-1]),
                  "image": run.urls()["image"], "record": run.urls()["record"]})


def failure_message(e: BaseException) -> str:
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, MemoryError) or "out of memory" in str(e).lower():
        return "out of memory: use a smaller size (or the CPU)"
    return f"the run failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"


def remove_if_empty(folder: Path) -> None:
    try:
        os.rmdir(folder)
    except OSError:
        pass
