"""Region masks: a colour-coded mask image becomes one soft weight map per region.

Each pixel belongs to the listed colour nearest to it (so anti-aliased edges are fine); a
colour far from every listed one is a user error. The one-hot maps are then blurred a little
and renormalised to sum to 1, which gives soft edges between regions.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageColor

from .errors import UserError

TOLERANCE = 80.0      # RGB distance within which a mask pixel counts as a listed colour
EDGE_SIGMA = 0.01     # blur of region edges, as a fraction of the mask's long side


def parse_color(text: str) -> tuple:
    """'ff0000', '#ff0000', 'f00' or a colour name ('red') -> (r, g, b)."""
    t = text.strip()
    candidates = [t] if t.startswith("#") else [f"#{t}", t]
    for c in candidates:
        try:
            return ImageColor.getrgb(c)[:3]
        except ValueError:
            continue
    raise UserError(f"option --region-style: '{text}' is not a colour (use a hex value like "
                    "ff0000 or a name like red)")


def masks_from_image(mask: Image.Image, colors: list, name: str = "mask",
                     soften: bool = True) -> list[torch.Tensor]:
    """One (H, W) float mask per colour in ``colors`` (r, g, b), summing to 1 at every pixel."""
    arr = np.asarray(mask.convert("RGB"), dtype=np.float32)
    palette = np.asarray(colors, dtype=np.float32)                     # (K, 3)
    dist = np.linalg.norm(arr[:, :, None, :] - palette[None, None], axis=-1)   # (H, W, K)
    nearest = dist.argmin(axis=-1)
    far = dist.min(axis=-1) > TOLERANCE
    if far.any():
        ys, xs = np.nonzero(far)
        r, g, b = (int(v) for v in arr[ys[0], xs[0]])
        raise UserError(f"{name}: colour #{r:02x}{g:02x}{b:02x} ({int(far.sum())} pixels, first "
                        f"at x={xs[0]}, y={ys[0]}) matches no --region-style colour: add "
                        f"--region-style {r:02x}{g:02x}{b:02x}=STYLE (or =none)")
    onehot = torch.from_numpy(np.stack([(nearest == k) for k in range(len(colors))])).float()
    if soften:
        onehot = blur(onehot, EDGE_SIGMA * max(onehot.shape[-2:]))
        onehot = onehot / onehot.sum(dim=0, keepdim=True).clamp_min(1e-8)
    return list(onehot)


def blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (K, H, W) maps, edges replicated."""
    if sigma < 0.5:
        return maps
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    m = maps.unsqueeze(1)
    m = F.conv2d(F.pad(m, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    m = F.conv2d(F.pad(m, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return m.squeeze(1)


def check_aspect(mask_size: tuple, content_size: tuple, name: str = "mask") -> None:
    """The mask must have the content's aspect ratio (it is resized to the output)."""
    (mw, mh), (cw, ch) = mask_size, content_size
    if abs(mw / mh - cw / ch) > 0.02 * (cw / ch):
        raise UserError(f"{name}: is {mw}x{mh} but the content image is {cw}x{ch}; draw the mask "
                        "at the content image's size (or the same aspect ratio)")
