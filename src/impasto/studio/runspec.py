"""A run as a client asks for it (JSON), checked for its shape and turned into the run API's
``Request``. Images are named by id and looked up in the server's tables (``Sources``); the
options go to the run API untouched, so their checks and messages are the command line's.

    {"task": "transfer", "content": ID, "styles": [ID, ...], "options": {"size": 384, ...},
     "mask": ID, "region_styles": [["ff0000", ID], ["0000ff", null]]}

A time budget is the config's own option, ``options.time`` ("30s", "2m"): it counts from
the start of the run's computation (``api.Request.started_at`` is left None), not from when
the run was queued.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .. import api, config as config_mod
from ..errors import UserError
from . import options as studio_options
from .uploads import Sources

FIELDS = ("task", "content", "styles", "options", "mask", "region_styles")
OUTPUT_NAME = "painting.png"


@dataclass
class RunSpec:
    """A checked client request: ids as the client gave them, paths as the server found them."""
    task: str
    options: dict
    content: Optional[str] = None
    styles: list = field(default_factory=list)
    mask: Optional[str] = None
    region_styles: list = field(default_factory=list)    # [[colour, id or None]]
    paths: dict = field(default_factory=dict)            # id -> Path

    def public(self) -> dict:
        """The request as JSON (ids, never paths)."""
        return {"task": self.task, "content": self.content, "styles": list(self.styles),
                "options": dict(self.options), "mask": self.mask,
                "region_styles": [list(r) for r in self.region_styles]}

    def request(self, output: Path, run_id: str, max_input_pixels: int) -> api.Request:
        p = self.paths
        argv = ["impasto-studio", "run", run_id]
        return api.Request(
            self.task, dict(self.options),
            content=str(p[self.content]) if self.content else None,
            styles=[str(p[s]) for s in self.styles],
            mask=str(p[self.mask]) if self.mask else None,
            region_styles=[(c, str(p[s]) if s else None) for c, s in self.region_styles],
            output=str(output), max_input_pixels=max_input_pixels, argv=argv)


def _id(value, role: str, sources: Sources, paths: dict) -> str:
    paths[value if isinstance(value, str) else ""] = sources.resolve(value, role)
    return value


def parse(body, sources: Sources) -> RunSpec:
    """The RunSpec of a client's JSON ``body``; UserError (a 400) for anything malformed."""
    show = config_mod._show
    if not isinstance(body, dict):
        raise UserError(f"the request body is {show(body, 40)}, not a JSON object with the "
                        f"fields {', '.join(FIELDS)}")
    unknown = [k for k in body if k not in FIELDS]
    if unknown:
        raise UserError(f"{show(unknown[0], 40)}: unknown field (the fields are "
                        f"{', '.join(FIELDS)})")
    task = body.get("task", "transfer")
    if task not in studio_options.TASKS:
        raise UserError(f"task: {show(task, 40)} is not one of "
                        f"{', '.join(studio_options.TASKS)}")
    options = studio_options.check_options(task, body.get("options") or {})
    paths: dict = {}
    content = body.get("content")
    if content is not None:
        content = _id(content, "content", sources, paths)
    styles = body.get("styles") or []
    if not isinstance(styles, list):
        raise UserError(f"styles: {show(styles, 40)} is not a list of image ids")
    styles = [_id(s, f"styles[{i}]", sources, paths) for i, s in enumerate(styles)]
    mask = body.get("mask")
    if mask is not None:
        mask = _id(mask, "mask", sources, paths)
    regions = body.get("region_styles") or []
    if isinstance(regions, dict):
        regions = [[c, s] for c, s in regions.items()]
    if not isinstance(regions, list) or any(
            not isinstance(r, (list, tuple)) or len(r) != 2 or not isinstance(r[0], str)
            for r in regions):
        raise UserError("region_styles: give a list of [colour, image id or null] pairs, e.g. "
                        "[[\"ff0000\", ID], [\"0000ff\", null]]")
    region_styles = []
    for colour, s in regions:
        if s is None or (isinstance(s, str) and s.lower() == "none"):
            region_styles.append([colour, None])
        else:
            region_styles.append([colour, _id(s, f"region_styles[{colour[:20]}]", sources,
                                              paths)])
    return RunSpec(task, options, content, styles, mask, region_styles, paths)
