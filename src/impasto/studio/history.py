"""The gallery: every finished run in the studio's runs folder, read from its run record (the
single source: options, inputs, timings, result). A run is the folder ``runs/ID`` with the
image and its record; IDs are the folder names the server made, found by listing the folder,
so a client's text is only ever a key into that listing.
"""
from __future__ import annotations

import io
import re
import threading
from pathlib import Path
from typing import Optional

from .. import record as records
from ..errors import UserError
from .runspec import OUTPUT_NAME
from .uploads import Sources

RUN_ID = re.compile(r"^[A-Za-z0-9_-]{12,64}$")
THUMB_SIDE = 256


class History:
    def __init__(self, runs_dir: Path, sources: Sources):
        self.runs_dir, self.sources = Path(runs_dir), sources
        self.lock = threading.Lock()
        self._cache: dict[str, tuple] = {}      # id -> (stamp, entry)
        self._thumbs: dict[str, tuple] = {}     # id -> (stamp, jpeg)

    def folders(self) -> dict[str, Path]:
        """{run id: folder} of every run folder that holds an image and its record."""
        out = {}
        try:
            entries = list(self.runs_dir.iterdir())
        except OSError:
            return out
        for p in entries:
            if RUN_ID.match(p.name) and p.is_dir() and not p.is_symlink() \
                    and (p / OUTPUT_NAME).is_file() and records.record_path(p / OUTPUT_NAME).is_file():
                out[p.name] = p
        return out

    def paths(self, run_id) -> Optional[tuple[Path, Path]]:
        """(image, record) of run ``run_id``, looked up in the listing; None if no such run."""
        folder = self.folders().get(run_id) if isinstance(run_id, str) else None
        if folder is None:
            return None
        return folder / OUTPUT_NAME, records.record_path(folder / OUTPUT_NAME)

    def entry(self, run_id) -> Optional[dict]:
        found = self.paths(run_id)
        if found is None:
            return None
        image, rec_path = found
        try:
            st = rec_path.stat()
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        with self.lock:
            cached = self._cache.get(run_id)
        if cached and cached[0] == stamp:
            return cached[1]
        try:
            rec = records.read(rec_path)
        except UserError as e:
            entry = {"id": run_id, "state": "unreadable", "error": str(e),
                     "finished": st.st_mtime}
        else:
            entry = self._entry(run_id, rec, st.st_mtime)
        with self.lock:
            self._cache[run_id] = (stamp, entry)
        return entry

    def _entry(self, run_id: str, rec: dict, mtime: float) -> dict:
        inputs, res = rec.get("inputs", {}), rec.get("result") or {}
        d = self.sources.describe
        base = f"/api/runs/{run_id}"
        stopped = res.get("stop_reason") == "interrupted"
        return {
            "id": run_id, "state": "stopped" if stopped else "done", "task": rec["task"],
            "finished": mtime, "options": rec["options"], "seed": rec.get("seed"),
            "inputs": {"content": d(inputs.get("content")),
                       "styles": [d(p) for p in inputs.get("styles") or []],
                       "mask": d(inputs.get("mask")),
                       "region_styles": [[c, d(p)] for c, p in inputs.get("region_styles") or []]},
            "timings": rec.get("timings"), "schedule": rec.get("schedule"),
            "device": rec.get("device"), "precision": rec.get("precision"),
            "result": {k: res.get(k) for k in ("loss", "terms", "steps", "stop_reason")},
            "command": rec.get("command"),
            "urls": {"self": base, "image": base + "/image", "record": base + "/record",
                     "thumb": base + "/thumb", "events": base + "/events"},
        }

    def listing(self) -> list[dict]:
        """Every run, newest first."""
        entries = [e for e in (self.entry(i) for i in self.folders()) if e is not None]
        return sorted(entries, key=lambda e: e["finished"], reverse=True)

    def thumb(self, run_id) -> Optional[bytes]:
        found = self.paths(run_id)
        if found is None:
            return None
        image = found[0]
        try:
            st = image.stat()
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        with self.lock:
            cached = self._thumbs.get(run_id)
        if cached and cached[0] == stamp:
            return cached[1]
        from .. import image as imageio
        im = imageio.load(image, long_side=THUMB_SIDE, what="run image")
        im.thumbnail((THUMB_SIDE, THUMB_SIDE))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
        with self.lock:
            self._thumbs[run_id] = (stamp, buf.getvalue())
        return buf.getvalue()
