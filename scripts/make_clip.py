"""Make a test clip: a slow pan and zoom across a photo with a shape moving over it, and the
shape's mask per frame (red shape, blue background) for ``impasto video --mask-video``.

    python scripts/make_clip.py examples/tubingen.jpg clip.mp4 --frames 24 --width 256 \
        --masks clip_masks --first-mask clip_mask0.png

Writes any output ``impasto video`` writes (.mp4, .gif, or a folder of PNG frames).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw

SHAPE = (236, 196, 40)          # the moving shape's colour (a yellow disc with a dark ring)
MASK_SHAPE, MASK_BACKGROUND = (255, 0, 0), (0, 0, 255)


def shape_box(t: float, width: int, height: int):
    """The shape's bounding box at time t in [0, 1]: it crosses the frame left to right on a
    shallow arc."""
    r = 0.16 * height
    cx = width * (0.18 + 0.62 * t)
    cy = height * (0.62 - 0.18 * math.sin(math.pi * t))
    return (cx - r, cy - r, cx + r, cy + r)


def frame(photo: Image.Image, t: float, width: int, height: int, shape=True) -> Image.Image:
    """The photo seen through a window that pans right and zooms in by 15% as t goes 0 -> 1."""
    pw, ph = photo.size
    zoom = 1.0 + 0.15 * t
    wh = min(pw / width, ph / height) * 0.8 / zoom        # source pixels per output pixel
    w, h = width * wh, height * wh
    cx = pw * (0.42 + 0.16 * t)
    cy = ph * 0.5
    box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    im = photo.transform((width, height), Image.Transform.EXTENT, box,
                         Image.Resampling.BICUBIC)
    if shape:
        d = ImageDraw.Draw(im)
        b = shape_box(t, width, height)
        d.ellipse(b, fill=(60, 40, 30))
        inset = 0.18 * (b[2] - b[0])
        d.ellipse((b[0] + inset / 3, b[1] + inset / 3, b[2] - inset / 3, b[3] - inset / 3),
                  fill=SHAPE)
        d.ellipse((b[0] + inset, b[1] + inset, b[0] + 2 * inset, b[1] + 2 * inset),
                  fill=(255, 250, 220))
    return im


def mask(t: float, width: int, height: int) -> Image.Image:
    im = Image.new("RGB", (width, height), MASK_BACKGROUND)
    ImageDraw.Draw(im).ellipse(shape_box(t, width, height), fill=MASK_SHAPE)
    return im


def main(argv=None):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from impasto import video_io

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("photo")
    p.add_argument("output", help=".mp4, .gif or a folder")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--fps", type=float, default=12)
    p.add_argument("--no-shape", action="store_true", help="the pan and zoom only")
    p.add_argument("--masks", help="also write the per-frame masks here (a folder or .gif)")
    p.add_argument("--first-mask", help="also write the first frame's mask here (.png)")
    a = p.parse_args(argv)
    height = round(a.width * 3 / 4)
    photo = Image.open(a.photo).convert("RGB")
    ts = [i / max(1, a.frames - 1) for i in range(a.frames)]
    video_io.write((frame(photo, t, a.width, height, not a.no_shape) for t in ts), a.output,
                   a.fps)
    if a.masks:
        video_io.write((mask(t, a.width, height) for t in ts), a.masks, a.fps)
    if a.first_mask:
        mask(0.0, a.width, height).save(a.first_mask)


if __name__ == "__main__":
    main()
