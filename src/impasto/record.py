"""The run record: a JSON file beside every output that says how it was made, and the same
options in the PNG's text metadata, so a run can be repeated (``--from-record``).

A record is input like any other: ``read`` checks every field it uses (``problems``) and
reports all that is wrong at once. Paths in a record (the inputs, and the options ``weights``
and a file ``init``) are stored relative to the record's folder and read back relative to it,
never to the current directory. Records are standard JSON: no NaN or Infinity.
"""
from __future__ import annotations

import json
import math
import os
import platform
import stat
import sys
from pathlib import Path

from . import config
from .errors import UserError, closest, problems_error
from .image import atomic_write

FORMAT = 1
MAX_RECORD_BYTES = 64 * 2**20

# inputs: the kind of value each key takes. "path": a file path (or null), "paths": a list of
# paths, "regions": [[colour, path or null], ...]
INPUTS = {"content": "path", "styles": "paths", "init": "path", "mask": "path", "input": "path",
          "first_mask": "path", "mask_video": "path", "region_styles": "regions"}
# the roles files_read gives each input key
ROLES = {"content": "content", "styles": "style", "init": "init", "mask": "mask",
         "input": "input", "first_mask": "first mask", "mask_video": "mask video"}


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


def _is_file_init(init) -> bool:
    return isinstance(init, str) and bool(init.strip()) and init not in config.INITS


def relative_options(options: dict, base) -> dict:
    """``options`` (a Config's dict) with the file paths in it (``weights``, a file ``init``)
    made relative to folder ``base``, as a record stores them."""
    out = dict(options)
    if out.get("weights"):
        out["weights"] = _rel(out["weights"], Path(base))
    if _is_file_init(out.get("init")):
        out["init"] = _rel(out["init"], Path(base))
    return out


def build(result, output, inputs: dict, argv=None) -> dict:
    """The record of ``result`` written to ``output``; input paths, the weights file and a
    file init stored relative to the output's folder."""
    base = Path(output).parent
    out = result.outcome
    return {
        "format": FORMAT,
        "task": result.task,
        "inputs": {k: _rel_input(k, v, base) for k, v in inputs.items()},
        "output": Path(output).name,
        "options": relative_options(result.config.to_dict(), base),
        "seed": result.config.seed,
        "weights": result.weights_id,
        "device": result.device,
        "precision": result.precision,
        "schedule": result.schedule,
        "memory": result.memory,
        "versions": versions(),
        "command": argv if argv is not None else sys.argv,
        "timings": result.timings,
        "result": {"loss": out.loss, "terms": out.terms, "steps": out.steps,
                   "evaluations": out.evaluations, "stop_reason": out.stop_reason},
        "history": out.history,
    }


