"""The objective evaluated tile by tile, exactly: print sizes in bounded memory.

Independent tiles would each match the style on their own (seams, colour shifts). Here the
loss is the untiled one, up to floating-point error:

1. A first pass, without autograd, sums each style layer's statistics over the whole image:
   Σ m² f fᵀ and Σ m² f (the Gram matrix and the mean, region masks included), and the
   content loss. The network runs in stages (cut after pool2, pool3 and pool4): each stage
   runs tile by tile over the whole map the stage before it left, each tile with a margin
   that holds the receptive field of its interior within the stage and starting at a
   multiple of the stage's stride, so the interior's features are exactly those of the
   whole image. A stage needs 8 px of context (conv1_1 to pool2) or 4 px of its input map
   (the later blocks), where the whole network in one piece needs 80 px for relu5_1; the
   maps between stages are small (pool2's has an eighth of the values of the first block's).
2. The style loss and its gradient with respect to those global statistics are computed on
   the small matrices (C x C per layer).
3. A backward pass goes through the stages from the deepest: each tile of a stage is
   recomputed with autograd from the kept input map, and ⟨∂L/∂G, G_tile⟩ + ⟨∂L/∂μ, μ_tile⟩
   + the tile's share of the content loss + the gradient the stage's output received from
   the stage after it are back-propagated into the input map: by linearity the sum over
   tiles is the gradient of the global loss. TV and the temporal term are computed on the
   whole image, which is cheap.

The returned loss is a stand-in whose value is the loss and whose gradient, when the
optimiser calls ``backward()``, is the gradient computed above, so the optimisation loop does
not know the difference. The VGG backbones are supported (their receptive fields and strides
are worked out from the layer table).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import backbones
from .allocator import release_memory
from .errors import UserError
from .losses import (StyleTarget, _normalised, relative_sq_error, temporal_loss, tv_loss)


# ----------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Geometry:
    stride: int    # total stride of the chain: tiles start at multiples of it
    margin: int    # context on each side (a multiple of the stride) that makes interiors exact


@dataclass(frozen=True)
class Stage:
    """A piece of the network, run tile by tile on the whole map its previous stage left."""
    start: int         # the layers names[start:stop] of the network
    stop: int
    names: tuple
    scale: int         # the stride of the stage's input map against the image
    geom: Geometry     # in the input map's pixels
    channels: tuple    # the channels of each layer's output
    cin: int           # the channels of the stage's input map


def _reach(chain) -> Geometry:
    """The stride and margin of a chain of 3x3 convolutions (padding 1) and 2x2 poolings: the
    input pixels a feature of its last layer depends on, traced back through every layer."""
    lo = hi = 0          # a feature q depends on inputs [stride*q - lo, stride*q + hi]
    stride = 2 ** sum(n.startswith("pool") for n in chain)
    for name in reversed(chain):
        if name.startswith("conv"):
            lo, hi = lo + 1, hi + 1
        elif name.startswith("pool"):
            lo, hi = 2 * lo, 2 * hi + 1
    # the interior's last feature sits at stride*(q_end - 1): it needs hi - stride + 1 pixels
    # past the interior's end, and the first needs lo before its start
    margin = -(-max(lo, hi - stride + 1) // stride) * stride
    return Geometry(stride, margin)


def _chain(model, layers):
    m = backbones.spec(model)
    if not m.is_vgg:
        raise UserError(f"option --tile/--max-memory: tiled evaluation supports the VGG models "
                        f"only, not {model}; use a smaller --size")
    names = backbones.layers(model)
    return names[: names.index(backbones.deepest(model, layers)) + 1]


def stages(model: str, layers) -> list[Stage]:
    """The network up to the deepest of ``layers``, cut after pool2, pool3 and pool4.

    Each stage needs context only for its own layers (8 px of the image for conv1_1 to pool2,
    4 px of its input map for the blocks after), where the whole network in one piece needs
    80 px for relu5_1: the stages' outputs are kept as whole maps (pool2's holds an eighth of
    the values of the first block's), and the margins' recomputation nearly vanishes."""
    chain = _chain(model, layers)
    cuts = [i + 1 for i, n in enumerate(chain)
            if n.startswith("pool") and int(n[4]) >= 2 and i + 1 < len(chain)]
    out, scale, ch = [], 1, 3
    for a, b in zip([0] + cuts, cuts + [len(chain)]):
        sub = tuple(chain[a:b])
        chans, cin = [], ch
        for n in sub:
            if n.startswith("conv"):
                ch = backbones.vgg.channels(n)
            chans.append(ch)
        out.append(Stage(a, b, sub, scale, _reach(sub), tuple(chans), cin))
        scale *= 2 ** sum(n.startswith("pool") for n in sub)
    return out


def _elements(stage: Stage, side: int) -> float:
    """The activations of ``stage`` on a square window of ``side`` input-map pixels."""
    total, s = 0.0, 1
    for n, c in zip(stage.names, stage.channels):
        s *= 2 if n.startswith("pool") else 1
        total += c * (side // s) ** 2
    return total


def stage_tiles(stages_: list[Stage], tile: int) -> list[int]:
    """Each stage's tile (in its input map's pixels): ``tile`` for the first; for the later
    ones the largest whose activations are no more than the first stage's, so a tile of any
    stage fits where the first one does."""
    first = stages_[0]
    cap = _elements(first, tile + 2 * first.geom.margin)
    out = [tile]
    for st in stages_[1:]:
        g, t = st.geom, st.geom.stride
        while _elements(st, t + g.stride + 2 * g.margin) <= cap:
            t += g.stride
        out.append(t)
    return out


def work_factor(model: str, layers, hw, tile: int) -> float:
    """How much more a tiled step computes than an untiled one: each stage's windows (interior
    and margins) against its map, weighted by its share of the convolutions, and a forward
    pass more for the global statistics (forward : backward is about 1 : 2, so 4/3)."""
    sts = stages(model, layers)
    done = total = 0.0
    for st, t in zip(sts, stage_tiles(sts, tile)):
        h, w = _full_hw(*hw, st.scale)
        flops, s, cin = 0.0, 1, st.cin
        for n, c in zip(st.names, st.channels):
            s *= 2 if n.startswith("pool") else 1
            if n.startswith("conv"):
                flops += cin * c / s ** 2
            cin = c
        windows = sum((u.ty1 - u.ty0) * (u.tx1 - u.tx0) for u in tiles(h, w, t, st.geom))
        done += flops * windows
        total += flops * h * w
    return done / max(total, 1e-9) * 4 / 3


def kept_elements(model: str, layers, hw) -> float:
    """The whole maps a staged evaluation keeps: every stage's input map after the first, and
    at the worst moment of the backward pass the gradients of two neighbouring ones."""
    sts = stages(model, layers)
    maps = [st.cin * math.prod(_full_hw(*hw, st.scale)) for st in sts]
    pairs = [maps[k] + (maps[k + 1] if k + 1 < len(maps) else 0) for k in range(1, len(maps))]
    return sum(maps[1:]) + max(pairs, default=0)


@dataclass(frozen=True)
class Tile:
    y0: int    # interior, in image pixels
    y1: int
    x0: int
    x1: int
    ty0: int   # the computed window: the interior and its margins, clipped to the image
    ty1: int
    tx0: int
    tx1: int

    def at(self, s: int):
        """At a layer of stride ``s``: the interior's rows and columns in the whole map, and
        where they start in this tile's map. (The whole map of an H-row image has H // s rows,
        pooling floors at every step, so the last tile's interior ends at H // s too.)"""
        return ((self.y0 // s, self.y1 // s), (self.x0 // s, self.x1 // s),
                ((self.y0 - self.ty0) // s, (self.x0 - self.tx0) // s))


def tiles(h: int, w: int, tile: int, geom: Geometry) -> list[Tile]:
    """Interiors of ``tile`` pixels (rounded to the stride) covering the image; the last row
    and column take the remainder."""
    t = max(geom.stride, tile // geom.stride * geom.stride)
    out = []
    for y0 in range(0, h, t):
        y1 = h if y0 + t >= h else y0 + t
        for x0 in range(0, w, t):
            x1 = w if x0 + t >= w else x0 + t
            out.append(Tile(y0, y1, x0, x1, max(0, y0 - geom.margin), min(h, y1 + geom.margin),
                            max(0, x0 - geom.margin), min(w, x1 + geom.margin)))
    return out


def _full_hw(h, w, s):
    """The size of a stride-``s`` map of an h x w image (floor at every 2x2 pooling)."""
    while s > 1:
        h, w, s = h // 2, w // 2, s // 2
    return h, w


def _interior(feat, tile, s):
    """The part of a tile's feature map that belongs to its interior, and where it goes in
    the whole map."""
    (fy0, fy1), (fx0, fx1), (oy, ox) = tile.at(s)
    return feat[..., oy:oy + fy1 - fy0, ox:ox + fx1 - fx0], (fy0, fy1, fx0, fx1)


# ----------------------------------------------------------------------------- the objective
class TiledObjective:
    """The same objective as ``losses.Objective`` (same arguments, same terms), evaluated in
    tiles of ``tile`` pixels, a stage of the network at a time: memory follows the tile and
    the stages' whole maps (a small fraction of the network's activations), not the image."""

    TERMS = ("content", "style", "tv")

    def __init__(self, backbone, *, tile: int, content=None, regions=(), content_layers=(),
                 content_layer_weights=None, style_layers=(), style_layer_weights=None,
                 style_stat, content_weight, style_weight, tv_weight, tv_norm,
                 temporal=None, temporal_weight=0.0):
        if style_stat == "sw":
            raise UserError("option --style-loss: sw sorts every position of a layer at once, so "
                            "it cannot be evaluated in tiles; use gram or w2 with --tile or "
                            "--max-memory, or a smaller --size")
        self.net, self.tile = backbone, tile
        self.temporal = temporal if temporal is not None and temporal_weight > 0 else None
        self.temporal_weight = temporal_weight
        self.terms = self.TERMS + (("temporal",) if self.temporal is not None else ())
        self.regions = list(regions)
        has_style = any(r.styles for r in self.regions)
        self.content_weight = content_weight if content is not None else 0.0
        self.style_weight = style_weight if has_style else 0.0
        self.tv_weight, self.tv_norm, self.style_stat = tv_weight, tv_norm, style_stat
        self.content_layers = list(content_layers) if self.content_weight > 0 else []
        self.style_layers = list(style_layers) if self.style_weight > 0 else []
        self.content_w = _normalised(content_layer_weights, len(content_layers))
        self.style_w = _normalised(style_layer_weights, len(style_layers))
        self.layers = sorted(set(self.content_layers) | set(self.style_layers))
        model = getattr(backbone, "model", "vgg19")
        self.stages = stages(model, self.layers) if self.layers else []
        self.stage_tiles = stage_tiles(self.stages, tile) if self.stages else []
        self.strides = {n: backbones.stride(model, n) for n in self.layers}
        with torch.no_grad():
            self.content_targets = {}
            if self.content_layers:
                self.content_targets = self._maps(content, self.content_layers)
                self.content_energy = {k: v.float().pow(2).sum() for k, v in
                                       self.content_targets.items()}
            self.style_targets, self.region_w, self.masks = [], [], []
            for region in self.regions:
                if not (self.style_layers and region.styles):
                    self.style_targets.append(None)
                    self.region_w.append(0.0)
                    self.masks.append(None)
                    continue
                grams, means = {}, {}
                for b, parts in region.style_sources(self.style_layers):
                    for style, layers in parts:
                        g, m = self._stats(style, [None], layers=layers)[:2]
                        for k in layers:
                            grams[k] = grams.get(k, 0) + b * g[0][k]
                            means[k] = means.get(k, 0) + b * m[0][k]
                self.style_targets.append({k: StyleTarget(grams[k], means[k], style_stat)
                                           for k in self.style_layers})
                self.region_w.append(1.0 if region.mask is None else float(region.mask.mean()))
                self.masks.append(region.mask)
        release_memory()

    # ------------------------------------------------------------------ passes over tiles
    def _windows(self, k, x):      # the tiles of stage k over its input map x
        return tiles(*x.shape[-2:], self.stage_tiles[k], self.stages[k].geom)

    def _forward(self, image, names, visit, keep=False):
        """Stage by stage without autograd, up to the deepest of ``names``: ``visit(name,
        interior, box)`` for each of ``names`` on every tile (box: where the interior goes in
        the whole map). Returns every stage's input map when ``keep``."""
        inputs, x = [], image
        deepest = max(self.net.names.index(n) for n in names)
        for k, st in enumerate(self.stages):
            if st.start > deepest:
                break
            inputs.append(x if keep else None)
            last = st.stop > deepest or k + 1 == len(self.stages)
            want = [n for n in names if n in st.names] + ([] if last else [st.names[-1]])
            out = None
            for t in self._windows(k, x):
                feats = self.net.segment(x[..., t.ty0:t.ty1, t.tx0:t.tx1], st.start, st.stop,
                                         want)
                for n in names:
                    if n in st.names:
                        visit(n, *_interior(feats[n], t, self.strides[n] // st.scale))
                if not last:
                    part, (fy0, fy1, fx0, fx1) = _interior(feats[st.names[-1]], t,
                                                           st.geom.stride)
                    if out is None:
                        out = part.new_zeros((*part.shape[:2],
                                              *_full_hw(*x.shape[-2:], st.geom.stride)))
                    out[..., fy0:fy1, fx0:fx1] = part
            x = out
        return inputs

    def _maps(self, image, names):
        """Whole feature maps of ``names``, assembled from tile interiors (no autograd)."""
        h, w = image.shape[-2:]
        out = {}

        def visit(n, part, box):
            if n not in out:
                out[n] = part.new_zeros((*part.shape[:2], *_full_hw(h, w, self.strides[n])))
            out[n][..., box[0]:box[1], box[2]:box[3]] = part
        self._forward(image, names, visit)
        return out

    def _layer_masks(self, masks, hw):
        """Per region (None: everywhere), per style layer, the mask at that layer's size."""
        out = []
        for m in masks:
            out.append(None if m is None else {
                n: F.adaptive_avg_pool2d(m, _full_hw(*hw, self.strides[n]))
                for n in self.style_layers})
        return out

    def _stats(self, image, masks, content=False, keep=False, layers=None):
        """Per region: the (guided) Gram matrix and mean of every style layer (or of
        ``layers``) over the whole image, summed tile by tile without autograd; with
        ``content``, the content loss too (else None), and with ``keep``, every stage's input
        map for the backward pass."""
        h, w = image.shape[-2:]
        lmasks = self._layer_masks(masks, (h, w))
        sums = [{} for _ in masks]
        closs = [image.new_zeros((), dtype=torch.float32)]
        layers = self.style_layers if layers is None else layers
        names = (layers if masks else []) + (self.content_layers if content else [])

        def visit(n, f, box):
            if masks and n in layers:
                for i, lm in enumerate(lmasks):
                    g, mu = _sums(f, None if lm is None else _crop(lm[n], box))
                    acc = sums[i].setdefault(n, [0, 0])
                    acc[0], acc[1] = acc[0] + g, acc[1] + mu
            if content and n in self.content_layers:
                closs[0] = closs[0] + self._content_part(n, f, box)
        inputs = self._forward(image, list(dict.fromkeys(names)), visit, keep) if names else []
        grams, means = [], []
        for i, lm in enumerate(lmasks):
            grams.append({}), means.append({})
            for n in layers:
                norm = _norm(lm and lm[n], _full_hw(h, w, self.strides[n]))
                grams[i][n] = sums[i][n][0] / norm
                means[i][n] = sums[i][n][1] / norm
        return grams, means, (closs[0] if content else None), inputs

    def _content_part(self, n, f, box):
        wl = self.content_w[self.content_layers.index(n)]
        return wl * (f.float() - _crop(self.content_targets[n], box).float()).pow(2).sum() \
            / self.content_energy[n].clamp_min(1e-12)

    # ------------------------------------------------------------------ the call
    def __call__(self, image: torch.Tensor):
        x = image.detach()
        want_grad = torch.is_grad_enabled() and image.requires_grad
        zero = x.new_zeros((), dtype=torch.float32)
        style, dgram, dmean = zero, [], []
        active = [i for i, t in enumerate(self.style_targets) if t is not None] \
            if self.style_layers else []
        with torch.no_grad():
            grams, means, content, inputs = self._stats(
                x, [self.masks[i] for i in active], content=bool(self.content_layers),
                keep=want_grad)
        content = zero if content is None else content
        for k, i in enumerate(active):
            g = {n: v.detach().requires_grad_(want_grad) for n, v in grams[k].items()}
            m = {n: v.detach().requires_grad_(want_grad) for n, v in means[k].items()}
            with torch.set_grad_enabled(want_grad):
                part = sum(wl * self.style_targets[i][n].loss_from_stats(g[n], m[n],
                                                                         self.style_stat)
                           for n, wl in zip(self.style_layers, self.style_w))
                part = self.region_w[i] * part
            if want_grad:
                part.backward()
                dgram.append({n: g[n].grad for n in g})
                dmean.append({n: m[n].grad for n in m})
            style = style + part.detach()
        grad = self._backward(x, inputs, active, dgram, dmean) if want_grad and inputs \
            else torch.zeros_like(x)
        with torch.set_grad_enabled(want_grad):
            xi = x.clone().requires_grad_(want_grad)
            tv = tv_loss(xi, self.tv_norm) if self.tv_weight > 0 else zero
            local = self.tv_weight * tv
            temporal = None
            if self.temporal is not None:
                temporal = temporal_loss(xi, *self.temporal)
                local = local + self.temporal_weight * temporal
            if want_grad and local.requires_grad:
                local.backward()
                grad = grad + xi.grad
        total = (self.content_weight * content + self.style_weight * style + local.detach())
        values = [content, style, tv.detach()] + ([temporal.detach()] if temporal is not None
                                                  else [])
        terms = torch.stack([v.float() for v in values])
        if want_grad:   # value: the loss; gradient: the one computed above
            total = total + (image * grad).sum() - (image.detach() * grad).sum()
        release_memory()
        return total, terms

    def _backward(self, x, inputs, active, dgram, dmean):
        """The gradient of content and style with respect to every pixel: the stages from the
        deepest back, each recomputed tile by tile with autograd from its kept input map and
        back-propagating ⟨∂L/∂G, G_tile⟩ + ⟨∂L/∂μ, μ_tile⟩ + the tile's content loss + the
        gradient its output received from the stage after it."""
        h, w = x.shape[-2:]
        lmasks = self._layer_masks([self.masks[i] for i in active], (h, w))
        g_out = None
        for k in reversed(range(len(inputs))):
            st, src = self.stages[k], inputs[k]
            want = [n for n in self.layers if n in st.names]
            if g_out is not None and st.names[-1] not in want:
                want.append(st.names[-1])
            g_in = torch.zeros(src.shape, dtype=torch.float32, device=src.device)
            for t in self._windows(k, src):
                xt = src[..., t.ty0:t.ty1, t.tx0:t.tx1].detach().clone().requires_grad_(True)
                feats = self.net.segment(xt, st.start, st.stop, want)
                surrogate = xt.new_zeros((), dtype=torch.float32)
                for n in want:
                    f, box = _interior(feats[n], t, self.strides[n] // st.scale
                                       if n in self.strides else st.geom.stride)
                    if n in self.content_layers:
                        surrogate = surrogate + self.content_weight * self._content_part(n, f,
                                                                                         box)
                    if n in self.style_layers:
                        surrogate = surrogate + self._style_part(n, f, box, lmasks, dgram,
                                                                 dmean, (h, w))
                    if g_out is not None and n == st.names[-1]:
                        surrogate = surrogate + (_crop(g_out, box) * f.float()).sum()
                if surrogate.requires_grad:
                    surrogate.backward()
                    g_in[..., t.ty0:t.ty1, t.tx0:t.tx1] += xt.grad.float()
            g_out = g_in
            inputs[k] = None
        return g_out

    def _style_part(self, n, f, box, lmasks, dgram, dmean, hw):
        out = 0.0
        for k, lm in enumerate(lmasks):
            g, mu = _sums(f, None if lm is None else _crop(lm[n], box))
            norm = _norm(lm and lm[n], _full_hw(*hw, self.strides[n]))
            inner = (dgram[k][n] * g).sum()
            if dmean[k][n] is not None:     # w2: the mean counts too
                inner = inner + (dmean[k][n] * mu).sum()
            out = out + self.style_weight * inner / norm
        return out


# ----------------------------------------------------------------------------- helpers
def _crop(t, box):
    fy0, fy1, fx0, fx1 = box
    return t[..., fy0:fy1, fx0:fx1]


def _sums(f, mask):
    """Σ m² f fᵀ (N, C, C) and Σ m² f (N, C) over the positions of ``f``, in float32."""
    n, c = f.shape[:2]
    f = f.float()
    if mask is not None:
        f = f * mask.float()
    flat = f.reshape(n, c, -1)
    g = torch.bmm(flat, flat.transpose(1, 2))
    if mask is None:
        return g, flat.sum(-1)
    return g, (f * mask.float()).reshape(n, c, -1).sum(-1)


def _norm(layer_mask, hw):
    """What the sums are divided by: the number of positions, times the mean of m²."""
    count = float(hw[0] * hw[1])
    if layer_mask is None:
        return count
    return layer_mask.float().pow(2).sum().clamp_min(1e-12)
