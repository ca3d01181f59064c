"""The studio's ASGI app: the page and the JSON API it (or a script) drives.

Everything a run needs goes through the run API (``impasto.api``) in ``jobs``: the studio
parses no options of its own, keeps no defaults and writes no records. Errors are JSON,
``{"error": "one line"}``, with a 4xx status; the line is the run API's own for a bad option
or input. See the README's "Studio" section for every endpoint.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import config as config_mod, record as records
from ..errors import UserError
from ..version import __version__
from . import options as studio_options, runspec
from .history import History
from .jobs import Jobs
from .security import Guard, allowed_hosts
from .uploads import (MAX_UPLOAD_BYTES, Examples, Sources, UploadError, Uploads,
                      default_examples, too_large, view_jpeg)

MAX_JSON_BYTES = 1 * 2**20
STATIC = {"studio.js": "text/javascript", "studio.css": "text/css", "paint.js": "text/javascript",
          "chart.js": "text/javascript", "gallery.js": "text/javascript"}
PAGE_HEADERS = {"cache-control": "no-store",
                "content-security-policy": "default-src 'self'; img-src 'self' blob: data:; "
                "connect-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"}
END_KINDS = ("done", "failed", "cancelled")
ENDPOINTS = [
    ("GET", "/api/status", "version, queue and limits"),
    ("GET", "/api/options?task=transfer", "the option controls: type, default, help, choices"),
    ("GET", "/api/examples", "the bundled example images"),
    ("POST", "/api/uploads?name=NAME", "upload an image (the body is the file's bytes)"),
    ("GET", "/api/uploads/ID", "an uploaded image, as JPEG"),
    ("POST", "/api/runs", "start a run: {task, content, styles, options, mask, "
                          "region_styles}"),
    ("GET", "/api/runs", "this session's runs, queued and running first"),
    ("GET", "/api/runs/ID", "one run (live, or from its record)"),
    ("GET", "/api/runs/ID/events?after=N", "its events as Server-Sent Events"),
    ("GET", "/api/runs/ID/preview", "its current image, as JPEG (204 before the first step)"),
    ("GET", "/api/runs/ID/image", "its PNG (?download=1 to save it)"),
    ("GET", "/api/runs/ID/record", "its run record (JSON)"),
    ("GET", "/api/runs/ID/thumb", "a small JPEG of its image"),
    ("POST", "/api/runs/ID/cancel", "stop it (keeping the best image) or take it off the queue"),
    ("GET", "/api/history", "every finished run in the data folder, newest first"),
]


class Studio:
    """The studio's state: its data folder, images, runs and history."""

    def __init__(self, data_dir, examples_dir=None, max_upload_bytes=MAX_UPLOAD_BYTES,
                 max_input_pixels=config_mod.MAX_INPUT_PIXELS):
        self.data = Path(data_dir)
        self.data.mkdir(parents=True, exist_ok=True)
        self.max_input_pixels = max_input_pixels
        self.uploads = Uploads(self.data / "uploads", max_upload_bytes, max_input_pixels)
        self.examples = Examples(default_examples() if examples_dir is None else examples_dir)
        self.sources = Sources(self.uploads, self.examples)
        self.history = History(self.data / "runs", self.sources)
        self.jobs = Jobs(self.data / "runs", max_input_pixels)
        self.views: dict[str, bytes] = {}


def dumps(value) -> bytes:
    return json.dumps(records.sanitise(value), allow_nan=False).encode()


class JSON(JSONResponse):
    def render(self, content) -> bytes:
        return dumps(content)


def error(status: int, message: str) -> JSON:
    return JSON({"error": message}, status_code=status, headers={"cache-control": "no-store"})


def _show(value) -> str:
    return config_mod._show(value, 40)