def sanitise(value):
    """``value`` with every NaN or infinite float (a run can end 'non-finite') replaced by
    None, through dicts, lists and tuples (which become lists), so it is standard JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: sanitise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitise(v) for v in value]
    return value


def png_metadata(record: dict) -> dict:
    short = {k: record[k] for k in ("format", "task", "options", "seed", "weights", "precision")
             if k in record}
    short["impasto"] = record["versions"]["impasto"]
    return {"Software": f"impasto {record['versions']['impasto']}",
            "impasto": json.dumps(sanitise(short), allow_nan=False)}


def write(record: dict, path) -> None:
    text = json.dumps(sanitise(record), indent=1, allow_nan=False)
    atomic_write(path, lambda fh: fh.write(text.encode()))


# ---------------------------------------------------------------------- checking a record
def _show(value) -> str:
    return config._show(value)


def _path_problem(name, value, nullable=True):
    if value is None:
        return None if nullable else f"{name}: null is not allowed; give a file path"
    if not isinstance(value, str):
        return f"{name}: {_show(value)} is not a file path (a string)"
    if not value.strip():
        return f"{name}: {_show(value)} is empty; give a file path"
    return None


def _input_problems(inputs) -> list[str]:
    if not isinstance(inputs, dict):
        return [f"inputs: {_show(inputs)} is not an object"]
    out = []
    for key, value in inputs.items():
        name, kind = f"inputs.{key}", INPUTS.get(key)
        if kind is None:
            out.append(f"{name}: unknown input (did you mean '{closest(key, INPUTS)}'?)")
        elif kind == "path":
            out.append(_path_problem(name, value))
        elif not isinstance(value, list):
            what = "a list of file paths" if kind == "paths" else \
                "a list of [colour, path or null] pairs"
            out.append(f"{name}: {_show(value)} is not {what}")
        elif kind == "paths":
            out += [_path_problem(f"{name}[{i}]", p, nullable=False) for i, p in enumerate(value)]
        else:
            for i, pair in enumerate(value):
                if not (isinstance(pair, list) and len(pair) == 2):
                    out.append(f"{name}[{i}]: {_show(pair)} is not a [colour, path or null] pair")
                    continue
                if not isinstance(pair[0], str) or not pair[0].strip():
                    out.append(f"{name}[{i}]: the colour {_show(pair[0])} is not a colour "
                               "(a string such as 'ff0000' or 'red')")
                out.append(_path_problem(f"{name}[{i}]", pair[1]))
    return [line for line in out if line]


def problems(data, png: bool = False) -> list[str]:
    """Every problem with the record ``data`` (as parsed from JSON), one ``field: why`` line
    each (``options.size: 'abc' is not a whole number``); empty when the record is good.

    Checked: it is an object; ``format`` a whole number from 1 to FORMAT (a PNG's text may
    leave it out); ``task`` one of config.TASKS; ``options`` an object of known options whose
    values have their option's type and range for the task (null only where the option may
    be None; a missing option takes its default); ``inputs`` (may be left out) an object of
    the known inputs with paths as strings. The other fields (result, history, timings, ...)
    only describe the run and are not used to repeat it."""
    if not isinstance(data, dict):
        return [f"record: {_show(data)} is not a JSON object"]
    out = []
    fmt = data.get("format")
    if "format" not in data:
        if not png:
            out.append("format: missing (is this an impasto run record?)")
    elif isinstance(fmt, bool) or not isinstance(fmt, int):
        out.append(f"format: {_show(fmt)} is not a whole number")
    elif fmt > FORMAT:
        out.append(f"format: {fmt} is newer than this impasto reads (up to {FORMAT}): "
                   "upgrade impasto")
    elif fmt < 1:
        out.append(f"format: {fmt} is not a record format (1 to {FORMAT})")
    task = data.get("task")
    if "task" not in data:
        out.append(f"task: missing; give one of {', '.join(config.TASKS)}")
        task = None
    elif not isinstance(task, str) or task not in config.TASKS:
        out.append(f"task: {_show(task)} is not one of {', '.join(config.TASKS)}")
        task = None
    options = data.get("options")
    if "options" not in data:
        out.append("options: missing (an object of option names and values)")
    elif not isinstance(options, dict):
        out.append(f"options: {_show(options)} is not an object")
    else:
        out += [f"options.{line}" for line in config.problems(task, options)]
    if "inputs" in data:
        out += _input_problems(data["inputs"])
    return out


# ---------------------------------------------------------------------- reading a record
class _NotStandard(ValueError):
    pass


def _no_constants(name):
    raise _NotStandard(name)


def _parse(text: str, where: str):
    try:
        return json.loads(text, parse_constant=_no_constants)
    except _NotStandard as e:
        raise UserError(f"{where}: not standard JSON: {e} is not allowed (write null for a "
                        "missing number)") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not an impasto run record: not valid JSON ({e.msg} at line "
                        f"{e.lineno} column {e.colno})") from None
    except RecursionError:
        raise UserError(f"{where}: not an impasto run record: JSON nested too deeply") from None
    except ValueError as e:     # a number with more digits than Python converts (4300)
        raise UserError(f"{where}: not an impasto run record: {str(e).split(';')[0]}") from None


def _open_checked(path: Path, where: str, limit: int | None):
    """Stat ``path`` and refuse anything but a regular file (or one over ``limit`` bytes)
    before opening it; then open it without blocking and check again (it may have been
    swapped in between)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{where}: no such file") from None
    except OSError as e:
        raise UserError(f"{where}: cannot be read ({e.strerror})") from None
    _check_stat(st, where, limit)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise UserError(f"{where}: cannot be read ({e.strerror})") from None
    fh = os.fdopen(fd, "rb")
    try:
        _check_stat(os.fstat(fd), where, limit)
    except UserError:
        fh.close()
        raise
    return fh


