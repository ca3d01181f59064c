"""Sweeps: every combination of the varied options, run with the same seed, each output named
after its options, with a labelled contact sheet, a CSV of the final loss terms and a loss
curve overlay. ``explore`` builds its studies from the same cells.

Each cell is a request to the run API (``impasto.api``), every one of them checked before the
first runs; a cell whose earlier record says it is done is skipped.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path

from . import config as config_mod
from .config import Config
from .errors import UserError, closest

# Short names of options in file names and labels; any other option keeps its own name.
ABBREV = {
    "style_weight": "sw", "content_weight": "cw", "tv_weight": "tvw", "optimizer": "opt",
    "content_layers": "cl", "style_layers": "sl", "content_layer_weights": "clw",
    "style_layer_weights": "slw", "style_scale": "ss", "pooling": "pool", "precision": "prec",
    "style_loss": "stat", "tv_norm": "tvn", "preserve_color": "pc", "color_from": "cf",
    "history_size": "hist", "line_search": "ls", "style_blend": "blend", "deep_style_scale": "dss",
}
LIST_JOIN = "+"   # joins the items of a list-valued option inside one value: relu1_1+relu2_1
LINK = ":"        # links options that vary together: optimizer:lr=lbfgs:1,adam:0.02
EXT = ".png"      # every run's image (its PNG text carries the run record)


def abbrev(name: str) -> str:
    return ABBREV.get(name, name.replace("_", "-"))


def _field(name: str, task: str):
    fields = {f.name: f for f in dataclasses.fields(Config)}
    key = name.strip().lstrip("-").replace("-", "_")
    if key not in fields:
        raise UserError(f"option --vary: unknown option '{name}' (did you mean "
                        f"'{closest(key, fields)}'? 'impasto options' lists them)")
    if task not in fields[key].metadata["tasks"]:
        raise UserError(f"option --vary: '{key}' does not apply to impasto {task}")
    return fields[key]


def convert(f, text: str):
    """The value of option ``f`` that ``text`` spells (lists joined with '+')."""
    ftype, optional = config_mod.field_type(f.name)
    text = text.strip()
    option = f"--vary {f.name}"
    if optional and text.lower() == "none":
        return None
    try:
        if ftype is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if ftype is list or typing.get_origin(ftype) is list:
            items = [x for x in text.split(LIST_JOIN) if x]
            weights = f.name.endswith("layer_weights") or f.name == "style_blend"
            return [float(x) for x in items] if weights else items
        if ftype is int:
            v = float(text)
            if not math.isfinite(v) or v != int(v):
                raise ValueError
            return int(v)
        if ftype is float:
            return float(text)
    except ValueError:
        kind = {bool: "true or false", int: "a whole number", float: "a number"}.get(ftype, "a list")
        raise UserError(f"option {option}: '{text}' is not {kind}") from None
    choices = f.metadata.get("choices")
    if choices and text not in choices:
        raise UserError(f"option {option}: '{text}' is not one of {', '.join(choices)}")
    return text


@dataclass
class Vary:
    """One ``--vary`` axis: the option(s) it sets and its settings, as values and as typed."""
    names: tuple
    values: list   # one tuple of values per setting
    texts: list    # the same, as the user typed them (for names and labels)

    def label(self, i: int) -> str:
        return ", ".join(f"{abbrev(n)} {t}" for n, t in zip(self.names, self.texts[i]))

    def heading(self, i: int) -> str:
        return ", ".join(f"{n} = {t}" for n, t in zip(self.names, self.texts[i]))

    def slug(self, i: int) -> str:
        return "_".join(f"{abbrev(n)}-{slug(t)}" for n, t in zip(self.names, self.texts[i]))


def slug(text: str) -> str:
    """A value or an input path as a piece of a file name: an image path becomes its stem."""
    from PIL import Image
    p = Path(text)
    if p.suffix.lower() in Image.registered_extensions() or p.parent != Path("."):
        text = p.stem
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text) or "x"


def parse_vary(spec: str, task: str) -> Vary:
    """'name=v1,v2' or linked 'a:b=x1:y1,x2:y2'."""
    names_text, sep, values_text = spec.partition("=")
    if not sep or not names_text.strip() or not values_text.strip():
        raise UserError(f"option --vary: '{spec}' is not NAME=VALUE,VALUE (e.g. "
                        "style_weight=1e2,1e3 or optimizer:lr=lbfgs:1,adam:0.02)")
    fields = [_field(n, task) for n in names_text.split(LINK)]
    names = tuple(f.name for f in fields)
    if len(set(names)) != len(names):
        raise UserError(f"option --vary: '{names_text}' names an option twice")
    values, texts = [], []
    for setting in values_text.split(","):
        setting = setting.strip()
        if not setting:
            continue
        parts = setting.split(LINK) if len(fields) > 1 else [setting]
        if len(parts) != len(fields):
            raise UserError(f"option --vary: '{setting}' gives {len(parts)} values for the "
                            f"{len(fields)} linked options {names_text}")
        values.append(tuple(convert(f, p) for f, p in zip(fields, parts)))
        texts.append(tuple(p.strip() for p in parts))
    if len(set(texts)) != len(texts):
        raise UserError(f"option --vary: {names_text} repeats a value")
    return Vary(names, values, texts)


def check_axes(varies: list) -> None:
    if not varies:
        raise UserError("impasto sweep: give at least one --vary NAME=VALUE,VALUE")
    seen = set()
    for v in varies:
        for n in v.names:
            if n in seen:
                raise UserError(f"option --vary: '{n}' is varied twice (link options that change "
                                "together with ':', e.g. optimizer:lr=lbfgs:1,adam:0.02)")
            seen.add(n)


def grid(varies: list) -> list[tuple]:
    """Every combination of settings, as index tuples, the last axis varying fastest."""
    return list(itertools.product(*[range(len(v.values)) for v in varies]))


# ----------------------------------------------------------------------------- cells
@dataclass
class Cell:
    """One run of a sweep or exploration."""
    stem: str                 # file name without extension, in the output folder
    task: str
    options: dict             # Config options of this run (the seed included)
    label: str = ""           # the first line under its tile
    row: int = 0
    col: int = 0
    status: str = "pending"   # done (an earlier run), ran, interrupted, failed, cancelled
    record: dict | None = None
    error: str | None = None  # why it failed
    image: object = None      # the PIL image once made


def sweep_cells(task: str, base: dict, varies: list, prefix: str) -> list[Cell]:
    """The cells of a sweep: ``base`` options with each combination of ``varies``; rows are
    the combinations of every axis but the last, columns the last axis's settings."""
    cells = []
    last = len(varies[-1].values)
    for n, combo in enumerate(grid(varies)):
        options = dict(base)
        for v, i in zip(varies, combo):
            options.update(dict(zip(v.names, v.values[i])))
        stem = "_".join([prefix] + [v.slug(i) for v, i in zip(varies, combo)])
        if any(c.stem == stem for c in cells):   # values that differ only in left-out characters
            stem = f"{stem}_{n + 1}"
        label = " · ".join(v.label(i) for v, i in zip(varies, combo))
        cells.append(Cell(stem, task, options, label, row=n // last, col=n % last))
    return cells


def prepare(cells: list[Cell], sources: dict, outdir: Path, *, plot=False,
            max_input_pixels=None, argv=None) -> list:
    """A checked run (``api.Job``) for every cell, before anything runs or is written: every
    cell's options, inputs, device and network (a bad value or a missing weights file stops the
    sweep now, not after hours). ``sources`` holds the input files per task: {task: (content,
    styles)}. Inputs are decoded once for all cells."""
    from . import api
    cache, jobs = {}, []
    extra = {} if max_input_pixels is None else {"max_input_pixels": max_input_pixels}
    for c in cells:
        content, styles = sources[c.task]
        request = api.Request(c.task, c.options, content=content, styles=list(styles),
                              output=str(outdir / f"{c.stem}{EXT}"), plot=plot, argv=argv,
                              **extra)
        try:
            jobs.append(api.prepare(request, check_outputs=False, cache=cache))
        except UserError as e:
            raise UserError(f"{c.stem}: {e}") from None
    return jobs


def check_outputs(jobs: list, outdir: Path, overwrite: bool, summaries=(), kind="sweep") -> None:
    """No cell's image, record or loss plot is one of the inputs, and (in an existing folder)
    none replaces a file impasto did not write unless ``overwrite``. The same for the
    ``summaries`` (file names in ``outdir``: the figures, results.csv, ``kind``.json): an
    existing one is replaced only when the folder is impasto's (its ``kind``.json says so)."""
    from . import api, outputs, record as records, safe_io
    inputs = {}
    for job in jobs:
        files = api.input_files(job.request, job.cfg, job.spec)
        inputs.update(files)
        extra = outputs.run_extras(job.output, job.request.save_every, job.cfg.steps,
                                   job.request.plot)
        if outdir.is_dir():
            outputs.check_output(job.output, files, overwrite, extra)
        else:
            safe_io.refuse_overwriting_inputs(
                {"-o": job.output, "the run record": records.record_path(job.output),
                 **{label: p for label, p in extra}}, files)
    ours = folder_is_ours(outdir, kind)
    for name in summaries:
        path = outdir / name
        safe_io.refuse_overwriting_inputs({f"the {kind}'s": path}, inputs)
        taken = outputs._taken_by(path)
        if taken:
            raise UserError(f"-o {outdir}: {name} is {taken}; impasto replaces only a regular "
                            "file (move it or choose another folder)")
        if path.exists() and not ours and not overwrite:
            raise UserError(f"-o {outdir}: {name} exists and impasto did not write it (the "
                            f"folder has no {kind}.json of impasto's); choose another folder, "
                            "or add --overwrite")


def folder_is_ours(outdir: Path, kind: str) -> bool:
    """Whether ``outdir``/``kind``.json is the note an earlier impasto ``kind`` left there."""
    data = _read_record(outdir / f"{kind}.json")
    command = data.get("command") if isinstance(data, dict) else None
    return isinstance(command, list) and command[:2] == ["impasto", kind] \
        and isinstance(data.get("seed"), int)


def _read_record(path: Path):
    try:
        if path.is_file() and path.stat().st_size <= 64 * 2**20:
            return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        pass
    return None


def is_done(cell: Cell, cfg: Config, inputs: dict, outdir: Path) -> bool:
    """A cell is done when its image and record exist and the record says it ran to the end
    with these options on these inputs (a record from other options is run again)."""
    from . import record as records
    image, rec = outdir / f"{cell.stem}{EXT}", _read_record(outdir / f"{cell.stem}.json")
    if not image.is_file() or not isinstance(rec, dict) or not all(
            isinstance(rec.get(k, {}), dict) for k in ("result", "options", "timings")):
        return False
    same_inputs = rec.get("inputs") == {k: records._rel_input(k, v, outdir)
                                         for k, v in inputs.items()}
    finished = (rec.get("result") or {}).get("stop_reason") not in (None, "interrupted")
    # a record holds the layers it resolved, and its file paths relative to itself
    wanted = records.relative_options(cfg.with_model_layers().to_dict(), outdir)
    # An option the record lacks did not exist when it was written: the run had its default.
    recorded = {**Config.for_task(cell.task).to_dict(), **(rec.get("options") or {})}
    if rec.get("task") == cell.task and {k: recorded.get(k) for k in wanted} == wanted \
            and same_inputs and finished:
        cell.record = rec
        return True
    return False


def run_cells(cells: list[Cell], jobs: list, outdir: Path, *, seed: int, progress=None,
              announce=None, cancel=None, executor=None, finished=None) -> bool:
    """Run (or skip) every cell with its prepared job and the sweep's ``seed`` (unless the
    cell varies the seed itself), writing ``stem.png`` and ``stem.json`` (and with plotting
    ``stem_loss.png``) for each, on ``executor`` (default: one after another in this process).
    ``announce(n, total, cell, skipped)`` is told of every skipped cell and of each cell as it
    starts (local runs), ``finished(n, total, cell)`` of each as it ends (any executor), and
    ``progress(cell)`` gives a local run's event sink. Returns False when interrupted (Ctrl-C,
    ``cancel``) before every cell was done."""
    from . import executors
    executor = executor or executors.LocalExecutor()
    works = []
    for n, (cell, job) in enumerate(zip(cells, jobs), start=1):
        if cell.options.get("seed") is None:
            cell.options["seed"] = seed
            job.cfg = job.cfg.replace(seed=seed)
            job.request.options = {**job.request.options, "seed": seed}
        if job.is_done(cell, outdir) if hasattr(job, "is_done") else \
                is_done(cell, job.cfg, job.spec.record_inputs(), outdir):
            cell.status = "done"
            if announce:
                announce(n, len(cells), cell, skipped=True)
            continue
        works.append(executors.Work((n, cell), job.request, job))
    start = None if announce is None else (
        lambda w: announce(w.key[0], len(cells), w.key[1], skipped=False))
    events = None if progress is None else (lambda w: progress(w.key[1]))
    for fin in executor.run(works, cancel=cancel, events=events, on_start=start):
        n, cell = fin.work.key
        cell.status, cell.error = fin.status, fin.error
        cell.record, cell.image = fin.record, fin.image
        if finished:
            finished(n, len(cells), cell)
    return all(c.status in ("done", "ran", "failed") for c in cells)


# ----------------------------------------------------------------------------- summaries
CSV_TERMS = ("loss", "content", "style", "tv")


def csv_text(cells: list[Cell], varies: list | None = None, columns=()) -> str:
    """One row per cell: its file, ``columns`` ((header, cell -> value) pairs), the varied
    options, final loss terms, steps, seconds, seed, status and the error of a failed run."""
    names = [n for v in (varies or []) for n in v.names]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "task", *[h for h, _ in columns], *names, *CSV_TERMS, "steps",
                     "stop", "seconds", "seed", "status", "error"])
    for c in cells:
        rec = c.record or {}
        res = rec.get("result") or {}
        terms = res.get("terms") if isinstance(res.get("terms"), dict) else {}
        vals = []
        for n in names:
            v = c.options.get(n)
            vals.append(LIST_JOIN.join(map(str, v)) if isinstance(v, list) else v)
        row = [rec.get("output", f"{c.stem}{EXT}"), c.task, *[get(c) for _, get in columns],
               *vals, _num(res.get("loss")), *[_num(terms.get(t)) for t in CSV_TERMS[1:]],
               res.get("steps", ""), res.get("stop_reason", ""),
               (rec.get("timings") or {}).get("total_s", ""), c.options.get("seed", ""),
               c.status, c.error or ""]
        writer.writerow(row)
    return buf.getvalue()