async def read_body(request: Request, limit: int, message: str) -> bytes:
    """The body, refused (UploadError 413) once it passes ``limit`` bytes: the declared length
    is checked first, then the bytes as they arrive, so nothing larger is ever held."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadError(message, 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadError(message, 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request):
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise UploadError(f"send JSON (Content-Type: application/json), not "
                          f"{_show(kind or 'none')}", 415)
    body = await read_body(request, MAX_JSON_BYTES, "the request is larger than 1 MB")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise UploadError("the request body is not valid JSON", 400) from None


def create_app(data_dir, *, examples_dir=None, host="127.0.0.1", port=8765, token=None,
               max_upload_bytes=MAX_UPLOAD_BYTES,
               max_input_pixels=config_mod.MAX_INPUT_PIXELS, start_worker=True):
    """The studio as an ASGI app (the guard in front, see ``security``); ``app.studio`` is its
    state. ``start_worker=False`` queues runs without computing them (tests of the queue)."""
    studio = Studio(data_dir, examples_dir, max_upload_bytes, max_input_pixels)
    jobs, history, sources = studio.jobs, studio.history, studio.sources

    def find_run(run_id):
        return jobs.get(run_id)

    def missing(run_id):
        return error(404, f"no run {_show(run_id)}")

    # ------------------------------------------------------------------ page
    async def page(request):
        html = resources.files(__package__).joinpath("static/index.html").read_bytes()
        return Response(html, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    async def favicon(request):
        return Response(status_code=204)

    async def static(request):
        name = request.path_params["name"]
        if name not in STATIC:                      # a fixed table: no path is ever built
            return error(404, f"no file {_show(name)}")
        data = resources.files(__package__).joinpath("static").joinpath(name).read_bytes()
        return Response(data, media_type=STATIC[name], headers={"cache-control": "no-cache"})

    # ------------------------------------------------------------------ reference
    async def api_index(request):
        return JSON({"impasto": __version__, "endpoints": [
            {"method": m, "path": p, "what": w} for m, p, w in ENDPOINTS]})

    async def status(request):
        runs = jobs.listing()
        return JSON({"impasto": __version__, "limits": {
            "max_upload_bytes": studio.uploads.max_bytes, "max_input_pixels": max_input_pixels},
            "queued": sum(r["state"] == "queued" for r in runs),
            "running": next((r["id"] for r in runs if r["state"] == "running"), None)})

    async def option_schema(request):
        try:
            return JSON(studio_options.schema(request.query_params.get("task", "transfer")))
        except UserError as e:
            return error(400, str(e))

    # ------------------------------------------------------------------ images
    async def examples(request):
        return JSON({"examples": [e.public() for e in studio.examples.items.values()]})

    async def view(ref, path):
        if ref not in studio.views:
            studio.views[ref] = await run_in_threadpool(view_jpeg, path, max_input_pixels)
            while len(studio.views) > 64:                     # the oldest go first
                studio.views.pop(next(iter(studio.views)))
        return Response(studio.views[ref], media_type="image/jpeg",
                        headers={"cache-control": "private, max-age=3600"})

    async def example_image(request):
        im = studio.examples.get_by_name(request.path_params["name"])
        if im is None:
            return error(404, f"no example {_show(request.path_params['name'])}")
        return await view(im.id, studio.examples.paths[im.id])

    async def upload(request):
        name = request.query_params.get("name")
        try:
            data = await read_body(request, studio.uploads.max_bytes,
                                   too_large(studio.uploads.max_bytes))
            im = await run_in_threadpool(studio.uploads.add, data,
                                         request.headers.get("content-type"), name)
        except UploadError as e:
            return error(e.status, str(e))
        except UserError as e:
            return error(400, str(e))
        return JSON(im.public(), status_code=201)

    async def uploads(request):
        return JSON({"uploads": [u.public() for u in studio.uploads.items.values()]})

    async def upload_image(request):
        uid = request.path_params["uid"]
        path = studio.uploads.path(uid)
        if path is None:
            return error(404, f"no upload {_show(uid)}")
        return await view(uid, path)

    # ------------------------------------------------------------------ runs
    async def start_run(request):
        try:
            body = await read_json(request)
            spec = runspec.parse(body, sources)
            run = await run_in_threadpool(jobs.submit, spec)
        except UploadError as e:
            return error(e.status, str(e))
        except UserError as e:
            return error(400, str(e))
        return JSON(run.public(jobs.position(run)), status_code=201)

    async def list_runs(request):
        return JSON({"runs": jobs.listing()})

    async def get_run(request):
        run_id = request.path_params["rid"]
        run = find_run(run_id)
        if run is not None:
            out = run.public(jobs.position(run))
            if run.state in ("done", "stopped"):
                out["record"] = await run_in_threadpool(history.entry, run_id)
            return JSON(out)
        entry = await run_in_threadpool(history.entry, run_id)
        return JSON(entry) if entry is not None else missing(run_id)

    async def cancel_run(request):
        run_id = request.path_params["rid"]
        run = find_run(run_id)
        if run is None:
            if await run_in_threadpool(history.entry, run_id) is not None:
                return error(409, f"run {run_id} has already ended")
            return missing(run_id)
        jobs.cancel(run)
        return JSON(run.public(jobs.position(run)))

    async def events(request):
        run_id = request.path_params["rid"]
        run = find_run(run_id)
        after = request.query_params.get("after") or request.headers.get("last-event-id") or "0"
        after = int(after) if after.isdigit() else 0
        if run is None:
            entry = await run_in_threadpool(history.entry, run_id)
            if entry is None:
                return missing(run_id)
            done = {"kind": "done", "seq": 1, "state": entry["state"], "from_record": True,
                    **entry.get("result", {}), "image": entry.get("urls", {}).get("image")}
            return StreamingResponse(iter([sse(done)]), media_type="text/event-stream")

        async def stream():
            seen, beat = after, time.monotonic()
            while True:
                batch = run.events[seen:]
                for ev in batch:
                    yield sse(ev)
                    seen = ev["seq"]
                if batch and batch[-1]["kind"] in END_KINDS:
                    return
                if time.monotonic() - beat > 15:
                    beat = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(0.2)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def preview(request):
        run_id = request.path_params["rid"]
        run = find_run(run_id)
        if run is None:
            return missing(run_id)
        got = await run_in_threadpool(run.preview.take, 5.0)
        if got is None:           # queued, or before its first step: ask again later
            return Response(status_code=204, headers={"cache-control": "no-store",
                                                      "x-impasto-state": run.state})
        step, jpeg = got
        return Response(jpeg, media_type="image/jpeg",
                        headers={"cache-control": "no-store", "x-impasto-step": str(step)})

    def _file(request, which):
        run_id = request.path_params["rid"]
        found = history.paths(run_id)
        if found is None:
            run = find_run(run_id)
            why = f"run {run_id} has no {which} yet ({run.state})" if run else None
            return error(404, why or f"no run {_show(run_id)}")
        path = found[0] if which == "image" else found[1]
        media = "image/png" if which == "image" else "application/json"
        name = f"impasto-{run_id}{path.suffix}"
        if request.query_params.get("download"):
            return FileResponse(path, media_type=media, filename=name)
        return FileResponse(path, media_type=media, headers={"cache-control": "no-cache"})

    async def image(request):
        return await run_in_threadpool(_file, request, "image")

    async def record(request):
        return await run_in_threadpool(_file, request, "record")

    async def thumb(request):
        data = await run_in_threadpool(history.thumb, request.path_params["rid"])
        if data is None:
            return missing(request.path_params["rid"])
        return Response(data, media_type="image/jpeg", headers={"cache-control": "no-cache"})

    async def list_history(request):
        return JSON({"runs": await run_in_threadpool(history.listing)})

    async def not_found(request, exc):
        if isinstance(exc, HTTPException) and exc.status_code == 405:
            return error(405, f"{request.method} is not allowed here")
        return error(404, f"nothing at {_show(request.url.path)} (GET /api lists the endpoints)")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if start_worker:
            jobs.start()
        try:
            yield
        finally:
            await run_in_threadpool(jobs.close)

    routes = [
        Route("/", page), Route("/static/{name}", static), Route("/favicon.ico", favicon),
        Route("/api", api_index), Route("/api/status", status),
        Route("/api/options", option_schema), Route("/api/examples", examples),
        Route("/api/examples/{name}", example_image),
        Route("/api/uploads", upload, methods=["POST"]), Route("/api/uploads", uploads),
        Route("/api/uploads/{uid}", upload_image),
        Route("/api/runs", start_run, methods=["POST"]), Route("/api/runs", list_runs),
        Route("/api/runs/{rid}", get_run), Route("/api/runs/{rid}/cancel", cancel_run,
                                                 methods=["POST"]),
        Route("/api/runs/{rid}", cancel_run, methods=["DELETE"]),
        Route("/api/runs/{rid}/events", events), Route("/api/runs/{rid}/preview", preview),
        Route("/api/runs/{rid}/image", image), Route("/api/runs/{rid}/record", record),
        Route("/api/runs/{rid}/thumb", thumb), Route("/api/history", list_history),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: not_found, 405: not_found})
    guarded = Guard(app, allowed_hosts(host, port), token)
    guarded.studio = studio
    return guarded


def sse(event: dict) -> str:
    return f"id: {event.get('seq', 0)}\ndata: {dumps(event).decode()}\n\n"
