"""The run record: a JSON file beside every output that says how it was made, and the same
options in the PNG's text metadata, so a run can be repeated (``--from-record``)."""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

from .errors import UserError
from .image import atomic_write

FORMAT = 1


def versions() -> dict:
    import numpy
    import PIL
    import torch

    from .version import __version__
    return {"impasto": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "pillow": PIL.__version__, "platform": platform.platform()}


def record_path(output) -> Path:
    return Path(output).with_suffix(".json")


def _rel(path, base: Path) -> str:
    try:
        return os.path.relpath(Path(path).resolve(), base.resolve())
    except ValueError:  # another drive on Windows
        return str(Path(path).resolve())


def _rel_input(key, value, base):
    if key == "region_styles":   # [[colour, path or None], ...]
        return [[c, _rel(p, base) if p else None] for c, p in value]
    if isinstance(value, list):
        return [_rel(p, base) for p in value]
    return _rel(value, base) if value else None


def build(result, output, inputs: dict, argv=None) -> dict:
    """The record of ``result`` written to ``output``; input paths stored relative to it."""
    base = Path(output).parent
    out = result.outcome
    return {
        "format": FORMAT,
        "task": result.task,
        "inputs": {k: _rel_input(k, v, base) for k, v in inputs.items()},
        "output": Path(output).name,
        "options": result.config.to_dict(),
        "seed": result.config.seed,
        "weights": result.weights_id,
        "device": result.device,
        "precision": result.precision,
        "schedule": result.schedule,
        "versions": versions(),
        "command": argv if argv is not None else sys.argv,
        "timings": result.timings,
        "result": {"loss": out.loss, "terms": out.terms, "steps": out.steps,
                   "evaluations": out.evaluations, "stop_reason": out.stop_reason},
        "history": out.history,
    }


def png_metadata(record: dict) -> dict:
    short = {k: record[k] for k in ("task", "options", "seed", "weights", "precision")}
    short["impasto"] = record["versions"]["impasto"]
    return {"Software": f"impasto {record['versions']['impasto']}", "impasto": json.dumps(short)}


def write(record: dict, path) -> None:
    text = json.dumps(record, indent=1, allow_nan=True)
    atomic_write(path, lambda fh: fh.write(text.encode()))


def read(path) -> dict:
    """Read a record written by ``write`` (or the text chunk of a PNG impasto wrote), with input
    paths made absolute again."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--from-record {path}: no such file")
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image
            with Image.open(path) as im:
                data = json.loads(im.text["impasto"])
                data.setdefault("inputs", {})
        else:
            data = json.loads(path.read_text())
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise UserError(f"--from-record {path}: not an impasto run record ({e.__class__.__name__})") from None
    if not isinstance(data, dict) or "task" not in data or "options" not in data:
        raise UserError(f"--from-record {path}: not an impasto run record (no task or options)")
    base = path.parent
    inputs = {}
    for k, v in (data.get("inputs") or {}).items():
        if k == "region_styles":
            inputs[k] = [[c, str(base / p) if p else None] for c, p in v]
        elif isinstance(v, list):
            inputs[k] = [str(base / p) for p in v]
        elif v:
            inputs[k] = str(base / v)
    data["inputs"] = inputs
    return data
