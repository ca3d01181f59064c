"""Video: temporally consistent style transfer (Ruder, Dosovitskiy & Brox 2016) and a style per
moving object, on the image engine (``tasks.run``).

The core takes an iterable of frames (tensors or PIL images) and yields stylised frames one at a
time; it never opens files (``impasto.video_io`` and the CLI do). Per frame i > 0:

* the backward flow (frame i -> i-1) and the forward flow (i-1 -> i) of the *content* frames,
  and from them the consistency weights c (0 at disocclusions and motion boundaries);
* the previous result warped onto frame i, ω, starts the optimisation (where c = 0 the
  content frame fills in) and the temporal loss ``temporal_weight · mean c·(x − ω)²`` keeps the
  result close to it; ``frame_steps`` full-size steps instead of the first frame's full budget;
* the temporal error of the result: the mean squared difference to ω over c = 1 (reported in
  every mode, so ``--no-temporal`` is measured the same way).

Regions: per-frame masks, or the first frame's mask carried along with the same flow.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import color, flow as flowmod, image as imageio, regions as regionsmod, tasks
from .config import Config
from .errors import UserError


@dataclass
class Frame:
    """One stylised frame, as ``stylise`` yields it."""
    index: int                          # 0-based
    tensor: torch.Tensor                # (1, 3, H, W) in [0, 1], on the CPU
    temporal_error: Optional[float]     # against the previous result (None for the first)
    seconds: float                      # time spent on this frame
    result: Optional[tasks.Result] = None   # the image run (None when the frame was resumed)
    masks: Optional[list] = None        # the region masks (H, W) used for this frame
    occluded: float = 0.0               # share of pixels the temporal loss left out

    @property
    def resumed(self) -> bool:
        return self.result is None


def frame_config(cfg: Config, index: int) -> Config:
    """The image options of frame ``index``: the full budget for the first frame (and for every
    frame without --temporal), then ``frame_steps`` single-scale steps."""
    if index == 0 or not cfg.temporal:
        return cfg
    return cfg.replace(steps=cfg.frame_steps, scales=1)


def _onehot(labels: torch.Tensor, k: int) -> torch.Tensor:
    return F.one_hot(labels, k).permute(2, 0, 1).float()      # (K, H, W)


def _match_shift(prev: torch.Tensor, cur: torch.Tensor, mask: torch.Tensor, guess) -> tuple:
    """The whole-pixel shift (dx, dy) near ``guess`` that best lays the pixels of ``prev``
    under ``mask`` (H, W bool) onto ``cur``: masked template matching (sum of squared
    differences) within a window of a quarter of the region's size around the guess."""
    import cv2

    ys, xs = torch.nonzero(mask, as_tuple=True)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    h, w = mask.shape
    r = max(3, int(0.25 * max(y1 - y0, x1 - x0)))
    gx, gy = int(round(guess[0])), int(round(guess[1]))
    sy0, sy1 = max(0, y0 + gy - r), min(h, y1 + gy + r)
    sx0, sx1 = max(0, x0 + gx - r), min(w, x1 + gx + r)
    if sy1 - sy0 < y1 - y0 or sx1 - sx0 < x1 - x0:
        return float(guess[0]), float(guess[1])           # too near the edge to search
    to_np = lambda t: np.ascontiguousarray(t[0].permute(1, 2, 0).float().numpy())
    templ = to_np(prev[..., y0:y1, x0:x1])
    search = to_np(cur[..., sy0:sy1, sx0:sx1])
    m = np.ascontiguousarray(np.repeat(mask[y0:y1, x0:x1].float().numpy()[:, :, None], 3, 2))
    score = cv2.matchTemplate(search, templ, cv2.TM_SQDIFF, mask=m)
    _, _, (bx, by), _ = cv2.minMaxLoc(score)
    return float(sx0 + bx - x0), float(sy0 + by - y0)


def propagate_labels(onehot: torch.Tensor, fwd: torch.Tensor, prev: torch.Tensor = None,
                     cur: torch.Tensor = None) -> torch.Tensor:
    """Carry hard region labels (K, H, W) one frame on, from frame ``prev`` to ``cur``
    ((1, 3, H, W)), with the forward flow ``fwd`` between them.

    The largest region is the background. Every other region (a moving object) moves as one
    piece: its shift is the median optical flow inside it, refined by matching the region's
    pixels within a few pixels of that (flow inside a flat object drifts toward the motion
    around it); the background takes the rest. A per-pixel warp would instead smear an
    object's label into the background it uncovers, and that error would then travel with
    the background.
    """
    k, h, w = onehot.shape
    if k == 1:
        return onehot.clone()
    background = int(onehot.sum((1, 2)).argmax())
    labels = torch.full((h, w), background, dtype=torch.long)
    f = fwd[0].cpu()
    for j in range(k):
        region = onehot[j] > 0.5
        if j == background or not region.any():
            continue
        dx, dy = float(f[0][region].median()), float(f[1][region].median())
        if prev is not None and cur is not None:
            dx, dy = _match_shift(prev, cur, region, (dx, dy))
        shift = torch.zeros(1, 2, h, w)
        shift[:, 0], shift[:, 1] = -dx, -dy
        carried = flowmod.warp(onehot[j][None, None], shift)[0, 0]
        inside = ~flowmod.outside(shift)[0, 0]
        labels[(carried > 0.5) & inside] = j
    return _onehot(labels, k)


def soft_masks(onehot: torch.Tensor) -> list:
    """Hard labels (K, H, W) -> soft region masks as ``regions.masks_from_image`` makes them."""
    soft = regionsmod.blur(onehot, regionsmod.EDGE_SIGMA * max(onehot.shape[-2:]))
    soft = soft / soft.sum(0, keepdim=True).clamp_min(1e-8)
    return list(soft)