def _num(x):
    return f"{x:.6g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else ""


def load_image(cell: Cell, outdir: Path):
    from . import image as imageio
    if cell.image is not None:
        return cell.image
    path = outdir / f"{cell.stem}{EXT}"
    if cell.status in ("done", "ran", "interrupted") and path.is_file():
        cell.image = imageio.load(path, what="earlier result")
    return cell.image


def tile_lines(cell: Cell) -> tuple:
    rec = cell.record or {}
    res = rec.get("result") or {}
    secs = (rec.get("timings") or {}).get("total_s")
    facts = []
    if isinstance(res.get("loss"), (int, float)) and math.isfinite(res["loss"]):
        facts.append(f"loss {res['loss']:.3g}")
    if isinstance(secs, (int, float)) and math.isfinite(secs):
        facts.append(f"{secs:.0f} s")
    if cell.status in ("interrupted", "failed", "cancelled"):
        facts.append(cell.status)
    return (cell.label, " · ".join(facts)) if facts else (cell.label,)


def sweep_sheet(cells: list[Cell], varies: list, outdir: Path, title: str, tile: int):
    from . import figures
    nrows = max(c.row for c in cells) + 1
    rows = [[] for _ in range(nrows)]
    for c in sorted(cells, key=lambda c: (c.row, c.col)):
        rows[c.row].append(figures.Tile(load_image(c, outdir), tile_lines(c)))
    last = varies[-1]
    col_labels = [last.heading(i) for i in range(len(last.values))]
    row_labels = None
    if len(varies) > 1:
        row_labels = [" · ".join(v.heading(i) for v, i in zip(varies[:-1], combo))
                      for combo in itertools.product(*[range(len(v.values)) for v in varies[:-1]])]
    return figures.contact_sheet(rows, tile=tile, title=title, row_labels=row_labels,
                                 col_labels=col_labels)


