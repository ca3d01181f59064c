"""Figures: labelled contact sheets (Pillow) and loss curves (matplotlib, the ``plot`` extra).

Everything here takes images and run histories and returns or writes a figure; nothing runs
the optimisation.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .errors import UserError

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
MUTED = (110, 110, 110)
EMPTY = (228, 228, 228)


@dataclass
class Tile:
    """One picture of a sheet: the image (None: not made), the lines printed under it."""
    image: Image.Image | None
    lines: tuple = ()


def font(size: int = 14):
    """Pillow's bundled scalable font (a bitmap font where Pillow has no FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _text_size(draw, text, fnt):
    box = draw.textbbox((0, 0), text, font=fnt)
    return box[2] - box[0], box[3] - box[1]


def _fit(image: Image.Image, box: int) -> Image.Image:
    """``image`` scaled so its long side is ``box`` pixels."""
    w, h = image.size
    s = box / max(w, h)
    return image.convert("RGB").resize((max(1, round(w * s)), max(1, round(h * s))),
                                       Image.Resampling.LANCZOS)


def _pieces(draw, word, fnt, width):
    """A word too wide for ``width`` cut after '+' or ',' where it can be, else anywhere."""
    if _text_size(draw, word, fnt)[0] <= width:
        return [word]
    out, cur = [], ""
    for part in re.split(r"(?<=[+,])", word):
        if cur and _text_size(draw, cur + part, fnt)[0] > width:
            out.append(cur)
            cur = ""
        cur += part
        while _text_size(draw, cur, fnt)[0] > width and len(cur) > 1:
            cut = len(cur) - 1
            while cut > 1 and _text_size(draw, cur[:cut], fnt)[0] > width:
                cut -= 1
            out.append(cur[:cut])
            cur = cur[cut:]
    return out + ([cur] if cur else [])


