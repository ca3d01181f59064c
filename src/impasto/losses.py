"""Loss functions: pure functions on tensors, and the objective that combines them.

Normalisation (the choice, and why)
-----------------------------------
* ``gram(F) = F Fᵀ / (H·W)``: the mean outer product of feature vectors over positions. It is a
  statistic of the image, not of its pixel count, so a 256 px and a 1024 px image of the same
  texture have the same Gram matrix.
* Each layer's loss is the squared error relative to its target's energy:
  ``‖G − A‖² / ‖A‖²`` for style and ``‖F − P‖² / ‖P‖²`` for content. Up to a constant per
  layer this is Gatys et al.'s loss (their ``1/(4N²M²)`` factor is the mean over the C² entries
  of our Gram difference), so the optimisation landscape is the same; the constant makes every
  layer's loss dimensionless. Layers with large activations (relu1_1 of the Caffe VGG is
  ~10⁴ times relu5_1 in Gram energy) no longer drown the others, the default per-layer weights
  can be equal, and a weight means the same on any backbone (Caffe 0-255 inputs or torchvision
  0-1 inputs) and at any image size.
* Per-layer weights are relative: they are normalised to sum to 1, so ``--style-weight`` and
  ``--content-weight`` keep their meaning when layers are added or removed.
* Total variation is the mean over neighbouring-pixel differences (absolute or squared) of
  the image in [0, 1], also independent of image size.
"""
from __future__ import annotations

import hashlib
import weakref

import torch
import torch.nn.functional as F

from .layout import channels_innermost

_EPS = 1e-12


def self_product(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C): Σ over positions of f fᵀ, unnormalised, in the features'
    own dtype (bf16 accumulates in float32 inside the kernel; only the output is rounded). A
    channels-innermost map is read as a (H·W, C) matrix, in place where it is whole. Its
    gradient is written out as one product (``self_product_grad``)."""
    n, c, h, w = features.shape
    if channels_innermost(features):
        return _SelfProduct.apply(features.permute(0, 2, 3, 1).reshape(n, h * w, c), True)
    return _SelfProduct.apply(features.reshape(n, c, h * w), False)


def self_product_grad(features: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """∂/∂f of ⟨d, self_product(f)⟩ for a (N, C, C) ``d``: every position's feature vector
    times (d + dᵀ), as a map in the features' layout and dtype."""
    n, c, h, w = features.shape
    if channels_innermost(features):
        y = _times_symmetric(features.permute(0, 2, 3, 1).reshape(n, h * w, c), d, True)
        return y.view(n, h, w, c).permute(0, 3, 1, 2)
    return _times_symmetric(features.reshape(n, c, h * w), d, False).view(n, c, h, w)


def _times_symmetric(f: torch.Tensor, d: torch.Tensor, positions_first: bool) -> torch.Tensor:
    """F (D + Dᵀ) for F (N, positions, C), else (D + Dᵀ) F for F (N, C, positions)."""
    d = d.float()
    s = (d + d.transpose(-1, -2)).to(f.dtype)
    return torch.bmm(f, s) if positions_first else torch.bmm(s, f)


def gram(features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C): F Fᵀ / (H·W), returned in float32.

    With a ``mask`` (N, 1, H, W) of weights in [0, 1], the guided Gram matrix of Gatys et al.
    2017: Σ m² f fᵀ / Σ m², the statistic of the masked region only (equal to the plain Gram
    matrix for an all-ones mask).

    The product runs in the features' own dtype (``self_product``): for bf16 features the
    matrix multiply accumulates in float32 inside the kernel and only its output is rounded
    (about 0.1% relative), which is ~3x faster on a CPU than casting the features to float32
    first. A channels_last feature map is read as an (H·W, C) matrix in place, with no copy.
    """
    n, c, h, w = features.shape
    if mask is not None:
        features = features * mask.to(features.dtype)
    g = self_product(features).float() / (h * w)
    if mask is not None:
        g = g / mask.float().pow(2).mean(dim=(1, 2, 3)).clamp_min(_EPS).view(n, 1, 1)
    return g


class _SelfProduct(torch.autograd.Function):
    """Fᵀ F for F (N, positions, C) (``positions_first``), else F Fᵀ for F (N, C, positions),
    with the gradient written out as one product: F (D + Dᵀ) (or (D + Dᵀ) F) for the
    incoming D. Autograd through ``bmm`` takes two products, one of them into a transposed
    layout, and then adds the two: at 2048x1536 in bf16 that strided add took a third of an
    evaluation's time on an AMX CPU (1.46 s of 4.49, profiled)."""

    @staticmethod
    def forward(ctx, f, positions_first):
        ctx.save_for_backward(f)
        ctx.positions_first = positions_first
        return torch.bmm(f.transpose(1, 2), f) if positions_first else \
            torch.bmm(f, f.transpose(1, 2))

    @staticmethod
    def backward(ctx, d):
        f, = ctx.saved_tensors
        return _times_symmetric(f, d, ctx.positions_first), None