def write_summaries(cells, varies, outdir: Path, title: str, tile: int,
                    sheet_name="contact_sheet.png", sheet=None, columns=(), overlay=True) -> list:
    """The CSV, the contact sheet and (with matplotlib and ``overlay``) the loss overlay;
    returns the paths. ``sheet`` is the contact sheet when the caller draws its own (a batch);
    ``columns`` are further CSV columns (see ``csv_text``)."""
    from . import figures, image as imageio
    written = []
    if not any(c.record or c.error for c in cells):   # nothing made (yet): no empty figures
        return written
    text = csv_text(cells, varies, columns)
    imageio.atomic_write(outdir / "results.csv", lambda fh: fh.write(text.encode()))
    written.append(outdir / "results.csv")
    if sheet is None and varies:
        sheet = sweep_sheet(cells, varies, outdir, title, tile)
    if sheet is not None:
        imageio.save(sheet, outdir / sheet_name)
        written.append(outdir / sheet_name)
    runs = [(c.label, c.record["history"]) for c in cells if c.record and c.record.get("history")]
    try:
        figures.require_plotting()
    except UserError:
        return written
    if runs and overlay:
        figures.plot_overlay(runs, outdir / "losses.png", title=title)
        written.append(outdir / "losses.png")
    return written


def sweep_title(task: str, input_names: list, cfg: Config, varied: set) -> str:
    """What is fixed in a sweep: its inputs and the options that differ from the defaults."""
    defaults = Config.for_task(task)
    fixed = []
    for f in dataclasses.fields(Config):
        if f.name in varied or task not in f.metadata["tasks"]:
            continue
        v = getattr(cfg, f.name)
        if v != getattr(defaults, f.name):
            shown = LIST_JOIN.join(map(str, v)) if isinstance(v, list) else v
            fixed.append(f"{abbrev(f.name)} {shown}")
    return f"impasto {task} · {' / '.join(input_names)} · " + ", ".join(fixed)


def known_fields(task: str) -> set:
    return {n for n in config_mod.field_names() if task in config_mod.field_tasks(n)}