def _check_stat(st, where, limit):
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{where}: is a folder, not a record file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else (
            "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
            "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise UserError(f"{where}: is {kind}, not a record file")
    if limit is not None and st.st_size > limit:
        raise UserError(f"{where}: is {st.st_size / 2**20:.0f} MB; a run record is at most "
                        f"{limit // 2**20} MB")


def _load(path: Path, where: str, png: bool):
    # a PNG may be a large image: Pillow bounds its text chunks (1 MB each) instead
    fh = _open_checked(path, where, None if png else MAX_RECORD_BYTES)
    with fh:
        if png:
            # the text chunks impasto writes come before the pixels: no pixel is decoded
            from PIL import Image
            try:
                with Image.open(fh) as im:
                    text = im.info.get("impasto")
                    if text is None:
                        text = getattr(im, "text", {}).get("impasto")
            except Exception as e:   # Pillow raises many kinds on a broken file
                raise UserError(f"{where}: not an impasto run record: not a readable PNG "
                                f"({e.__class__.__name__})") from None
            if not isinstance(text, str):
                raise UserError(f"{where}: not an impasto run record: the PNG has no 'impasto' "
                                "text (only PNGs impasto wrote carry their options)")
            return _parse(text, where)
        raw = fh.read(MAX_RECORD_BYTES + 1)
    if len(raw) > MAX_RECORD_BYTES:     # grew after the check
        raise UserError(f"{where}: is over {MAX_RECORD_BYTES // 2**20} MB; a run record is "
                        "at most that")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        if raw[:3] in (b"\xff\xd8\xff", b"GIF", b"II*", b"MM\x00") or raw[8:12] == b"WEBP":
            raise UserError(f"{where}: is an image, not a run record: give the .json impasto "
                            "wrote beside it (only a .png impasto wrote carries one)") from None
        raise UserError(f"{where}: not an impasto run record: not UTF-8 text") from None
    return _parse(text, where)


def _resolve(base: Path, p: str) -> str:
    return str((base / p).resolve())


def read(path) -> dict:
    """Read a record written by ``write`` (or the text of a PNG impasto wrote), check it
    (``problems``), and return it with every path in it made absolute, relative to the
    record's folder: the inputs (null inputs left out), ``options.weights`` and a file
    ``options.init``. UserError, every problem listed, for anything that is not a good
    record; a record file that is a folder, FIFO or device, or larger than 64 MB, is refused
    before it is read."""
    path = Path(path)
    where = f"--from-record {path}"
    png = path.suffix.lower() == ".png"
    data = _load(path, where, png)
    lines = problems(data, png=png)
    if lines:
        raise problems_error(lines, f"{where}: {len(lines)} problems:", prefix=f"{where}: ")
    base = Path(os.path.abspath(path)).parent
    inputs = {}
    for k, v in (data.get("inputs") or {}).items():
        if k == "region_styles":
            inputs[k] = [[c, _resolve(base, p) if p else None] for c, p in v]
        elif isinstance(v, list):
            inputs[k] = [_resolve(base, p) for p in v]
        elif v:
            inputs[k] = _resolve(base, v)
    data["inputs"] = inputs
    options = data["options"]
    if options.get("weights"):
        options["weights"] = _resolve(base, options["weights"])
    if _is_file_init(options.get("init")):
        options["init"] = _resolve(base, options["init"])
    return data


def files_read(record: dict) -> list[tuple[str, str]]:
    """The files a record returned by ``read`` makes impasto read, as (role, absolute path)
    in the order a run reads them, each once: content, style (one per image), init, mask,
    input (video), first mask, mask video, 'region COLOUR style', weights. A front end shows
    them in the plan before the run; a path given on the command line replaces the
    record's."""
    inputs, options = record.get("inputs") or {}, record.get("options") or {}
    out = []
    for key, role in ROLES.items():
        value = inputs.get(key)
        if key == "init" and not value and _is_file_init(options.get("init")):
            value = options["init"]
        for p in (value if isinstance(value, list) else [value]):
            if p:
                out.append((role, p))
    for colour, p in inputs.get("region_styles") or []:
        if p:
            out.append((f"region {colour} style", p))
    if options.get("weights"):
        out.append(("weights", options["weights"]))
    seen, unique = set(), []
    for item in out:
        if item not in seen:
            seen.add(item)
            unique.append(item)
    return unique