def feature_mean(features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C, H, W) -> (N, C): the mean feature vector (weighted by m², as ``gram``)."""
    f = features.float()
    if mask is None:
        return f.mean(dim=(2, 3))
    w = mask.float().pow(2)
    return (f * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3)).clamp_min(_EPS)


def relative_sq_error(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖x − target‖² / ‖target‖² (float32)."""
    x, target = x.float(), target.float()
    return (x - target).pow(2).sum() / target.pow(2).sum().clamp_min(_EPS)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative squared error between feature maps of the same shape."""
    return relative_sq_error(features, target)


def style_loss(features: torch.Tensor, target_gram: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Relative squared error between the (guided) Gram matrix of ``features`` and
    ``target_gram``."""
    return relative_sq_error(gram(features, mask), target_gram)


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m.double())
    return ((vecs * vals.clamp_min(0).sqrt()) @ vecs.transpose(-1, -2)).float()


def w2_style_loss(features: torch.Tensor, target_mean: torch.Tensor, target_cov: torch.Tensor,
                  target_cov_sqrt: torch.Tensor | None = None,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Squared 2-Wasserstein distance between Gaussian fits of the features and the target,
    ‖μ − μₜ‖² + tr Σ + tr Σₜ − 2 tr (Σₜ^½ Σ Σₜ^½)^½, relative to the target's energy
    ‖μₜ‖² + tr Σₜ. Uses the same (guided) second moments as ``gram``."""
    return w2_from_moments(feature_mean(features, mask), gram(features, mask), target_mean,
                           target_cov, target_cov_sqrt)


def w2_from_moments(mu: torch.Tensor, second: torch.Tensor, target_mean: torch.Tensor,
                    target_cov: torch.Tensor,
                    target_cov_sqrt: torch.Tensor | None = None) -> torch.Tensor:
    """``w2_style_loss`` from the features' mean ``mu`` (N, C) and second moments ``second``
    (N, C, C, the Gram matrix): the form a tiled evaluation, which sums these over tiles,
    needs."""
    cov = second - mu.unsqueeze(2) * mu.unsqueeze(1)
    if target_cov_sqrt is None:
        target_cov_sqrt = _sqrtm_psd(target_cov)
    inner = target_cov_sqrt @ cov @ target_cov_sqrt
    inner = (inner + inner.transpose(-1, -2)).double() / 2
    eig = torch.linalg.eigvalsh(inner).clamp_min(1e-12)
    tr_sqrt = eig.sqrt().sum(dim=-1).float()
    tr = lambda m: m.diagonal(dim1=-2, dim2=-1).sum(-1)
    dist = (mu - target_mean).pow(2).sum(-1) + tr(cov) + tr(target_cov) - 2 * tr_sqrt
    energy = target_mean.pow(2).sum(-1) + tr(target_cov)
    return (dist.clamp_min(0) / energy.clamp_min(_EPS)).sum()


def tv_loss(image: torch.Tensor, norm: str = "squared") -> torch.Tensor:
    """Total variation: mean over horizontal and vertical neighbour differences."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    if norm == "l1":
        return dx.abs().mean() + dy.abs().mean()
    if norm == "squared":
        return dx.pow(2).mean() + dy.pow(2).mean()
    raise ValueError(f"unknown total-variation norm {norm!r}")


def temporal_loss(image: torch.Tensor, warped_prev: torch.Tensor,
                  weight_mask: torch.Tensor) -> torch.Tensor:
    """Ruder et al.'s short-term temporal loss: the mean over pixels and channels of
    c·(x − ω)², ``warped_prev`` ω the previous stylised frame warped onto this one and
    ``weight_mask`` c (N, 1, H, W) in [0, 1], 0 where the warp is not trusted (occlusions,
    motion boundaries). In float32."""
    diff = (image.float() - warped_prev.float()).pow(2)
    return (weight_mask.float() * diff).mean()


def _normalised(weights, n):
    w = [1.0] * n if weights is None else [float(x) for x in weights]
    total = sum(w)
    return [x / total for x in w] if total > 0 else [0.0] * n


class StyleTarget:
    """The style statistics one region must match at one layer: the blended Gram matrix and
    mean of its style images (for ``w2``, also the covariance and its square root)."""

    def __init__(self, gram_: torch.Tensor, mean: torch.Tensor, stat: str, samples=None):
        self.gram, self.mean = gram_, mean
        if stat == "w2":
            self.cov = gram_ - mean.unsqueeze(2) * mean.unsqueeze(1)
            self.cov_sqrt = _sqrtm_psd(self.cov)
        if stat == "sw":     # the style's feature vectors themselves: [((C, M), blend weight)]
            from .sliced import SlicedTarget
            self.sliced = SlicedTarget(samples)

    def loss(self, features, stat, mask=None):
        if stat == "w2":
            return w2_style_loss(features, self.mean, self.cov, self.cov_sqrt, mask)
        if stat == "sw":     # as many random directions as channels, drawn at every call
            from .sliced import directions
            c = features.shape[1]
            return self.sliced.loss(features, directions(c, c, device=features.device), mask)
        return style_loss(features, self.gram, mask)

    def loss_from_stats(self, gram_, mean, stat):
        """The same loss from the output's (guided) Gram matrix and mean."""
        if stat == "w2":
            return w2_from_moments(mean, gram_, self.mean, self.cov, self.cov_sqrt)
        return relative_sq_error(gram_, self.gram)


class Region:
    """A part of the output with its own style: ``mask`` (1, 1, H, W) weights in [0, 1] at the
    output size (None: everywhere), ``styles`` its style images (empty: content only there)
    and ``blend`` their weights. ``deep_styles`` (optional): the same paintings larger, from
    which the ``deep_layers`` take their statistics (see ``Config.deep_style_scale``)."""

    def __init__(self, mask=None, styles=(), blend=None, deep_styles=None, deep_layers=()):
        self.mask, self.styles, self.blend = mask, list(styles), blend
        self.deep_styles, self.deep_layers = deep_styles, tuple(deep_layers)

    def style_sources(self, layers):
        """Per style image: its blend weight and the (image, layers) pairs from which its
        statistics at ``layers`` come (the deep layers from its larger copy, if any)."""
        out = []
        for i, b in enumerate(_normalised(self.blend, len(self.styles))):
            deep = [k for k in layers if k in self.deep_layers] if self.deep_styles else []
            parts = [(self.styles[i], [k for k in layers if k not in deep])]
            if deep:
                parts.append((self.deep_styles[i], deep))
            out.append((b, [(image, ls) for image, ls in parts if ls]))
        return out


def _moments(feats: dict) -> dict:
    """{layer: (Gram matrix, mean feature)} of a style image's features."""
    return {k: (gram(f), feature_mean(f)) for k, f in feats.items()}


_STATS = weakref.WeakKeyDictionary()   # backbone -> {(layers, image digest): statistics}
_STATS_PER_BACKBONE = 32


def style_statistics(backbone, style: torch.Tensor, layers) -> dict:
    """{layer: (Gram matrix, mean feature)} of the style image ``style`` at ``layers``.

    Remembered per backbone for the life of the process (keyed by the image's exact values), so
    the jobs of a batch or a sweep that share a painting compute its targets once per process
    (once per Ray worker) instead of once per job."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str((tuple(style.shape), style.dtype, str(style.device))).encode())
    h.update(style.detach().float().contiguous().cpu().numpy().tobytes())
    key = (tuple(layers), h.hexdigest())
    memo = _STATS.setdefault(backbone, {})
    if key not in memo:
        with torch.no_grad():
            memo[key] = _moments(backbone.features(style, list(layers)))
        while len(memo) > _STATS_PER_BACKBONE:
            memo.pop(next(iter(memo)))
    return memo[key]


class Objective:
    """content_weight·content + style_weight·style + tv_weight·tv for one backbone.

    Style targets are blended statistics: with several style images, their Gram matrices (and
    means) are mixed with the blend weights, i.e. the target is the statistic of the mixture,
    not a mix of separate losses. With regions, each region's loss uses guided Gram matrices
    (the mask downsampled to each layer) and counts with the region's share of the image, so a
    single all-covering region gives exactly the unmasked loss.

    The weights, the TV norm and the style statistic have no defaults here: they come from the
    config (``impasto.config``), the one place that defines them.

    Targets (content features, style statistics) are computed once, without autograd.
    Calling the objective returns the total loss and a 1-D tensor of the three terms
    (unweighted), so a caller can read them with a single host sync.
    """

    TERMS = ("content", "style", "tv")

    def __init__(self, backbone, *, content=None, styles=(), style_blend=None, regions=None,
                 content_layers=(), content_layer_weights=None,
                 style_layers=(), style_layer_weights=None, style_stat,
                 content_weight, style_weight, tv_weight, tv_norm,
                 temporal=None, temporal_weight=0.0):
        # video: (warped previous output, consistency weights) for ``temporal_loss``
        self.temporal = temporal if temporal is not None and temporal_weight > 0 else None
        self.temporal_weight = temporal_weight
        self.terms = self.TERMS + (("temporal",) if self.temporal is not None else ())
        if regions is None:
            regions = [Region(None, styles, style_blend)] if styles else []
        self.regions = [r for r in regions]
        has_style = any(r.styles for r in self.regions)
        self.backbone = backbone
        self.content_weight = content_weight if content is not None else 0.0
        self.style_weight = style_weight if has_style else 0.0
        self.tv_weight, self.tv_norm = tv_weight, tv_norm
        self.style_stat = style_stat
        self.content_layers = list(content_layers) if self.content_weight > 0 else []
        self.style_layers = list(style_layers) if self.style_weight > 0 else []
        self.content_w = _normalised(content_layer_weights, len(content_layers))
        self.style_w = _normalised(style_layer_weights, len(style_layers))
        self.layers = sorted(set(self.content_layers) | set(self.style_layers))
        self._masks = {}
        with torch.no_grad():
            self.content_targets = {}
            if self.content_layers:
                feats = backbone.features(content, self.content_layers)
                self.content_targets = {k: v.detach() for k, v in feats.items()}
            # per region: {layer: StyleTarget}, and the region's share of the image
            self.style_targets, self.region_w = [], []
            for region in self.regions:
                if not (self.style_layers and region.styles):
                    self.style_targets.append(None)
                    self.region_w.append(0.0)
                    continue
                grams, means, samples = {}, {}, {}
                for b, parts in region.style_sources(self.style_layers):
                    for style, layers in parts:
                        if style_stat == "sw":      # needs the features themselves
                            feats = backbone.features(style, layers)
                            stats = _moments(feats)
                            for k in layers:
                                f = feats[k].detach()
                                samples.setdefault(k, []).append((f.reshape(f.shape[1], -1), b))
                        else:
                            stats = style_statistics(backbone, style, layers)
                        for k in layers:
                            grams[k] = grams.get(k, 0) + b * stats[k][0]
                            means[k] = means.get(k, 0) + b * stats[k][1]
                self.style_targets.append({k: StyleTarget(grams[k], means[k], style_stat,
                                                          samples.get(k))
                                           for k in self.style_layers})
                self.region_w.append(1.0 if region.mask is None else float(region.mask.mean()))

    def _mask_at(self, i, layer, feats):
        key = (i, layer)
        if key not in self._masks:
            mask = self.regions[i].mask
            self._masks[key] = None if mask is None else \
                F.adaptive_avg_pool2d(mask.to(feats.device), feats.shape[-2:])
        return self._masks[key]

    def __call__(self, image: torch.Tensor):
        zero = image.new_zeros((), dtype=torch.float32)
        content = style = zero
        if self.layers:
            feats = self.backbone.features(image, self.layers)
            for name, w in zip(self.content_layers, self.content_w):
                content = content + w * content_loss(feats[name], self.content_targets[name])
            for i, targets in enumerate(self.style_targets):
                if targets is None:
                    continue
                for name, w in zip(self.style_layers, self.style_w):
                    mask = self._mask_at(i, name, feats[name])
                    layer_loss = targets[name].loss(feats[name], self.style_stat, mask)
                    style = style + (self.region_w[i] * w) * layer_loss
        tv = tv_loss(image, self.tv_norm) if self.tv_weight > 0 else zero
        total = self.content_weight * content + self.style_weight * style + self.tv_weight * tv
        if self.temporal is not None:
            temporal = temporal_loss(image, *self.temporal)
            total = total + self.temporal_weight * temporal
            return total, torch.stack([content, style, tv, temporal]).detach()
        return total, torch.stack([content, style, tv]).detach()
