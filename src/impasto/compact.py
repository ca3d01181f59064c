"""A stage's tail kept compact from a tiled evaluation's statistics pass to its backward pass.

A tiled evaluation that cannot keep a stage's autograd graph recomputes the stage in its
backward pass (``tiled``). Most of that recomputation is not needed: below the deepest layer
the objective reads in a stage (relu3_1 in conv3_1 .. pool3), the backward pass needs only
which ReLU outputs were positive and which position each max pooling chose (nothing for an
average pooling), not the maps. The tail is the stage's layers after that layer
(``tile_geometry.split``). The statistics pass records each tail ReLU's mask as bits (one bit
an activation, where autograd keeps the bf16 output: 16x less) and each max pooling's choice
as a byte (0-3 within its 2x2 window, where autograd keeps int64 indices: 8x less), in whole
maps (``Store``); the backward pass recomputes only the head (up to that layer) and runs the
tail's gradient by hand: max unpooling from the codes, the masks, and each convolution's
input gradient (the same oneDNN call autograd makes). The gradient is the one autograd
computes (tests/test_compact.py). A ReLU whose output only a max pooling reads (relu2_2,
relu3_4, relu4_4) keeps no mask: the gradient reaches only the position the pooling chose,
where the mask is "the pooling's output > 0", so a window with nothing positive gets code 4
(no position) and the ReLU's bits are neither packed nor applied.

At 4096x3072 in tiles of 384 px, with the default layers, the tails of blocks 3 and 4 take
0.19 GiB kept this way (``tile_geometry.compact_bytes``), against about 3.6 GiB as autograd
graphs, and spare 70% of their recomputation.

A tail can also start before the layers the objective reads (an "early" tail,
``tile_geometry.early_cut``): their maps are then kept whole too, and the backward pass adds
their loss gradient where it reaches them (``backward``'s ``read_grad``), so nothing of the
stage is recomputed but conv1_1 in the first. Block 4's early tail keeps relu4_1 and relu4_2
(0.45 GiB at 4096x3072 in bf16) and spares what its kept graph would (1.45 GiB).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .layout import zeros_as


# ----------------------------------------------------------------------------- bits, codes
_SHIFTS = torch.arange(8, dtype=torch.uint8)
# Multiplying eight 0/1 bytes read as one little-endian int64 by this gathers byte i's bit into
# bit 56 + i, without carries (each product term lands on its own bit): one pass where shifting
# and summing the bytes took three (2.2x faster on a 400 px tile of 64 channels).
_GATHER = 0x0102040810204080


def pack(mask: torch.Tensor) -> torch.Tensor:
    """A boolean (N, C, H, W) map, C a multiple of 8, as bits: uint8 (N, H, W, C / 8), channel
    8k + i at bit i of byte k."""
    m = mask.permute(0, 2, 3, 1).contiguous()
    n, h, w, c = m.shape
    v = m.view(torch.uint8).view(n, h, w, c // 8, 8).view(torch.int64).squeeze(-1)
    return ((v * _GATHER) >> 56).to(torch.uint8)


def unpack(bits: torch.Tensor) -> torch.Tensor:
    """``pack``'s map back, as 0/1 uint8 (N, C, H, W) in the channels_last layout."""
    n, h, w, c8 = bits.shape
    m = (bits.unsqueeze(-1) >> _SHIFTS.to(bits.device)) & 1
    return m.reshape(n, h, w, c8 * 8).permute(0, 3, 1, 2)


def _pool(x, empty=False, relu=False):
    """2x2 max pooling, and each output's choice within its window (0-3, row-major): the first
    position that holds the maximum, as the pooling's own indices have it (ties included).
    Found by comparing the window's positions with the output (the indices' int64 arithmetic
    took twice as long), in bytes: with n_i "position i does not hold it", the first that
    does is n0 (1 + n1 (1 + n2)) (nested ``where``s on Python numbers computed in int64: 3.4x
    slower on a 400 px tile of 128 channels). One comparison of every window position at once
    was no faster. With ``empty``, a window with nothing positive gets 4 (no position; see
    ``forward``). With ``relu`` (``x`` a ReLU's output) a 16-bit map is pooled as integers
    (``_pool_relu``)."""
    if relu and x.dtype in (torch.bfloat16, torch.float16):
        return _pool_relu(x)
    out = F.max_pool2d(x, 2, 2)
    h, w = out.shape[-2:]
    n0, n1, n2 = [(x[..., dy:2 * h:2, dx:2 * w:2] != out).view(torch.int8)
                  for dy, dx in ((0, 0), (0, 1), (1, 0))]
    code = n2.add(1).mul_(n1).add_(1).mul_(n0)
    if empty:       # there every position holds the maximum, 0: code 0 + 4
        code.add_(torch.le(out, 0).view(torch.int8), alpha=4)
    return out, code


