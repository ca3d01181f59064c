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
   recomputed with autograd from the kept input map (or only its head, when the statistics
   pass kept its tail's masks and the maps read in it, ``compact``), and ⟨∂L/∂G, G_tile⟩ + ⟨∂L/∂μ, μ_tile⟩
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

import torch
import torch.nn.functional as F

from . import backbones
from . import compact as compact_tails
from .allocator import release_memory, tile_heap
from .errors import UserError
from .tile_geometry import cut_of, full_hw, interior, stage_tiles, stages, tiles
from .layout import zeros_as
from .losses import (StyleTarget, _normalised, self_product, self_product_grad, temporal_loss,
                     tv_loss)


# ----------------------------------------------------------------------------- the objective
class TiledObjective:
    """The same objective as ``losses.Objective`` (same arguments, same terms), evaluated in
    tiles of ``tile`` pixels, a stage of the network at a time: memory follows the tile and
    the stages' whole maps (a small fraction of the network's activations), not the image."""

    TERMS = ("content", "style", "tv")

    def __init__(self, backbone, *, tile: int, keep_from: int | None = None, compact=(),
                 early=(), content=None, regions=(), content_layers=(),
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
        # the stages from this one on keep their tiles' graphs from the statistics pass (the
        # memory plan decides, see estimate.plan_memory); the ones before it are recomputed
        self.keep_from = len(self.stages) if keep_from is None else keep_from
        # of the stages recomputed, those whose tails (after their deepest layer read) are
        # kept compact instead, so only their heads run again (see ``compact``)
        self.compact = {k for k in compact if k < min(self.keep_from, len(self.stages) - 1)}
        # of those, the ones whose tails start early (``tile_geometry.early_cut``): the maps
        # the objective reads in them are kept whole too, and their heads are (nearly) empty
        self.early = {k for k in early if k in self.compact}
        self.strides = {n: backbones.stride(model, n) for n in self.layers}
        self.cuts = [cut_of(st, set(self.layers), k in self.early)
                     for k, st in enumerate(self.stages)]
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
        """Stage by stage, up to the deepest of ``names``: ``visit(name, interior, box)`` for
        each of ``names`` on every tile (box: where the interior goes in the whole map),
        without autograd. With ``keep``, returns for every stage what its backward pass needs:
        (its input map, None) for the stages before ``keep_from``, recomputed tile by tile
        then; (the input map's shape, [(tile, input crop, features)]) for the later ones, run
        here with autograd and their graphs kept, so the backward pass does not run them
        again."""
        kept, x = [], image
        deepest = max(self.net.names.index(n) for n in names)
        for k, st in enumerate(self.stages):
            if st.start > deepest:
                break
            graph = keep and k >= self.keep_from
            last = st.stop > deepest or k + 1 == len(self.stages)
            tail = keep and not graph and not last and k in self.compact
            scale = 2 ** sum(n.startswith("pool") for n in st.names[:self.cuts[k]])
            kept.append((x.shape, [], None) if graph else
                        (x if keep else None, None,
                         compact_tails.Store(scale, x.shape[-2:]) if tail else None))
            want = [n for n in names if n in st.names] + ([] if last else [st.names[-1]])
            out = None
            for t in self._windows(k, x):
                xt = x[..., t.ty0:t.ty1, t.tx0:t.tx1]
                if graph:
                    xt = xt.detach().requires_grad_(True)
                if tail:
                    feats = self._head_and_tail(k, t, xt, want, kept[-1][2])
                else:
                    with torch.set_grad_enabled(graph):
                        feats = self.net.segment(xt, st.start, st.stop, want)
                if graph:
                    kept[-1][1].append((t, xt, feats))
                for n in names:
                    if n in st.names:
                        visit(n, *interior(feats[n].detach(), t, self.strides[n] // st.scale))
                if not last:
                    part, (fy0, fy1, fx0, fx1) = interior(feats[st.names[-1]].detach(), t,
                                                          st.geom.stride)
                    if out is None:
                        out = zeros_as(part, (*part.shape[:2],
                                              *full_hw(*x.shape[-2:], st.geom.stride)))
                    out[..., fy0:fy1, fx0:fx1] = part
            x = out
        return kept

    def _head_and_tail(self, k, t, xt, want, store):
        """Stage ``k`` on tile ``t`` without autograd: its head (up to its deepest layer the
        objective reads, or to ``early_cut``) as usual, its tail by ``compact.forward``, whose
        record of the tail's masks, pooling choices and the maps read in it goes to
        ``store``."""
        st, cut = self.stages[k], self.cuts[k]
        feats, h = self._head(k, xt, want), xt
        if cut:
            last = st.names[cut - 1]
            h = feats[last] if last in want else feats.pop(last)
        reads = [n for n in st.names[cut:] if n in self.layers]
        out, saved, read = compact_tails.forward(self.net, h, st.start + cut, st.stop, reads)
        store.put(t, saved, out)
        feats.update(read)
        feats[st.names[-1]] = out
        return feats

    def _maps(self, image, names):
        """Whole feature maps of ``names``, assembled from tile interiors (no autograd)."""
        h, w = image.shape[-2:]
        out = {}

        def visit(n, part, box):
            if n not in out:
                out[n] = zeros_as(part, (*part.shape[:2], *full_hw(h, w, self.strides[n])))
            out[n][..., box[0]:box[1], box[2]:box[3]] = part
        self._forward(image, names, visit)
        return out

    def _layer_masks(self, masks, hw):
        """Per region (None: everywhere), per style layer, the mask at that layer's size."""
        out = []
        for m in masks:
            out.append(None if m is None else {
                n: F.adaptive_avg_pool2d(m, full_hw(*hw, self.strides[n]))
                for n in self.style_layers})
        return out

    def _stats(self, image, masks, content=False, keep=False, layers=None, with_means=True):
        """Per region: the (guided) Gram matrix and mean of every style layer (or of
        ``layers``) over the whole image, summed tile by tile without autograd (the means None
        without ``with_means``); with ``content``, the content loss too (else None), and with
        ``keep``, what every stage's backward pass needs (see ``_forward``)."""
        h, w = image.shape[-2:]
        lmasks = self._layer_masks(masks, (h, w))
        sums = [{} for _ in masks]
        closs = [image.new_zeros((), dtype=torch.float32)]
        layers = self.style_layers if layers is None else layers
        names = (layers if masks else []) + (self.content_layers if content else [])

        def visit(n, f, box):
            if masks and n in layers:
                for i, lm in enumerate(lmasks):
                    g, mu = _sums(f, None if lm is None else _crop(lm[n], box), with_means)
                    acc = sums[i].setdefault(n, [0, 0])
                    acc[0], acc[1] = acc[0] + g, (acc[1] + mu) if with_means else None
            if content and n in self.content_layers:
                closs[0] = closs[0] + self._content_part(n, f, box)
        kept = self._forward(image, list(dict.fromkeys(names)), visit, keep) if names else []
        grams, means = [], []
        for i, lm in enumerate(lmasks):
            grams.append({}), means.append({})
            for n in layers:
                norm = _norm(lm and lm[n], full_hw(h, w, self.strides[n]))
                grams[i][n] = sums[i][n][0] / norm
                means[i][n] = sums[i][n][1] / norm if with_means else None
        return grams, means, (closs[0] if content else None), kept

    def _content_grad(self, n, f, box):
        """∂/∂f of ``_content_part``."""
        wl = self.content_w[self.content_layers.index(n)]
        return (2 * wl / self.content_energy[n].clamp_min(1e-12)) * (
            f.detach().float() - _crop(self.content_targets[n], box).float())

    def _content_part(self, n, f, box):
        wl = self.content_w[self.content_layers.index(n)]
        return wl * (f.float() - _crop(self.content_targets[n], box).float()).pow(2).sum() \
            / self.content_energy[n].clamp_min(1e-12)

    # ------------------------------------------------------------------ the call
    def __call__(self, image: torch.Tensor):
        x = image.detach()
        want_grad = torch.is_grad_enabled() and image.requires_grad
        zero = x.new_zeros((), dtype=torch.float32)
        with tile_heap():       # the passes' tiles from one heap, kept through the steps
            content, style, grad = self._content_and_style(x, want_grad, zero)
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

    def _content_and_style(self, x, want_grad, zero):
        """The content and style losses over the whole image and, with ``want_grad``, their
        gradient (else zeros): the statistics pass, the losses on the global statistics, the
        backward pass."""
        style, dgram, dmean = zero, [], []
        active = [i for i, t in enumerate(self.style_targets) if t is not None] \
            if self.style_layers else []
        with torch.no_grad():
            grams, means, content, kept = self._stats(
                x, [self.masks[i] for i in active], content=bool(self.content_layers),
                keep=want_grad, with_means=self.style_stat == "w2")   # gram: no mean
        content = zero if content is None else content
        for k, i in enumerate(active):
            g = {n: v.detach().requires_grad_(want_grad) for n, v in grams[k].items()}
            m = {n: v if v is None else v.detach().requires_grad_(want_grad)
                 for n, v in means[k].items()}
            with torch.set_grad_enabled(want_grad):
                part = sum(wl * self.style_targets[i][n].loss_from_stats(g[n], m[n],
                                                                         self.style_stat)
                           for n, wl in zip(self.style_layers, self.style_w))
                part = self.region_w[i] * part
            if want_grad:
                part.backward()
                dgram.append({n: g[n].grad for n in g})
                dmean.append({n: None if m[n] is None else m[n].grad for n in m})
            style = style + part.detach()
        grad = self._backward(x, kept, active, dgram, dmean) if want_grad and kept \
            else torch.zeros_like(x)
        return content, style, grad

    def _backward(self, x, kept, active, dgram, dmean):
        """The gradient of content and style with respect to every pixel: the stages from the
        deepest back, tile by tile, each tile's graph either kept from the statistics pass or
        recomputed with autograd from its stage's kept input map, back-propagating
        ⟨∂L/∂G, G_tile⟩ + ⟨∂L/∂μ, μ_tile⟩ + the tile's content loss + the gradient its output
        received from the stage after it."""
        hw = x.shape[-2:]
        lmasks = self._layer_masks([self.masks[i] for i in active], hw)
        g_out = None
        for k in reversed(range(len(kept))):
            st, (src, graphs, tails) = self.stages[k], kept[k]
            want = [n for n in self.layers if n in st.names]
            if g_out is not None and st.names[-1] not in want:
                want.append(st.names[-1])
            shape = src if graphs is not None else src.shape
            g_in = None     # made at the first tile, in the layout of its gradient
            todo = graphs if graphs is not None else [(t, None, None)
                                                      for t in self._windows(k, src)]
            while todo:      # popped, so that a kept tile's graph is freed once it is used
                t, xt, feats = todo.pop()
                g_head = None   # a compact tail's gradient at the head's output
                if xt is None:
                    xt = src[..., t.ty0:t.ty1, t.tx0:t.tx1].detach().clone().requires_grad_(True)
                    if tails is not None:
                        def read_grad(n, f, g, t=t, step=st.scale):
                            # added into the interior of g in place (its margin gets none)
                            part, box = interior(f, t, self.strides[n] // step)
                            d = self._layer_grad(n, part, box, lmasks, dgram, dmean, hw)
                            if torch.is_tensor(d):
                                interior(g, t, self.strides[n] // step)[0].add_(d)
                            return g
                        g_head, feats = self._tail_backward(k, t, xt, tails.take(t), g_out,
                                                            want, read_grad)
                    else:
                        feats = self.net.segment(xt, st.start, st.stop, want)
                outs, grads = [], []    # each wanted map's interior and its gradient
                for n in want:
                    if n not in feats:      # not asked for in the statistics pass
                        continue
                    step = self.strides[n] // st.scale if n in self.strides else st.geom.stride
                    f, box = interior(feats[n], t, step)
                    g = self._layer_grad(n, f, box, lmasks, dgram, dmean, hw)
                    if g_out is not None and n == st.names[-1]:
                        g = g + _crop(g_out, box)
                    if torch.is_tensor(g):
                        outs.append(feats[n])
                        grads.append(_spread(feats[n], t, step, g))
                cut = self.cuts[k]
                if g_head is not None and cut:     # into the head's last map
                    n = st.names[cut - 1]
                    i = next((i for i, o in enumerate(outs) if o is feats[n]), None)
                    if i is None:
                        outs.append(feats[n])
                        grads.append(g_head)
                    else:
                        grads[i] = grads[i] + g_head
                g_tile = g_head if g_head is not None and not cut else None
                if outs:
                    torch.autograd.backward(outs, grads)
                    g_tile = xt.grad if g_tile is None else g_tile + xt.grad
                if g_tile is not None:
                    if g_in is None:
                        g_in = zeros_as(g_tile, shape, torch.float32)
                    g_in[..., t.ty0:t.ty1, t.tx0:t.tx1] += g_tile
                del feats, xt
            g_out = g_in if g_in is not None else torch.zeros(shape, device=x.device)
            kept[k] = None
        return g_out

    def _layer_grad(self, n, f, box, lmasks, dgram, dmean, hw):
        """The content and style terms' gradient at layer ``n``'s interior map ``f`` (0.0
        where ``n`` is in neither)."""
        g = 0.0
        if n in self.content_layers:
            g = g + self.content_weight * self._content_grad(n, f, box)
        if n in self.style_layers:
            g = g + self._style_grad(n, f, box, lmasks, dgram, dmean, hw)
        return g

    def _tail_backward(self, k, t, xt, record, g_out, want, read_grad):
        """For a tile of stage ``k`` whose tail was kept compact: the gradient at its head's
        output (at its input ``xt`` when the head is empty) from the gradient the stage's
        output received and the loss at the maps read in the tail (``read_grad``), and the
        head recomputed with autograd."""
        st = self.stages[k]
        saved, shape, dtype = record
        g = torch.zeros(shape, dtype=dtype, device=xt.device)
        if getattr(self.net, "channels_last", False):
            g = g.contiguous(memory_format=torch.channels_last)
        if g_out is not None:
            part, box = interior(g, t, st.geom.stride)
            part.copy_(_crop(g_out, box))
        return compact_tails.backward(g, saved, read_grad), self._head(k, xt, want)

    def _head(self, k, xt, want):
        """Stage ``k``'s head (its layers up to the tail, see ``compact``) on ``xt``: the
        maps of ``want`` in it and of its last layer; {} when the head is empty."""
        st, cut = self.stages[k], self.cuts[k]
        if not cut:
            return {}
        head = [n for n in want if n in st.names[:cut]]
        return self.net.segment(xt, st.start, st.start + cut, head + [st.names[cut - 1]])

    def _style_grad(self, n, f, box, lmasks, dgram, dmean, hw):
        """∂/∂f of Σ_regions style_weight (⟨∂L/∂G, G_tile⟩ + ⟨∂L/∂μ, μ_tile⟩) / norm, written
        out: G_tile = Σ (m f)(m f)ᵀ gives m ⊙ (D + Dᵀ)(m f), μ_tile = Σ m² f gives m² ∂L/∂μ.
        One matrix product per region, where autograd through the Gram matrix takes three."""
        out, x = None, f.detach()    # in the map's dtype, as the statistics were (_sums)
        for k, lm in enumerate(lmasks):
            m = None if lm is None else _crop(lm[n], box).to(x.dtype)
            # the weight scales the C x C matrices, not the map: two passes over it fewer
            scale = self.style_weight / _norm(lm and lm[n], full_hw(*hw, self.strides[n]))
            g = self_product_grad(x if m is None else x * m, dgram[k][n] * scale)
            if m is not None:
                g = g * m
            if dmean[k][n] is not None:     # w2: the mean counts too
                g = g + (dmean[k][n][..., None, None] * scale * (1.0 if m is None else m * m)
                         ).to(x.dtype)
            out = g if out is None else out + g
        return 0.0 if out is None else out


# ----------------------------------------------------------------------------- helpers
def _spread(f, tile, step, g):
    """The gradient ``g`` of ``f``'s interior as a gradient of the whole tile map ``f`` (zero
    in its margin), in ``f``'s dtype and layout: autograd's slice backward would build it in
    the contiguous layout, and every later op would then mix layouts."""
    full = torch.zeros_like(f)
    interior(full, tile, step)[0].copy_(g)
    return full


def _crop(t, box):
    fy0, fy1, fx0, fx1 = box
    return t[..., fy0:fy1, fx0:fx1]


def _sums(f, mask, with_mean=True):
    """Σ m² f fᵀ (N, C, C) and Σ m² f (N, C) over the positions of ``f``, returned in float32
    (the second None without ``with_mean``: the Gram loss does not read it, and summing a
    bf16 map in float32 converts it whole first, 1.5% of a tiled 2048 px evaluation).
    The product runs in the map's own dtype, as ``losses.gram`` does (``self_product``; only
    each tile's matrix is rounded): casting a tile's maps to float32 first made the products
    2.5x slower on an AMX CPU, plus the copies."""
    m = None if mask is None else mask.to(f.dtype)
    if m is not None:
        f = f * m
    g = self_product(f).float()
    if not with_mean:
        return g, None
    if m is not None:
        f = f * m           # m² f for the mean
    return g, f.sum(dim=(2, 3), dtype=torch.float32)


def _norm(layer_mask, hw):
    """What the sums are divided by: the number of positions, times the mean of m²."""
    count = float(hw[0] * hw[1])
    if layer_mask is None:
        return count
    return layer_mask.float().pow(2).sum().clamp_min(1e-12)
