"""Batches: every content × style pair (or the pairs of a CSV file), each a transfer written as
``DIR/<content>__<style>.png`` with its run record, summed up in ``results.csv`` and a contact
sheet with the contents as rows and the styles as columns.

A batch is a sweep over inputs instead of options: its pairs are ``sweep.Cell``s, run (or
skipped when done) by ``sweep.run_cells`` on any executor, summed up by
``sweep.write_summaries``. What differs is how a bad input is handled: a file that cannot be
read fails its own pairs (reported in their rows), and the rest of the batch still runs.
"""
from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import sweep
from .errors import UserError

SEP = "__"         # between the content's and the style's name in an output's name


VIDEO_EXTS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")   # a .gif is an image here


def image_extensions() -> set:
    from PIL import Image
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def is_video(path) -> bool:
    """A content that is a video clip: its pairs run ``impasto video`` (frames in order)."""
    return Path(path).suffix.lower() in VIDEO_EXTS


def clip_output(outdir: Path, stem: str, content) -> Path:
    """Where a clip's result goes: the content's container when impasto writes it, else mp4."""
    ext = Path(content).suffix.lower()
    return outdir / f"{stem}{ext if ext in ('.mp4', '.mov', '.mkv') else '.mp4'}"


def expand(args: list, what: str) -> list[str]:
    """Files, folders (the images and video clips in them, sorted by name, not recursing) and
    globs, as a list of paths in the order given, each once. A name that is neither an existing path nor a glob
    is kept: the pairs it is in fail with the reason. A folder without images or a glob that
    matches nothing is an error now."""
    exts, out = image_extensions() | set(VIDEO_EXTS), []
    for arg in args:
        arg = str(arg)
        p = Path(arg)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir()
                           if f.suffix.lower() in exts and not f.name.startswith(".")
                           and not f.is_dir())
            if not found:
                raise UserError(f"{what} {arg}: the folder holds no images")
        elif not p.exists() and glob.has_magic(arg):
            found = sorted(f for f in glob.glob(arg) if not Path(f).is_dir())
            if not found:
                raise UserError(f"{what} {arg}: matches no files")
        else:
            found = [arg]
        out += [f for f in found if f not in out]
    return out


@dataclass
class Pair:
    content: str
    style: str
    options: dict = field(default_factory=dict)    # this pair's own options (from --pairs)
    texts: dict = field(default_factory=dict)      # the same, as written in the CSV


@dataclass
class BatchCell(sweep.Cell):
    """A sweep cell that knows its pair."""
    pair: Pair | None = None


def cross(contents: list, styles: list) -> list[Pair]:
    """Every content with every style, content-major."""
    return [Pair(c, s) for c in contents for s in styles]


def read_pairs(path) -> list[Pair]:
    """The pairs of a CSV file: a header with ``content`` and ``style`` columns and, optionally,
    one column per option of ``impasto transfer`` (``style_weight``, ``seed``, ...) whose
    values, where given, apply to that pair only. Paths are relative to the CSV's folder."""
    from . import image as imageio
    path = Path(path)
    imageio.check_input_file(path, "--pairs file")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"--pairs {path}: cannot read it as CSV ({e})") from None
    rows = [r for r in rows if any(x.strip() for x in r)]
    if not rows:
        raise UserError(f"--pairs {path}: the file is empty (give a header: content,style)")
    header = [h.strip() for h in rows[0]]
    if "content" not in header or "style" not in header:
        raise UserError(f"--pairs {path}: the header must name a 'content' and a 'style' column "
                        f"(got {', '.join(header)})")
    fields = {h: sweep._field(h, "transfer") for h in header if h not in ("content", "style")}
    base = path.parent
    pairs = []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UserError(f"--pairs {path} line {n}: {len(row)} values for {len(header)} "
                            "columns")
        cells = dict(zip(header, (x.strip() for x in row)))
        if not cells["content"] or not cells["style"]:
            raise UserError(f"--pairs {path} line {n}: give a content and a style")
        options, texts = {}, {}
        for h, f in fields.items():
            if cells[h]:
                try:
                    options[f.name] = sweep.convert(f, cells[h])
                except UserError as e:
                    raise UserError(f"--pairs {path} line {n}: {e}") from None
                texts[f.name] = cells[h]
        rel = lambda p: p if os.path.isabs(p) else str(base / p)
        pairs.append(Pair(rel(cells["content"]), rel(cells["style"]), options, texts))
    if not pairs:
        raise UserError(f"--pairs {path}: no pairs under the header")
    return pairs


