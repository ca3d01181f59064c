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
