"""The memory layout of feature maps. On a CPU the network's maps are channels_last (see
``backbones.base``): the losses read them as (positions, C) matrices, and what the tiles
assemble or add into must share their layout, since a copy between the two layouts
transposes."""
from __future__ import annotations

import math

import torch

from . import allocator


def channels_innermost(t: torch.Tensor) -> bool:
    """Whether a (N, C, H, W) map, or a crop of one, keeps its channels innermost
    (channels_last)."""
    return t.dim() == 4 and t.shape[1] > 1 and t.stride(1) == 1


def zeros_as(like: torch.Tensor, shape, dtype=None) -> torch.Tensor:
    """Zeros of ``shape`` in the layout of ``like`` (a map or a crop of one)."""
    last = channels_innermost(like) and len(shape) == 4
    dtype = dtype or like.dtype
    nbytes = math.prod(shape) * dtype.itemsize
    if like.device.type == "cpu" and nbytes >= MAPPED_MIN and not allocator.heap_kept():
        # a whole map, long-lived: in pages of its own, outside malloc's heap (zeros already);
        # within a kept heap's passes, from the heap, whose pages the next evaluation reuses
        flat = torch.frombuffer(allocator.mapped(nbytes), dtype=torch.uint8).view(dtype)
        if not last:
            return flat.view(shape)
        n, c, h, w = shape
        return flat.view(n, h, w, c).permute(0, 3, 1, 2)
    # allocated in that layout and zeroed there: zeros made contiguous and then converted
    # were a whole map's copy more (0.28 s of a 17 s tiled 2048 px evaluation)
    fmt = torch.channels_last if last else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, device=like.device, memory_format=fmt).zero_()


# Maps smaller than this come from the heap: a mapping per tiny map would cost more than it
# keeps out of the heap.
MAPPED_MIN = 1 << 20
