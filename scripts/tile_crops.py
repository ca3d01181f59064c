"""Full-resolution crops of a tiled run across its tile borders, for the README's print-size
section: the crop as painted, and beside it the same crop with every stage's tile borders
drawn in (so a reader can look for a seam where one would be).

    python scripts/tile_crops.py print.png print.json crops.png --center 2688,1536 --side 512

The tile sizes come from the run's record (its memory plan); the borders of each stage of the
network are where its tiles' interiors meet, in image pixels.
"""
from __future__ import annotations

import argparse
import json

from PIL import Image, ImageDraw

from impasto import tile_geometry as tiled

COLOURS = ["#ff2020", "#20c020", "#2060ff", "#ffa000"]


def borders(record: dict, hw) -> list[tuple[list[int], list[int]]]:
    """Per stage: (x borders, y borders) in image pixels, at the record's full scale."""
    tile = record["memory"]["tiles"][-1]
    layers = record["options"]["content_layers"] + record["options"]["style_layers"]
    stages = tiled.stages(record["options"]["model"], layers)
    out = []
    for st, t in zip(stages, tiled.stage_tiles(stages, tile)):
        h, w = tiled.full_hw(*hw, st.scale)
        ts = tiled.tiles(h, w, t, st.geom)
        xs = sorted({u.x0 * st.scale for u in ts if u.x0})
        ys = sorted({u.y0 * st.scale for u in ts if u.y0})
        out.append((xs, ys))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image")
    p.add_argument("record")
    p.add_argument("out")
    p.add_argument("--center", required=True, help="X,Y of the crop's centre in image pixels")
    p.add_argument("--side", type=int, default=512)
    args = p.parse_args(argv)
    im = Image.open(args.image).convert("RGB")
    record = json.loads(open(args.record).read())
    cx, cy = (int(v) for v in args.center.split(","))
    box = (cx - args.side // 2, cy - args.side // 2, cx + args.side // 2, cy + args.side // 2)
    crop = im.crop(box)
    marked = crop.copy()
    draw = ImageDraw.Draw(marked)
    for colour, (xs, ys) in zip(COLOURS, borders(record, (im.height, im.width))):
        for x in xs:
            if box[0] < x < box[2]:
                draw.line([(x - box[0], 0), (x - box[0], args.side)], fill=colour, width=1)
        for y in ys:
            if box[1] < y < box[3]:
                draw.line([(0, y - box[1]), (args.side, y - box[1])], fill=colour, width=1)
    sheet = Image.new("RGB", (2 * args.side + 8, args.side), "white")
    sheet.paste(crop, (0, 0))
    sheet.paste(marked, (args.side + 8, 0))
    sheet.save(args.out)
    print(f"{args.out}: crop {box} of {im.width}x{im.height}; borders drawn: "
          + ", ".join(f"stage {i + 1} {c}" for i, c in enumerate(COLOURS[:len(borders(
              record, (im.height, im.width)))])))


if __name__ == "__main__":
    main()