def _wrap(draw, text, fnt, width):
    """Break ``text`` at spaces (and long words after '+' or ',') so each line fits ``width``
    pixels."""
    words = [p for w in text.split(" ") for p in _pieces(draw, w, fnt, width)]
    lines, line = [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if line and _text_size(draw, trial, fnt)[0] > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def contact_sheet(rows: list[list[Tile]], *, tile: int = 256, title: str = "",
                  row_labels: list[str] | None = None, col_labels: list[str] | None = None,
                  font_size: int = 14) -> Image.Image:
    """A grid of tiles with the lines of each printed under it, optional row labels on the
    left, column labels on top and a title. Rows may be ragged; a missing image is a grey
    box marked 'not run'."""
    fnt, bold = font(font_size), font(font_size + 2)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = _text_size(scratch, "Ag", fnt)[1] + 5
    pad = 10
    ncols = max((len(r) for r in rows), default=0)
    fitted = [[_fit(t.image, tile) if t.image is not None else None for t in r] for r in rows]
    tile_h = max([im.size[1] for r in fitted for im in r if im is not None] or [tile])
    wrapped = [[[w for line in t.lines for w in _wrap(scratch, str(line), fnt, tile)] for t in r]
               for r in rows]
    caption_h = max([len(ls) for r in wrapped for ls in r] or [0]) * line_h
    left = 0
    if row_labels:
        widths = [_text_size(scratch, w, bold)[0] for lab in row_labels
                  for w in _wrap(scratch, lab, bold, 220)]
        left = min(220, max(widths or [0])) + 2 * pad
    top = pad
    title_lines = _wrap(scratch, title, bold, max(200, left + ncols * (tile + pad))) if title else []
    top += len(title_lines) * (line_h + 2)
    head_h = 0
    if col_labels:
        head_lines = [_wrap(scratch, lab, bold, tile) for lab in col_labels]
        head_h = max(len(ls) for ls in head_lines) * (line_h + 2) + 4
    cell_w, cell_h = tile + pad, tile_h + caption_h + 2 * pad
    width = left + ncols * cell_w + pad
    height = top + head_h + len(rows) * cell_h + pad
    sheet = Image.new("RGB", (max(width, 1), max(height, 1)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    y = pad
    for line in title_lines:
        draw.text((pad, y), line, font=bold, fill=INK)
        y += line_h + 2
    if col_labels:
        for c, lines in enumerate(head_lines):
            for k, line in enumerate(lines):
                w = _text_size(draw, line, bold)[0]
                draw.text((left + pad + c * cell_w + (tile - w) // 2, top + k * (line_h + 2)),
                          line, font=bold, fill=INK)
    for r, row in enumerate(rows):
        y0 = top + head_h + r * cell_h
        if row_labels and r < len(row_labels):
            lines = _wrap(draw, row_labels[r], bold, left - 2 * pad)
            ly = y0 + pad + (tile_h - len(lines) * (line_h + 2)) // 2
            for k, line in enumerate(lines):
                draw.text((pad, ly + k * (line_h + 2)), line, font=bold, fill=INK)
        for c, t in enumerate(row):
            x0 = left + pad + c * cell_w
            im = fitted[r][c]
            if im is None:
                draw.rectangle([x0, y0 + pad, x0 + tile - 1, y0 + pad + tile_h - 1], fill=EMPTY)
                msg = "not run"
                w, h = _text_size(draw, msg, fnt)
                draw.text((x0 + (tile - w) // 2, y0 + pad + (tile_h - h) // 2), msg, font=fnt,
                          fill=MUTED)
            else:
                sheet.paste(im, (x0 + (tile - im.size[0]) // 2, y0 + pad + (tile_h - im.size[1]) // 2))
            for k, line in enumerate(wrapped[r][c]):
                w = _text_size(draw, line, fnt)[0]
                draw.text((x0 + (tile - w) // 2, y0 + pad + tile_h + 4 + k * line_h), line,
                          font=fnt, fill=INK if k == 0 else MUTED)
    return sheet


# ----------------------------------------------------------------------------- loss curves
def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("loss plots need matplotlib: pip install 'impasto[plot]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def require_plotting() -> None:
    """Raise UserError now (before a long run) when plots cannot be drawn."""
    _pyplot()


def weighted_terms(entry: dict, weights: dict) -> dict:
    """The loss terms of one history entry, each times its weight (the parts of the total)."""
    return {k: entry[k] * w for k, w in weights.items() if k in entry and w > 0}


def _scale_changes(history):
    """Steps where the coarse-to-fine scale changes, with the new side."""
    out = []
    for prev, cur in zip(history, history[1:]):
        if cur.get("side") != prev.get("side"):
            out.append((cur["step"], cur.get("side")))
    return out


def _positive(values):
    return [v if (v is not None and math.isfinite(v) and v > 0) else math.nan for v in values]


def _save(fig, path) -> None:
    from .image import atomic_write
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    data = buf.getvalue()
    atomic_write(Path(path), lambda fh: fh.write(data))


def _loss_axes(axes, history, ylabel, mark_seconds=True):
    """Log scale, labels and grid of a (step, seconds) pair of axes, and a dotted line where
    coarse to fine changes scale in ``history`` (the loss jumps at each upsampling); on the
    seconds axis too with ``mark_seconds`` (runs of one figure change scale at one step, not
    at one time)."""
    for ax, label in ((axes[0], "step"), (axes[1], "seconds")):
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.25)
    by_step = {h["step"]: h["time"] for h in history}
    for step, side in _scale_changes(history):
        axes[0].axvline(step, color="grey", ls=":", lw=1)
        if mark_seconds:
            axes[1].axvline(by_step[step], color="grey", ls=":", lw=1)
        axes[0].text(step, 1.0, f" {side}px", transform=axes[0].get_xaxis_transform(),
                     va="top", fontsize=8, color="grey")
    axes[0].set_ylabel(ylabel)
    axes[1].legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="upper right")


def _finish(fig, plt, path, title):
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_history(history: list, weights: dict, path, title: str = "") -> None:
    """Loss terms (each times its weight) and the total against step and against seconds,
    on a log scale, with the coarse-to-fine scale changes marked; written to ``path``."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    steps = [h["step"] for h in history]
    times = [h["time"] for h in history]
    weighted = [weighted_terms(h, weights) for h in history]
    series = {"total": [h["loss"] for h in history]}
    for name in weights:
        parts = [w.get(name) for w in weighted]
        if any(p for p in parts):
            series[f"{name} x {weights[name]:g}"] = parts
    for ax, xs in ((axes[0], steps), (axes[1], times)):
        for name, ys in series.items():
            ax.plot(xs, _positive(ys), label=name, lw=2.0 if name == "total" else 1.2)
    _loss_axes(axes, history, "loss (weighted)")
    _finish(fig, plt, path, title)


def plot_overlay(runs: list, path, title: str = "") -> None:
    """The total loss of several runs, ``runs`` a list of (label, history), against step and
    against seconds, in one figure."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    runs = [(label, history) for label, history in runs if history]
    for label, history in runs:
        total = _positive([h["loss"] for h in history])
        line, = axes[0].plot([h["step"] for h in history], total, lw=1.4, label=label)
        axes[1].plot([h["time"] for h in history], total, lw=1.4, color=line.get_color())
    _loss_axes(axes, runs[0][1] if runs else [], "total loss", mark_seconds=False)
    _finish(fig, plt, path, title)


def plot_frames(frames: list, weights: dict, path, title: str = "") -> None:
    """A video run's final loss terms (each times its weight) per frame, and its temporal
    error per frame (the flicker figure), ``frames`` the per-frame entries of its record."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    index = list(range(1, len(frames) + 1))
    for name, w in weights.items():
        ys = [(f.get("terms") or {}).get(name) for f in frames]
        if w > 0 and any(ys):
            axes[0].plot(index, _positive([y * w if y is not None else None for y in ys]),
                         marker=".", label=f"{name} x {w:g}")
    axes[0].plot(index, _positive([f.get("loss") for f in frames]), marker=".", lw=2.0,
                 label="total")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("final loss (weighted)")
    axes[0].legend(fontsize=8)
    axes[1].plot(index, [f.get("temporal_error") if f.get("temporal_error") is not None
                         else math.nan for f in frames], marker="o", color="black")
    axes[1].set_ylabel("temporal error (to the previous frame)")
    for ax in axes:
        ax.set_xlabel("frame")
        ax.grid(True, which="both", alpha=0.25)
    _finish(fig, plt, path, title)
