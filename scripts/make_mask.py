"""Draw a two-region mask (sky red, everything else blue) from a photo, for the README's
region example: `python scripts/make_mask.py examples/tubingen.jpg examples/tubingen_mask.png`.

Sky = bright, blue-dominant pixels connected to the top edge; small holes closed with a
median filter.
"""
import sys
from collections import deque

import numpy as np
from PIL import Image, ImageFilter


def sky_mask(photo: Image.Image) -> np.ndarray:
    a = np.asarray(photo.convert("RGB"), dtype=np.int32)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    candidate = (b > r + 25) & (b > 110) & (b >= g)
    h, w = candidate.shape
    sky = np.zeros_like(candidate)
    queue = deque((0, x) for x in range(w) if candidate[0, x])
    for y, x in queue:
        sky[y, x] = True
    while queue:
        y, x = queue.popleft()
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            ny, nx = y + dy, x + dx
            if 0 <= ny < h and 0 <= nx < w and candidate[ny, nx] and not sky[ny, nx]:
                sky[ny, nx] = True
                queue.append((ny, nx))
    img = Image.fromarray((sky * 255).astype(np.uint8)).filter(ImageFilter.MedianFilter(9))
    return np.asarray(img) > 127


def main(src, dst):
    photo = Image.open(src)
    photo.thumbnail((800, 800))
    sky = sky_mask(photo)
    out = np.zeros(sky.shape + (3,), np.uint8)
    out[sky] = (255, 0, 0)
    out[~sky] = (0, 0, 255)
    Image.fromarray(out).save(dst)
    print(f"wrote {dst}: sky {sky.mean():.0%} of the picture")


if __name__ == "__main__":
    main(*sys.argv[1:3])
