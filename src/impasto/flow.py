"""Optical flow between frames, warping, the occlusion check and mask propagation.

Pure functions on tensors and arrays; nothing here reads files. Conventions:

* An image is a float32 tensor (1, C, H, W) in [0, 1]; a flow is (1, 2, H, W) in pixels, channel
  0 the x (column) displacement and channel 1 the y (row) displacement.
* ``flow(a, b)`` gives, for each pixel x of ``a``, where it moved to in ``b``: a(x) ≈ b(x + w(x)).
* ``warp(image, w)`` samples ``image`` at x + w(x): with ``w = flow(b, a)`` (the backward flow)
  ``warp(a, w)`` lays frame a onto frame b.
* ``occlusion(fwd, bwd)`` marks, on the grid of frame b, the pixels whose backward flow cannot be
  trusted (disoccluded, or on a motion boundary), after Ruder, Dosovitskiy & Brox 2016.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError

METHODS = ("dis", "farneback")


def _gray(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W) uint8 luma, as OpenCV's flow wants it."""
    t = image.detach().float().cpu()[0]
    y = 0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2] if t.shape[0] == 3 else t[0]
    return np.ascontiguousarray((y.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy())


def _cv2():
    try:
        import cv2
    except ImportError:
        raise UserError("video needs OpenCV for optical flow: pip install 'impasto[video]' "
                        "(opencv-python-headless)") from None
    return cv2


def flow(a: torch.Tensor, b: torch.Tensor, method: str = "dis") -> torch.Tensor:
    """The dense optical flow from image ``a`` to image ``b`` (same size), (1, 2, H, W) pixels.

    ``dis``: OpenCV's DIS flow (Kroeger et al. 2016), the MEDIUM preset: fast and accurate on
    large motions, refined at full resolution. ``farneback``: OpenCV's Farneback polynomial-expansion flow."""
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"flow between images of different sizes {tuple(a.shape[-2:])} and "
                         f"{tuple(b.shape[-2:])}")
    cv2 = _cv2()
    ga, gb = _gray(a), _gray(b)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        dis.setFinestScale(0)   # refine at full resolution (the preset stops at half)
        w = dis.calc(ga, gb, None)
    elif method == "farneback":
        w = cv2.calcOpticalFlowFarneback(ga, gb, None, pyr_scale=0.5, levels=5, winsize=15,
                                         iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
    else:
        raise UserError(f"option --flow: '{method}' is not one of {', '.join(METHODS)}")
    return torch.from_numpy(np.ascontiguousarray(w)).permute(2, 0, 1).unsqueeze(0).float()


def _grid(w: torch.Tensor) -> torch.Tensor:
    """The sampling grid (1, H, W, 2) in grid_sample's [-1, 1] units for positions x + w(x)."""
    _, _, h, wd = w.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=w.device),
                            torch.arange(wd, dtype=torch.float32, device=w.device), indexing="ij")
    px = xs + w[0, 0]
    py = ys + w[0, 1]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels
    gx = 2 * px / max(wd - 1, 1) - 1
    gy = 2 * py / max(h - 1, 1) - 1
    return torch.stack([gx, gy], dim=-1).unsqueeze(0)


def warp(image: torch.Tensor, w: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``image`` sampled at x + w(x) (bilinear; positions outside the image take the nearest
    border pixel). ``image`` (N, C, H, W), ``w`` (1, 2, H, W) on the same grid."""
    grid = _grid(w.to(image.device)).expand(image.shape[0], -1, -1, -1)
    return F.grid_sample(image.float(), grid, mode=mode, padding_mode="border",
                         align_corners=True)


def outside(w: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W) bool: x + w(x) falls outside the image (content that entered the frame)."""
    _, _, h, wd = w.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(wd, dtype=torch.float32), indexing="ij")
    px, py = xs + w[0, 0].cpu(), ys + w[0, 1].cpu()
    out = (px < -0.5) | (px > wd - 0.5) | (py < -0.5) | (py > h - 0.5)
    return out.view(1, 1, h, wd)


def occlusion(fwd: torch.Tensor, bwd: torch.Tensor) -> torch.Tensor:
    """Pixels of frame b whose backward flow is not reliable, (1, 1, H, W) bool.

    ``fwd = flow(a, b)`` and ``bwd = flow(b, a)``. As in Ruder et al. 2016: with w = bwd(x) and
    w̃ = fwd(x + w) (the forward flow where x came from), a pixel is disoccluded when the two do
    not cancel, |w + w̃|² > 0.01 (|w|² + |w̃|²) + 0.5; it lies on a motion boundary when
    |∇u|² + |∇v|² > 0.01 |w|² + 0.002 for the backward flow (u, v). Pixels that came from
    outside frame a count as occluded too.
    """
    w = bwd.float().cpu()
    w_t = warp(fwd.float().cpu(), w)
    disoccluded = (w + w_t).pow(2).sum(1, keepdim=True) > \
        0.01 * (w.pow(2).sum(1, keepdim=True) + w_t.pow(2).sum(1, keepdim=True)) + 0.5
    # central differences of u and v (zero at the border)
    gx = torch.zeros_like(w)
    gy = torch.zeros_like(w)
    gx[..., :, 1:-1] = (w[..., :, 2:] - w[..., :, :-2]) / 2
    gy[..., 1:-1, :] = (w[..., 2:, :] - w[..., :-2, :]) / 2
    grad = (gx.pow(2) + gy.pow(2)).sum(1, keepdim=True)
    boundary = grad > 0.01 * w.pow(2).sum(1, keepdim=True) + 0.002
    return disoccluded | boundary | outside(w)


def consistency(fwd: torch.Tensor, bwd: torch.Tensor) -> torch.Tensor:
    """The temporal loss weights c (1, 1, H, W) float: 1 where the warp can be trusted, 0 at
    occluded pixels and motion boundaries."""
    return (~occlusion(fwd, bwd)).float()


def pair(prev: torch.Tensor, cur: torch.Tensor, method: str = "dis") -> tuple:
    """What video needs between two content frames: (forward flow prev -> cur, backward flow
    cur -> prev, consistency weights on cur's grid). One function, so that a frame pair gives
    the same tensors wherever it is computed (in this process or a Ray worker)."""
    fwd = flow(prev, cur, method)
    bwd = flow(cur, prev, method)
    return fwd, bwd, consistency(fwd, bwd)


def propagate_mask(mask: torch.Tensor, bwd: torch.Tensor, new=None) -> torch.Tensor:
    """Carry a mask (1, K, H, W) of region weights from frame a onto frame b with the backward
    flow ``bwd = flow(b, a)``. Pixels that entered the frame keep the nearest warped value
    (the border rule of ``warp``); the weights are renormalised to sum to 1 per pixel."""
    out = warp(mask.float(), bwd)
    if out.shape[1] > 1:
        out = out / out.sum(1, keepdim=True).clamp_min(1e-6)
    return out


def temporal_error(image: torch.Tensor, prev: torch.Tensor, bwd: torch.Tensor,
                   weight: torch.Tensor) -> float:
    """The flicker of ``image`` against the previous frame: the mean squared difference (RGB
    in [0, 1]) between ``image`` and ``prev`` warped onto it, over the pixels where ``weight``
    (the consistency mask) is 1."""
    warped = warp(prev.float().cpu(), bwd.cpu())
    c = weight.float().cpu()
    diff = (image.float().cpu() - warped).pow(2).mean(1, keepdim=True)
    return float((c * diff).sum() / c.sum().clamp_min(1.0))
