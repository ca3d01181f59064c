"""Where a staged, tiled evaluation's tiles lie: the stages, their strides and margins, the
tiles covering a map, and what a tiled step computes against an untiled one."""
from __future__ import annotations

import torch

from impasto import tile_geometry


def test_geometry_of_vgg19():
    def geometry(model, layers):      # the whole network in one piece
        return tile_geometry.reach(tile_geometry.layer_chain(model, layers))
    g = geometry("vgg19", ["relu5_1"])
    assert g.stride == 16 and g.margin == 80      # relu5_1 sees [16q - 70, 16q + 85]
    assert geometry("vgg19", ["relu3_1", "relu1_1"]) == tile_geometry.Geometry(4, 12)
    assert geometry("vgg19", ["relu1_1"]) == tile_geometry.Geometry(1, 1)


def test_the_network_is_cut_into_stages_that_need_small_margins():
    sts = tile_geometry.stages("vgg19", ["relu5_1", "relu4_2"])
    assert [(st.names[0], st.names[-1], st.scale, st.cin) for st in sts] == [
        ("conv1_1", "pool2", 1, 3), ("conv3_1", "pool3", 4, 128), ("conv4_1", "pool4", 8, 256),
        ("conv5_1", "relu5_1", 16, 512)]
    assert [st.geom for st in sts] == [tile_geometry.Geometry(4, 8), tile_geometry.Geometry(2, 4),
                                       tile_geometry.Geometry(2, 4), tile_geometry.Geometry(1, 1)]
    assert [st.names[-1] for st in tile_geometry.stages("vgg19", ["relu2_1"])] == ["relu2_1"]
    # the later stages' tiles hold no more activations than the first one's
    tiles_ = tile_geometry.stage_tiles(sts, 352)
    cap = tile_geometry.elements(sts[0], 352 + 16)
    for st, t in zip(sts[1:], tiles_[1:]):
        assert t % st.geom.stride == 0
        assert tile_geometry.elements(st, t + 2 * st.geom.margin) <= cap
        assert tile_geometry.elements(st, t + st.geom.stride + 2 * st.geom.margin) > cap
    # what the margins cost: half of what one 80 px margin for the whole network did
    assert tile_geometry.work_factor("vgg19", ["relu5_1"], (1536, 2048), 352) < 1.5


def test_tiles_cover_the_image_once_with_aligned_starts():
    geom = tile_geometry.Geometry(4, 12)
    ts = tile_geometry.tiles(70, 45, 16, geom)
    covered = torch.zeros(70, 45, dtype=torch.int64)
    for t in ts:
        covered[t.y0:t.y1, t.x0:t.x1] += 1
        assert t.ty0 % 4 == 0 and t.tx0 % 4 == 0
        assert t.ty0 == max(0, t.y0 - 12) and t.ty1 == min(70, t.y1 + 12)
    assert (covered == 1).all()


DEFAULT = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1", "conv4_2"]


def test_a_stage_tail_starts_after_its_deepest_layer_read():
    names = ["conv3_1", "relu3_1", "conv3_2", "relu3_2", "pool3"]
    assert tile_geometry.split(names, {"relu3_1", "relu1_1"}) == 2
    assert tile_geometry.split(names, {"relu3_2"}) == 4
    assert tile_geometry.split(names, {"relu1_1"}) == 0


def test_what_a_compact_tail_keeps_is_counted():
    """A bit per ReLU output, a byte per max pooling output, over every tile's window."""
    st = tile_geometry.stages("vgg19", DEFAULT)[1]          # conv3_1 .. pool3, cut at relu3_1
    assert tile_geometry.tail_bytes(st, 2, 10, 12) == 3 * 256 * 10 * 12 / 8 + 256 * 5 * 6
    hw = (3072, 4096)
    one = tile_geometry.compact_bytes("vgg19", DEFAULT, hw, 384, (1,))
    both = tile_geometry.compact_bytes("vgg19", DEFAULT, hw, 384, (1, 2))
    # at least the whole map's worth (margins add a little), and far below autograd's graph
    assert 3 * 256 * 768 * 1024 / 8 + 256 * 384 * 512 <= one < 1.2 * (
        3 * 256 * 768 * 1024 / 8 + 256 * 384 * 512)
    assert one < both < 0.3 * 2**30
    assert tile_geometry.compact_bytes("vgg19", DEFAULT, hw, 384, ()) == 0


def test_compact_tails_cut_the_recomputation_to_the_heads():
    hw = (3072, 4096)
    none = tile_geometry.work_factor("vgg19", DEFAULT, hw, 384, 3)
    tails = tile_geometry.work_factor("vgg19", DEFAULT, hw, 384, 3, (1, 2))
    kept = tile_geometry.work_factor("vgg19", DEFAULT, hw, 384, 1)
    # blocks 3 and 4 recompute only conv3_1 (1/7 of block 3's work) and conv4_1-conv4_2 (3/7
    # of block 4's) of their eight convolutions
    assert kept < tails < none
    assert 0.25 * (none - kept) < tails - kept < 0.35 * (none - kept)
    # a stage whose graph is kept has nothing recomputed, compact or not
    assert tile_geometry.work_factor("vgg19", DEFAULT, hw, 384, 1, (1, 2)) == kept
