"""Colour spaces and colour transfer (Gatys et al. 2017, "Controlling Perceptual Factors in
Neural Style Transfer", section 5).

* YIQ: a linear luminance/chroma space (the NTSC matrix), so the round trip is exact up to
  float rounding. Luminance-only transfer optimises Y and takes I and Q from the content.
* ``match_statistics``: an affine map of one image's colours so their mean and covariance
  equal another's (the "colour histogram matching" of the paper, its linear variant), using
  the symmetric square roots of the covariances (the map that moves colours least).
All functions take (1, 3, H, W) RGB tensors in [0, 1] and are differentiable-free utilities.
"""
from __future__ import annotations

import torch

_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114],
                            [0.595716, -0.274453, -0.321263],
                            [0.211456, -0.522591, 0.311135]], dtype=torch.float64)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _apply(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    m = matrix.to(device=image.device, dtype=torch.float64)
    out = torch.einsum("ij,njhw->nihw", m, image.double())
    return out.to(image.dtype)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    return _apply(_RGB_TO_YIQ, image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return _apply(_YIQ_TO_RGB, image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """(1,3,H,W) RGB -> (1,3,H,W) gray image whose three channels are the YIQ luminance."""
    y = rgb_to_yiq(image)[:, :1]
    return y.expand(-1, 3, -1, -1).contiguous()


def match_luminance(source_y: torch.Tensor, target_y: torch.Tensor) -> torch.Tensor:
    """Shift and scale ``source_y`` to the mean and standard deviation of ``target_y``."""
    s_mean, s_std = source_y.mean(), source_y.std().clamp_min(1e-6)
    t_mean, t_std = target_y.mean(), target_y.std()
    return ((source_y - s_mean) / s_std * t_std + t_mean).clamp(0, 1)


def combine_luminance(y_image: torch.Tensor, color_from: torch.Tensor) -> torch.Tensor:
    """RGB image with the luminance of ``y_image`` (its first channel, or its YIQ Y) and the
    chroma (I, Q) of ``color_from`` (same size)."""
    y = rgb_to_yiq(y_image)[:, :1]
    iq = rgb_to_yiq(color_from)[:, 1:]
    return yiq_to_rgb(torch.cat([y, iq], dim=1)).clamp(0, 1)


def _sym_sqrt(cov: torch.Tensor, inverse=False) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(cov)
    vals = vals.clamp_min(1e-10)
    d = vals.rsqrt() if inverse else vals.sqrt()
    return (vecs * d) @ vecs.T


def _stats(image: torch.Tensor):
    x = image.double().reshape(3, -1)
    mean = x.mean(dim=1, keepdim=True)
    xc = x - mean
    cov = xc @ xc.T / x.shape[1] + 1e-8 * torch.eye(3, dtype=torch.float64, device=x.device)
    return mean, cov


def match_statistics(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``source`` with its colours mapped affinely so their mean and covariance are those of
    ``target``'s colours: x -> C_t^½ (C_t^½ C_s C_t^½)^-½ C_t^½ (x - μ_s) + μ_t, the
    transport map between the two Gaussian fits (it moves colours least)."""
    ms, cs = _stats(source)
    mt, ct = _stats(target)
    ct_half = _sym_sqrt(ct)
    middle = _sym_sqrt(ct_half @ cs @ ct_half, inverse=True)
    a = ct_half @ middle @ ct_half
    x = source.double().reshape(3, -1)
    out = a @ (x - ms) + mt
    return out.reshape(source.shape).clamp(0, 1).to(source.dtype)