def cells(pairs: list[Pair], options: dict) -> list[BatchCell]:
    """One cell per pair, named ``<content>__<style>`` (made unique with _2, _3 ...), in the row
    of its content and the column of its style."""
    contents = list(dict.fromkeys(p.content for p in pairs))
    styles = list(dict.fromkeys(p.style for p in pairs))
    out, stems = [], set()
    for p in pairs:
        stem = f"{sweep.slug(p.content)}{SEP}{sweep.slug(p.style)}"
        if p.texts:
            stem += "_" + "_".join(f"{sweep.abbrev(k)}-{sweep.slug(v)}"
                                   for k, v in p.texts.items())
        base, k = stem, 1
        while stem in stems:
            k += 1
            stem = f"{base}_{k}"
        stems.add(stem)
        label = ", ".join(f"{sweep.abbrev(k)} {v}" for k, v in p.texts.items())
        out.append(BatchCell(stem, "transfer", {**options, **p.options}, label,
                             row=contents.index(p.content), col=styles.index(p.style), pair=p))
    return out


def csv_columns(pairs: list[Pair], options: dict = None) -> list:
    """results.csv's columns after the file: the content, the style, and the options given
    (on the command line for every pair, or in the CSV for one; the seed has its own column)."""
    names = list(dict.fromkeys([*(options or {}), *(k for p in pairs for k in p.options)]))
    names = [n for n in names if n != "seed"]
    cols = [("content_image", lambda c: c.pair.content), ("style_image", lambda c: c.pair.style)]
    taken = {*sweep.CSV_TERMS, "file", "task", "steps", "stop", "seconds", "status", "error"}
    for n in names:          # an option named like a result column gets 'option_' before it
        cols.append((f"option_{n}" if n in taken else n,
                     lambda c, n=n: _show(c.pair.options.get(n, c.options.get(n)))))
    if any(is_video(p.content) for p in pairs):
        cols.append(("temporal_error", lambda c: _show(((c.record or {}).get("result") or {})
                                                       .get("temporal_error"))))
    return cols


def _show(v):
    return sweep.LIST_JOIN.join(map(str, v)) if isinstance(v, list) else ("" if v is None else v)


def _thumb(path, tile):
    """The first picture of an image or a clip, or None when it cannot be read."""
    from . import image as imageio
    try:
        if is_video(path):
            from . import video_io
            return next(iter(video_io.open_source(path).frames()))
        return imageio.load(path, long_side=tile, what="image")
    except (UserError, StopIteration, OSError):
        return None


def sheet(cells: list, outdir: Path, title: str, tile: int):
    """The contact sheet: a row per content and a column per style, the inputs themselves in
    the first row and column, each result with its loss and seconds (or why it failed)."""
    from PIL import Image

    from . import figures
    contents = list(dict.fromkeys(c.pair.content for c in cells))
    styles = list(dict.fromkeys(c.pair.style for c in cells))
    blank = Image.new("RGB", (16, 1), figures.BACKGROUND)     # a thin strip: no tall tiles
    head = [figures.Tile(blank)]
    for s in styles:
        im = _thumb(s, tile)
        head.append(figures.Tile(im, ("style",) if im is not None else ("unreadable",)))
    rows = [head]
    for r, content in enumerate(contents):
        im = _thumb(content, tile)
        row = [figures.Tile(im, ("content",) if im is not None else ("unreadable",))]
        row += [figures.Tile(None, ()) for _ in styles]
        rows.append(row)
    for c in cells:
        lines = tuple(x for x in sweep.tile_lines(c) if x)
        if c.status == "failed" and c.error:
            lines = ("failed",)
        image = sweep.load_image(c, outdir)
        if image is None and c.record and is_video(c.pair.content):
            image = _thumb(outdir / c.record["output"], tile)     # a clip: its first frame
        rows[c.row + 1][c.col + 1] = figures.Tile(image, lines)
    names = lambda paths: [Path(p).name for p in paths]
    return figures.contact_sheet(rows, tile=tile, title=title, row_labels=[""] + names(contents),
                                 col_labels=[""] + names(styles))
