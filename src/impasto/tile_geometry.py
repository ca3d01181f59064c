"""Where the tiles of a staged, tiled evaluation lie (see ``tiled``): the network cut into
stages after pool2, pool3 and pool4, each stage's stride and margin, its tiles over its input
map, and what a tiled step computes and keeps against an untiled one (kept graphs, compact
tails).

Pure geometry and arithmetic on the layer table: no tensors but the crops of ``interior``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from . import backbones
from .errors import UserError

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


def reach(chain) -> Geometry:
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


def layer_chain(model, layers):
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
    chain = layer_chain(model, layers)
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
        out.append(Stage(a, b, sub, scale, reach(sub), tuple(chans), cin))
        scale *= 2 ** sum(n.startswith("pool") for n in sub)
    return out


def elements(stage: Stage, side: int, width: int | None = None) -> float:
    """The activations of ``stage`` on a window of ``side`` x ``width`` input-map pixels
    (square without ``width``)."""
    width = side if width is None else width
    total, s = 0.0, 1
    for n, c in zip(stage.names, stage.channels):
        s *= 2 if n.startswith("pool") else 1
        total += c * (side // s) * (width // s)
    return total


def stage_tiles(stages_: list[Stage], tile: int) -> list[int]:
    """Each stage's tile (in its input map's pixels): ``tile`` for the first; for the later
    ones the largest whose activations are no more than the first stage's, so a tile of any
    stage fits where the first one does."""
    first = stages_[0]
    cap = elements(first, tile + 2 * first.geom.margin)
    out = [tile]
    for st in stages_[1:]:
        g, t = st.geom, st.geom.stride
        while elements(st, t + g.stride + 2 * g.margin) <= cap:
            t += g.stride
        out.append(t)
    return out


def _conv_work(st: Stage, lo: int = 0, hi: int | None = None) -> float:
    """The convolution multiply-adds per pixel of the stage's input map of its layers
    ``names[lo:hi]`` (all of them by default)."""
    flops, s, cin = 0.0, 1, st.cin
    for i, (n, c) in enumerate(zip(st.names, st.channels)):
        s *= 2 if n.startswith("pool") else 1
        if n.startswith("conv") and lo <= i < (len(st.names) if hi is None else hi):
            flops += cin * c / s ** 2
        cin = c
    return flops


def split(names, wanted) -> int:
    """Where a stage's tail starts (see ``compact``): after the deepest of ``wanted`` among
    its ``names`` (0, the whole stage, when it has none of them)."""
    return max((i for i, n in enumerate(names) if n in wanted), default=-1) + 1


def early_cut(st: Stage) -> int:
    """Where a stage's tail starts when the maps the objective reads in it are kept whole
    (``compact``'s "early" tails): at the stage's start, so that its backward pass recomputes
    nothing; after its first convolution and ReLU where that convolution reads the image
    (conv1_1: 3 input channels, 2% of the first stage's multiply-adds, but the largest map of
    the network: relu1_1 would cost 64 values a pixel kept, recomputing it nearly nothing)."""
    if st.cin <= 3 and st.names[0].startswith("conv"):
        return 2 if len(st.names) > 1 and st.names[1].startswith("relu") else 1
    return 0


def early_gain(st: Stage, wanted) -> float:
    """What starting a stage's tail early buys per value it costs: the multiply-adds of the
    head it no longer recomputes, per value of the layer outputs its tail then passes over in
    addition (their masks, codes and the maps read kept, each an elementwise pass in both
    passes). Default layers: block 4's early tail 1152, block 3's 384, the first stage's 230."""
    lo, hi = early_cut(st), split(st.names, wanted)
    values, s = 0.0, 1
    for i, (n, c) in enumerate(zip(st.names, st.channels)):
        s *= 2 if n.startswith("pool") else 1
        if i >= lo:
            values += c / s ** 2 * ((i < hi) + (n in wanted))
    return 9 * _conv_work(st, lo, hi) / max(values, 1e-9)


def cut_of(st: Stage, wanted, early: bool) -> int:
    """A compact stage's tail start: ``early_cut`` or ``split``."""
    return early_cut(st) if early else split(st.names, wanted)


def tail_bytes(st: Stage, cut: int, side: int, width: int, wanted=(), value: float = 2.0
               ) -> float:
    """What stage ``st``'s tail (its layers from ``cut`` on) keeps compact for a window of
    ``side`` x ``width`` input-map pixels: a bit per ReLU output, a byte per max pooling
    output, and ``value`` bytes per value of the maps of ``wanted`` in it (the layers the
    objective reads, kept whole when the tail starts before them)."""
    total, s = 0.0, 1
    for i, (n, c) in enumerate(zip(st.names, st.channels)):
        s *= 2 if n.startswith("pool") else 1
        if i < cut:
            continue
        if n.startswith("pool"):
            total += c * (side // s) * (width // s)
        elif n.startswith("relu"):
            total += c * (side // s) * (width // s) / 8
        if n in wanted:
            total += value * c * (side // s) * (width // s)
    return total


def compact_bytes(model: str, layers, hw, tile: int, stages_: tuple, early=(),
                  value: float = 2.0) -> float:
    """What the tails of ``stages_`` keep compact over all their tiles' windows (those of
    ``early`` from ``early_cut``, with the maps they read in ``value`` bytes)."""
    sts = stages(model, layers)
    total, wanted = 0.0, set(layers)
    for k, (st, (_, ts)) in enumerate(zip(sts, _stage_windows(sts, hw, tile))):
        if k in stages_:
            cut = cut_of(st, wanted, k in early)
            total += sum(tail_bytes(st, cut, u.ty1 - u.ty0, u.tx1 - u.tx0, wanted, value)
                         for u in ts)
    return total


def _stage_windows(sts, hw, tile):
    """Per stage: its whole map's size and its tiles over it."""
    out = []
    for st, t in zip(sts, stage_tiles(sts, tile)):
        h, w = full_hw(*hw, st.scale)
        out.append(((h, w), tiles(h, w, t, st.geom)))
    return out


def work_factor(model: str, layers, hw, tile: int, keep_from: int | None = None,
                compact=(), early=()) -> float:
    """How much more a tiled step computes than an untiled one: each stage's windows (interior
    and margins) against its map, weighted by its share of the convolutions, and a forward
    pass more for the global statistics in the stages whose graphs are not kept from it
    (those before ``keep_from``; forward : backward is about 1 : 2, so 4/3 there), only in
    their heads for the stages in ``compact`` (their tails are kept compact; the heads of
    those in ``early`` end at ``early_cut``)."""
    sts = stages(model, layers)
    keep_from = len(sts) if keep_from is None else keep_from
    done = total = 0.0
    for k, (st, ((h, w), ts)) in enumerate(zip(sts, _stage_windows(sts, hw, tile))):
        windows = sum((u.ty1 - u.ty0) * (u.tx1 - u.tx0) for u in ts)
        cut = cut_of(st, set(layers), k in early) if k in compact else len(st.names)
        extra = _conv_work(st, 0, cut) / 3 if k < keep_from else 0.0
        done += (_conv_work(st) + extra) * windows
        total += _conv_work(st) * h * w
    return done / max(total, 1e-9)


def graph_elements(model: str, layers, hw, tile: int, keep_from: int) -> float:
    """The activations the stages from ``keep_from`` on hold with their graphs, kept from the
    statistics pass to the backward pass: every layer's output on every tile's window."""
    sts = stages(model, layers)
    total = 0.0
    for st, (_, ts) in list(zip(sts, _stage_windows(sts, hw, tile)))[keep_from:]:
        total += sum(elements(st, u.ty1 - u.ty0, u.tx1 - u.tx0) for u in ts)
    return total


def kept_elements(model: str, layers, hw) -> tuple:
    """The whole maps a staged evaluation keeps: (every stage's input map after the first,
    held in the network's dtype; at the worst moment of the backward pass the gradients of
    two neighbouring ones, in float32), in elements."""
    sts = stages(model, layers)
    maps = [st.cin * math.prod(full_hw(*hw, st.scale)) for st in sts]
    pairs = [maps[k] + (maps[k + 1] if k + 1 < len(maps) else 0) for k in range(1, len(maps))]
    return sum(maps[1:]), max(pairs, default=0)


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


def full_hw(h, w, s):
    """The size of a stride-``s`` map of an h x w image (floor at every 2x2 pooling)."""
    while s > 1:
        h, w, s = h // 2, w // 2, s // 2
    return h, w


def interior(feat, tile, s):
    """The part of a tile's feature map that belongs to its interior, and where it goes in
    the whole map."""
    (fy0, fy1), (fx0, fx1), (oy, ox) = tile.at(s)
    return feat[..., oy:oy + fy1 - fy0, ox:ox + fx1 - fx0], (fy0, fy1, fx0, fx1)