def stylise(frames: Iterable, cfg: Config, styles=(), *, region_styles=None, masks=None,
            first_mask=None, finished: Optional[Callable[[int], Optional[torch.Tensor]]] = None,
            callback=None, on_frame: Optional[Callable[[int], None]] = None,
            on_plan=None, should_stop=None, flows=None) -> Iterator[Frame]:
    """Stylise ``frames`` (tensors (1, 3, H, W) / (3, H, W) in [0, 1] or PIL images, one size)
    and yield one ``Frame`` per input frame, in order, as each is finished.

    ``styles``: the style images (blended with ``cfg.style_blend``), or ``region_styles``: a list
    of (styles, blend) per region with either ``masks`` (an iterable of per-frame lists of K
    (H, W) weight maps, aligned with ``frames``) or ``first_mask`` (K (H, W) hard 0/1 maps for
    the first frame, carried along the clip with the optical flow).

    ``finished(i)`` may return the result of frame i from an earlier, interrupted run: that
    frame is then not recomputed, and the next one starts from it. ``callback(i, step)`` sees
    each optimiser step of frame i; ``on_frame(i)`` is called before a frame is computed.
    ``should_stop()`` (see ``tasks.run``) ends the frame under way as "interrupted".
    ``flows(i)``, when given, returns ``flow.pair`` of frames i - 1 and i (computed elsewhere,
    e.g. all at once on Ray) instead of computing it here.
    """
    cfg.validate("video")
    if region_styles is not None and masks is None and first_mask is None:
        raise UserError("regions need per-frame masks or a first-frame mask")
    if cfg.seed is None:
        cfg = cfg.replace(seed=tasks.new_seed())
    mask_iter = iter(masks) if masks is not None else None
    prev_c = prev_out = labels = None
    hw = None
    for i, frame in enumerate(frames):
        t0 = time.perf_counter()
        content = imageio.to_tensor(frame)
        if hw is None:
            hw = imageio.fit_size(*content.shape[-2:], cfg.size)
        elif imageio.fit_size(*content.shape[-2:], cfg.size) != hw:
            raise UserError(f"frame {i + 1} is {content.shape[-1]}x{content.shape[-2]}, not the "
                            "size of the first frame")
        content = imageio.resize(content, hw)

        # flow between the content frames, and what it says about the previous result
        fwd = bwd = consistency = None
        if prev_c is not None:
            fwd, bwd, consistency = flows(i) if flows is not None else \
                flowmod.pair(prev_c, content, cfg.flow)

        # this frame's regions
        frame_masks = None
        if region_styles is not None:
            if mask_iter is not None:
                try:
                    frame_masks = next(mask_iter)
                except StopIteration:
                    raise UserError(f"the mask video ends at frame {i}: give one mask per "
                                    "frame") from None
                frame_masks = [F.interpolate(torch.as_tensor(m).float()[None, None], size=hw,
                                             mode="bilinear", align_corners=False)[0, 0]
                               for m in frame_masks]
            else:
                if labels is None:
                    first = torch.stack([torch.as_tensor(m).float() for m in first_mask])
                    first = F.interpolate(first[None], size=hw, mode="nearest")[0]
                    labels = _onehot(first.argmax(0), first.shape[0])
                else:
                    labels = propagate_labels(labels, fwd, prev_c, content)
                frame_masks = soft_masks(labels)
            regions = [(m, list(ss), b) for m, (ss, b) in zip(frame_masks, region_styles)]
        else:
            regions = None

        done = finished(i) if finished is not None else None
        result = None
        if done is not None:
            out = imageio.resize(imageio.to_tensor(done), hw)
        else:
            if on_frame is not None:
                on_frame(i)
            fcfg = frame_config(cfg, i)
            init = temporal = None
            if cfg.temporal and prev_out is not None:
                warped = flowmod.warp(prev_out, bwd)
                if cfg.preserve_color == "luminance":   # the run optimises the luminance only
                    warped = color.luminance(warped)
                # start from the warp where it is trusted, from the content frame elsewhere
                init = consistency * warped + (1 - consistency) * content
                temporal = (warped, consistency, cfg.temporal_weight)
            cb = None if callback is None else (lambda s, i=i: callback(i, s))
            result = tasks.run("transfer", fcfg, content, [] if regions else list(styles),
                               init_image=init, callback=cb, regions=regions,
                               on_plan=on_plan if i == 0 else None, temporal=temporal,
                               should_stop=should_stop)
            out = result.tensor
        error = None
        if prev_out is not None:
            error = flowmod.temporal_error(out, prev_out, bwd, consistency)
        occluded = 0.0 if consistency is None else float(1 - consistency.mean())
        yield Frame(i, out, error, time.perf_counter() - t0, result, frame_masks, occluded)
        prev_c, prev_out = content, out
    if mask_iter is not None:
        extra = next(mask_iter, None)
        if extra is not None:
            raise UserError("the mask video has more frames than the input")


def content_frames(frames: Iterable, size: int) -> Iterator[torch.Tensor]:
    """The content frames as ``stylise`` sizes them (the first frame's size, ``size`` long)."""
    hw = None
    for frame in frames:
        content = imageio.to_tensor(frame)
        hw = hw or imageio.fit_size(*content.shape[-2:], size)
        yield imageio.resize(content, hw)


def summary(temporal_errors) -> Optional[float]:
    """The mean temporal error over the frames that have one."""
    errs = [e for e in temporal_errors if e is not None]
    return sum(errs) / len(errs) if errs else None