def _pool_relu(x):
    """``_pool(x, empty=True)`` for a ReLU's 16-bit output, in integer ops: 2.3x faster on a
    724 px tile of 64 channels, 1.5-1.7x on the later blocks' (bf16, 2-core Zen 4). Nothing
    in a ReLU's output is below zero but -0, so its values order as their bits read as int16
    do (-0 below every positive value, +0 below too), and two values are equal where their
    bits are, except +0 and -0: a window whose maximum is not positive gets 4 (no position)
    whatever its zeros' signs, and the gradient of a ReLU's zero output is zero anyway.
    Position i not holding the maximum is |clamp(bits_i ^ max, -1, 1)|: integer ops that
    write int16 run about 3x faster here than comparisons that write booleans."""
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    bits = x.view(torch.int16)
    v = [bits[..., dy:2 * h:2, dx:2 * w:2] for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1))]
    out = torch.maximum(v[0], v[1])
    torch.maximum(out, torch.maximum(v[2], v[3]), out=out)
    n0, n1, n2 = [torch.bitwise_xor(u, out).clamp_(-1, 1).abs_() for u in v[:3]]
    code = n2.add_(1).mul_(n1).add_(1).mul_(n0)
    code.sub_(4).mul_(out.clamp(0, 1)).add_(4)      # 4 where the maximum is +0 or -0
    return out.view(x.dtype), code.to(torch.int8)


def _unpool(g, code, hw):
    """The gradient of ``_pool``'s input: each output's gradient at the position it chose
    (``code``), or a quarter of it at each of its window's four (average pooling, no code).
    Each position's share is written straight into its place, the choice compared into the
    gradient's dtype (``eq`` with ``out``): a boolean choice converted and multiplied, then
    copied, took 1.8x as long on a 724 px tile of 64 channels."""
    n, c, ho, wo = g.shape
    gl = g.permute(0, 2, 3, 1)
    even = hw[0] == 2 * ho and hw[1] == 2 * wo     # else an odd row or column gets none
    out = (g.new_empty if even else g.new_zeros)(n, hw[0], hw[1], c)
    cl = None if code is None else code.permute(0, 2, 3, 1)
    chosen = None if code is None else torch.empty_like(gl)
    for dy in (0, 1):
        for dx in (0, 1):
            at = out[:, dy:2 * ho:2, dx:2 * wo:2, :]
            if chosen is None:
                torch.div(gl, 4, out=at)
            else:
                torch.eq(cl, 2 * dy + dx, out=chosen)
                torch.mul(gl, chosen, out=at)
    return out.permute(0, 3, 1, 2)


def _conv_input_grad(g, weight, shape):
    """A 3x3 convolution's (padding 1) gradient with respect to its input of ``shape``."""
    like = torch.empty(shape, dtype=g.dtype, device=g.device, memory_format=torch.channels_last)
    return torch.ops.aten.convolution_backward(
        g, like, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
        [True, False, False])[0]


# ----------------------------------------------------------------------------- the tail
def forward(net, x: torch.Tensor, start: int, stop: int, reads=()):
    """The network's layers ``net.names[start:stop]`` on ``x`` (the output of layer
    ``start - 1``), without autograd, as ``net.segment`` computes them; returns the output,
    what ``backward`` needs, and the maps of ``reads`` (layers the objective reads in the
    tail, kept whole: their loss gradient is added where the backward pass reaches them)."""
    names, saved, feats, i = net.names, [], {}, start

    def pooled(j):      # a ReLU output (layer j - 1) that a max pooling alone reads
        return j < stop and names[j].startswith("pool") and net.pooling == "max" \
            and names[j - 1] not in reads

    def bits(j, y):     # a ReLU output's mask, unless a pooling's code or its read map has it
        return None if pooled(j) or names[j - 1] in reads else pack(y > 0)
    with torch.no_grad():
        while i < stop:
            n = names[i]
            if n.startswith("conv"):        # fused with its ReLU unless the conv is read
                j = i + 2 if i + 1 < stop and names[i + 1].startswith("relu") \
                    and n not in reads else i + 1
                y = net.segment(x, i, j, [names[j - 1]])[names[j - 1]]
                weight = net.convs[n].weight.to(y.dtype)
                saved.append(("conv", weight, tuple(x.shape),
                              bits(j, y) if j == i + 2 else None))
            elif n.startswith("relu"):
                j, y = i + 1, F.relu(x)
                saved.append(("relu", None, tuple(x.shape), bits(j, y)))
            else:
                j = i + 1
                if getattr(net, "channels_last", False):    # as net.segment has it
                    x = x.contiguous(memory_format=torch.channels_last)
                if net.pooling == "max":
                    # after a ReLU that keeps no mask, its mask where the pooling chose: its
                    # output > 0 there, so a window of zeros passes no gradient (code 4)
                    relu = i > 0 and names[i - 1].startswith("relu")    # x: its output
                    y, code = _pool(x, empty=relu and i > start and pooled(i), relu=relu)
                else:           # average pooling: its gradient needs nothing kept
                    y, code = F.avg_pool2d(x, 2, 2), None
                saved.append(("pool", None, tuple(x.shape), code))
            if names[j - 1] in reads:       # (kind, the layer, its shape, its map)
                feats[names[j - 1]] = y
                # a ReLU's map read is its own mask: no bits, the gradient masked by the map
                kind = "read relu" if names[j - 1].startswith("relu") else "read"
                saved.append((kind, names[j - 1], tuple(y.shape), y))
            x, i = y, j
    return x, saved, feats


