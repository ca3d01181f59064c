"""The studio's option controls, made from the config: every option of a task with its type,
the task's default, help text and choices, as JSON for the page. The page builds its controls
from this and keeps no list of defaults of its own.

Which options the page shows up front (``MAIN``) and which it leaves out are the studio's
choices; everything about an option itself comes from ``impasto.config``.
"""
from __future__ import annotations

import dataclasses
import typing

from .. import config as config_mod
from ..config import INITS, Config
from ..errors import UserError

# The options a person actually turns, in the page's order; the rest go in "advanced".
MAIN = ("size", "steps", "time", "style_weight", "content_weight", "tv_weight", "style_scale",
        "preserve_color", "color_from", "init", "seed", "optimizer", "model")
# Options the page sets itself (the blend comes from the style weights) or cannot take: a
# file path typed by a client is never opened, so weights and a file init are refused.
SET_BY_PAGE = ("style_blend",)
PATH_OPTIONS = ("weights",)
TASKS = ("transfer", "texture", "reconstruct")

def _type_name(name: str) -> str:
    kind, _ = config_mod.field_type(name)
    if typing.get_origin(kind) is list:
        return "list[str]" if typing.get_args(kind)[0] is str else "list[float]"
    return {int: "int", float: "float", bool: "bool", str: "str"}[kind]


def schema(task: str = "transfer") -> dict:
    """The controls of ``task``: one entry per option that applies to it."""
    if task not in TASKS:
        raise UserError(f"task: '{task}' is not one of {', '.join(TASKS)}")
    defaults = Config.for_task(task)
    fields = []
    for f in dataclasses.fields(Config):
        if task not in f.metadata["tasks"] or f.name in SET_BY_PAGE + PATH_OPTIONS:
            continue
        choices = f.metadata.get("choices")
        if f.name == "init":             # the studio offers the built-in starts only
            choices = tuple(i for i in INITS if (task, i) not in (("texture", "content"),
                                                                  ("reconstruct", "style")))
        kind, optional = config_mod.field_type(f.name)
        fields.append({
            "name": f.name, "type": _type_name(f.name), "optional": optional,
            "default": getattr(defaults, f.name), "default_text": f.metadata.get("default_text"),
            "help": f.metadata["help"], "choices": list(choices) if choices else None,
            "metavar": f.metadata.get("metavar"),
            "group": "main" if f.name in MAIN else "advanced"})
    order = {n: i for i, n in enumerate(MAIN)}
    fields.sort(key=lambda x: (x["group"] != "main", order.get(x["name"], 0)))
    from .. import backbones
    layers = {m: dict(zip(("content_layers", "style_layers"), backbones.default_layers(m)))
              for m in backbones.MODELS}      # what None means for each model's layers
    return {"task": task, "fields": fields, "model_layers": layers}


def check_options(task: str, options) -> dict:
    """The options a client sent, refused when they name a file (the studio opens only its
    own files) or are not an object; their values are left to the run API's checks."""
    if not isinstance(options, dict):
        raise UserError(f"options: {config_mod._show(options)} is not an object of option "
                        "names and values")
    for name in PATH_OPTIONS:
        if options.get(name) is not None:
            raise UserError(f"option --{name}: the studio does not open files named by a "
                            "client; start impasto from the command line to use your own "
                            "weights file")
    init = options.get("init")
    if isinstance(init, str) and init.strip() and init not in INITS:
        raise UserError(f"option --init: {config_mod._show(init)} is not one of "
                        f"{', '.join(INITS)} (the studio does not open files named by a "
                        "client)")
    return dict(options)
