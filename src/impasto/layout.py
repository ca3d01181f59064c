"""The memory layout of feature maps. On a CPU the network's maps are channels_last (see
``backbones.base``): the losses read them as (positions, C) matrices, and what the tiles
assemble or add into must share their layout, since a copy between the two layouts
transposes."""
from __future__ import annotations

import torch


def channels_innermost(t: torch.Tensor) -> bool:
    """Whether a (N, C, H, W) map, or a crop of one, keeps its channels innermost
    (channels_last)."""
    return t.dim() == 4 and t.shape[1] > 1 and t.stride(1) == 1


def zeros_as(like: torch.Tensor, shape, dtype=None) -> torch.Tensor:
    """Zeros of ``shape`` in the layout of ``like`` (a map or a crop of one)."""
    fmt = torch.channels_last if channels_innermost(like) else torch.contiguous_format
    return torch.zeros(shape, dtype=dtype or like.dtype, device=like.device).contiguous(
        memory_format=fmt)