def backward(g: torch.Tensor, saved, read_grad=None) -> torch.Tensor:
    """The gradient with respect to ``forward``'s input from ``g``, its output's gradient
    (in the output's dtype), plus at each layer read the loss gradient there:
    ``read_grad(layer, map, g)`` returns ``g``, the gradient at that map so far (``backward``'s
    own: it may add into it in place), plus that. ``saved`` is emptied as it goes."""
    with torch.no_grad():
        while saved:
            kind, weight, shape, keep = saved.pop()
            if kind.startswith("read"):
                g = read_grad(weight, keep, g)
                if kind == "read relu":     # through the ReLU, as autograd does
                    g = torch.ops.aten.threshold_backward(g, keep, 0)
                continue
            if kind == "pool":
                g = _unpool(g, keep, shape[-2:])
                continue
            if keep is not None:
                g = g * unpack(keep).to(g.dtype)
            if kind == "conv":
                g = _conv_input_grad(g.contiguous(memory_format=torch.channels_last), weight,
                                     shape)
    return g


# ----------------------------------------------------------------------------- whole maps
BITS = ("conv", "relu")     # the records kept as bits (a ReLU's mask); the others are maps


class Store:
    """A stage's tail records for all its tiles, kept as whole maps: each tile writes its
    interior (exact there, as the tiled features are), and the backward pass reads any
    tile's window back. A window's positions that reach its interior are exact too (a tile's
    margin holds their receptive field), so the whole-map masks are the ones the tile's own
    forward pass computed wherever the gradient goes. One block per layer, allocated at the
    first tile: per-tile pieces interleaved with the tiles' short-lived maps fragmented the
    heap (0.65 GiB more peak RSS at 4096x3072 against the 0.19 GiB they hold)."""

    def __init__(self, scale: int, hw):
        self.scale, self.hw = scale, tuple(hw)   # the tail's input stride; the stage's map
        self.maps, self.strides, self.records = None, None, []

    def put(self, tile, saved, out) -> None:
        """Tile ``tile``'s record (``forward``'s ``saved``; ``out`` its output)."""
        from .tile_geometry import full_hw
        if self.maps is None:       # each record's stride: its output's (a pooling's code
            self.maps, self.strides, s = [], [], self.scale     # is at its output's)
            for kind, _, _, data in saved:
                s *= 2 if kind == "pool" else 1
                self.strides.append(s)
                if data is None:
                    self.maps.append(None)
                elif kind not in BITS:              # maps: (N, C, H, W) in the tile's layout
                    self.maps.append(zeros_as(data, (*data.shape[:2], *full_hw(*self.hw, s))))
                else:                               # bits: (N, H, W, C / 8)
                    self.maps.append(zeros_as(data, (data.shape[0], *full_hw(*self.hw, s),
                                                     data.shape[-1])))
        for (kind, _, _, data), s, m in zip(saved, self.strides, self.maps):
            if data is None:
                continue
            (fy0, fy1), (fx0, fx1), (oy, ox) = tile.at(s)
            if kind not in BITS:
                m[..., fy0:fy1, fx0:fx1] = data[..., oy:oy + fy1 - fy0, ox:ox + fx1 - fx0]
            else:
                m[:, fy0:fy1, fx0:fx1] = data[:, oy:oy + fy1 - fy0, ox:ox + fx1 - fx0]
        self.records.append(([(kind, w, shape) for kind, w, shape, _ in saved],
                             tuple(out.shape), out.dtype))

    def take(self, tile):
        """The last tile's record (tiles are taken back in reverse order), read for its
        window: (``saved`` for ``backward``, the output's shape and dtype)."""
        layers, shape, dtype = self.records.pop()
        saved = []
        for (kind, w, in_shape), s, m in zip(layers, self.strides, self.maps):
            data = None
            if m is not None:
                y0, x0 = tile.ty0 // s, tile.tx0 // s
                if kind == "pool":      # at the pooling's output: half its input's size
                    data = m[..., y0:y0 + in_shape[-2] // 2, x0:x0 + in_shape[-1] // 2]
                elif kind not in BITS:  # a map read: the map itself
                    data = m[..., y0:y0 + in_shape[-2], x0:x0 + in_shape[-1]]
                else:
                    data = m[:, y0:y0 + in_shape[-2], x0:x0 + in_shape[-1]]
            saved.append((kind, w, in_shape, data))
        return saved, shape, dtype
