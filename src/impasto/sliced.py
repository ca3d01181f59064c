"""The sliced Wasserstein style loss (Heitz, Vanhoey, Chambon & Belcour, CVPR 2021).

A Gram matrix matches second moments only; the sliced Wasserstein distance matches the whole
distribution of a layer's feature vectors. Project every feature vector on P random unit
directions; along each direction, the optimal transport between the output's values and the
style's is to pair them in sorted order, so the loss is the mean squared difference between
the sorted output values and the style's values at the same quantiles. The directions are
drawn anew at every evaluation, so over the optimisation every direction counts.

The output's samples may carry weights (a region's mask, m² as in the guided Gram matrix) and
the style's samples come from one or several images (blend weights); both sides are read as
weighted distributions, and the style's quantile function is interpolated at the output's
sample positions, so the two need not have the same number of samples.

Like the other style losses the value is relative: divided by the style's mean squared
projected value.
"""
from __future__ import annotations

import torch

from .layout import channels_innermost

_EPS = 1e-12


def directions(channels: int, count: int, generator=None, device=None) -> torch.Tensor:
    """(channels, count) random unit vectors, uniform on the sphere."""
    v = torch.randn(channels, count, generator=generator, device="cpu").to(device)
    return v / v.norm(dim=0, keepdim=True).clamp_min(_EPS)


def _weighted_sorted(values: torch.Tensor, weights: torch.Tensor):
    """Each row of ``values`` (P, N) sorted, with its weights, and the mid-point cumulative
    weight of every sorted sample (the quantile level it stands for)."""
    sorted_v, idx = values.sort(dim=1)
    w = weights.expand_as(values).gather(1, idx) if weights.dim() == 1 or weights.shape[0] == 1 \
        else weights.gather(1, idx)
    total = w.sum(dim=1, keepdim=True).clamp_min(_EPS)
    w = w / total
    levels = w.cumsum(dim=1) - w / 2
    return sorted_v, w, levels


def _quantiles(sorted_v: torch.Tensor, levels: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """The quantile function given by (``sorted_v``, ``levels``) per row, linearly interpolated
    at the levels ``at`` (clamped to the end values outside the known levels)."""
    hi = torch.searchsorted(levels.contiguous(), at.contiguous()).clamp(1, levels.shape[1] - 1)
    lo = hi - 1
    l0, l1 = levels.gather(1, lo), levels.gather(1, hi)
    v0, v1 = sorted_v.gather(1, lo), sorted_v.gather(1, hi)
    t = ((at - l0) / (l1 - l0).clamp_min(_EPS)).clamp(0, 1)
    return v0 + t * (v1 - v0)


def _by_channel(features: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (C, H·W). A channels_last map (fp32 on a CPU) is read in place, as the
    transpose of its (H·W, C) layout: the product with the directions takes it as it is."""
    c = features.shape[1]
    if channels_innermost(features):
        return features.permute(0, 2, 3, 1).reshape(-1, c).t()      # a view where whole
    return features.reshape(c, -1)


class SlicedTarget:
    """The style's samples of one layer, to be projected on new directions at every call:
    ``samples`` a list of ((C, M) feature matrices, blend weight)."""

    def __init__(self, samples):
        self.values = torch.cat([s.float() for s, _ in samples], dim=1)          # (C, ΣM)
        self.weights = torch.cat([torch.full((s.shape[1],), b / s.shape[1],
                                             device=s.device) for s, b in samples])

    def loss(self, features: torch.Tensor, dirs: torch.Tensor, mask=None) -> torch.Tensor:
        """Sliced Wasserstein distance of ``features`` (1, C, H, W) to the target along
        ``dirs`` (C, P), weighted by ``mask`` (1, 1, H, W) squared when given."""
        f = _by_channel(features.float())
        d = dirs.to(f.device, torch.float32)
        out = d.t() @ f                                            # (P, N)
        w_out = torch.ones(1, out.shape[1], device=f.device) if mask is None else \
            mask.float().pow(2).reshape(1, -1)
        s_out, w_o, levels = _weighted_sorted(out, w_out)
        tgt = d.t() @ self.values.to(f.device)                     # (P, M)
        s_t, w_t, t_levels = _weighted_sorted(tgt, self.weights.to(f.device).reshape(1, -1))
        matched = _quantiles(s_t, t_levels, levels)
        dist = (w_o * (s_out - matched).pow(2)).sum(dim=1).mean()
        energy = (w_t * s_t.pow(2)).sum(dim=1).mean()
        return dist / energy.clamp_min(_EPS)


def sw_loss(features, target_features, dirs, mask=None):
    """The sliced Wasserstein loss between ``features`` (1, C, H, W) and one style's features
    (1, C, H', W'), along ``dirs``: the functional twin of ``SlicedTarget.loss``."""
    c = target_features.shape[1]
    return SlicedTarget([(target_features.reshape(c, -1), 1.0)]).loss(features, dirs, mask)
