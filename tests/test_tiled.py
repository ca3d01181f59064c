"""The tiled objective against the untiled one: the same loss and the same gradient up to
floating-point error, on small images with tiny tiles, for Gram and W2 statistics, regions and
several styles, tile sizes that do not divide the image, and margins at the image edge."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import pil_to_tensor, synthetic

from impasto import tile_geometry, tiled
from impasto.losses import Objective, Region

SHALLOW = dict(content_layers=["relu2_2"], style_layers=["relu1_1", "relu2_1", "relu3_1"])
DEEP = dict(content_layers=["relu4_2"],
            style_layers=["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"])
WEIGHTS = dict(content_weight=1.0, style_weight=10.0, tv_weight=1.0, tv_norm="squared")


def _img(w, h, seed):
    return pil_to_tensor(synthetic(w, h, seed=seed))


def both(net, tile, x, **kw):
    """(loss, terms, gradient) of the untiled and the tiled objective at ``x``."""
    out = []
    for obj in (Objective(net, **kw), tiled.TiledObjective(net, tile=tile, **kw)):
        xi = x.clone().requires_grad_(True)
        total, terms = obj(xi)
        total.backward()
        out.append((total.item(), terms, xi.grad))
    return out


def assert_same(a, b, rel=1e-4):
    (la, ta, ga), (lb, tb, gb) = a, b
    assert lb == pytest.approx(la, rel=rel)
    assert torch.allclose(tb, ta, rtol=rel, atol=1e-7)
    err = (ga - gb).abs().max() / ga.abs().max()
    assert err < 10 * rel, f"gradient differs by {err:.2e} of its largest value"


@pytest.mark.parametrize("tile", [16, 24, 40])
def test_shallow_layers_match_with_tiles_that_do_not_divide_the_image(vgg19, tile):
    c, s, x = _img(70, 54, 1), _img(48, 40, 2), _img(70, 54, 3)
    kw = dict(content=c, regions=[Region(None, [s])], style_stat="gram", **SHALLOW, **WEIGHTS)
    assert_same(*both(vgg19, tile, x, **kw))


@pytest.mark.parametrize("keep_from,compact,early", [
    (None, (), ()), (2, (), ()), (0, (), ()), (None, (0, 1, 2), ()), (3, (1,), ()),
    (None, (0, 1, 2), (0, 1, 2)), (2, (0, 1), (0,)), (3, (0, 1, 2), (2,))])
def test_deep_layers_match(vgg19, keep_from, compact, early):
    """relu5_1, with tiles that really cut every stage's map of the 200 x 168 image; every
    stage recomputed in the backward pass, the deep ones' graphs kept from the statistics
    pass, or every stage's kept; the recomputed stages' tails kept compact (``compact``),
    some of them from their start, with the maps they read kept whole (``early``)."""
    _deep_match(vgg19, keep_from, compact, DEEP, early)


def test_stages_without_a_layer_read_keep_their_whole_tail_compact(vgg19):
    """relu1_1 and relu5_1 alone: the stages of blocks 3 and 4 have no layer the objective
    reads, so all of each is a compact tail and the backward pass recomputes none of it."""
    _deep_match(vgg19, None, (0, 1, 2), dict(content_layers=["relu2_2"],
                                             style_layers=["relu1_1", "relu5_1"]))


def _deep_match(vgg19, keep_from, compact, layers, early=()):
    c, s, x = _img(200, 168, 1), _img(96, 80, 2), _img(200, 168, 3)
    kw = dict(content=c, regions=[Region(None, [s])], style_stat="gram", **layers, **WEIGHTS)
    plain = Objective(vgg19, **kw)
    tiles_ = tiled.TiledObjective(vgg19, tile=32, keep_from=keep_from, compact=compact,
                                  early=early, **kw)
    assert tiles_.compact == {k for k in compact if k < min(tiles_.keep_from, 3)}
    assert tiles_.early == set(early) & tiles_.compact
    for k in tiles_.early:      # the heads left: conv1_1 and relu1_1, or nothing
        assert tiles_.cuts[k] == (2 if k == 0 else 0)
    tiles_.stage_tiles = [32, 16, 8, 4]
    for k, st in enumerate(tiles_.stages):
        h, w = tile_geometry.full_hw(168, 200, st.scale)
        assert len(tile_geometry.tiles(h, w, tiles_.stage_tiles[k], st.geom)) >= 6
    out = []
    for obj in (plain, tiles_):
        xi = x.clone().requires_grad_(True)
        total, terms = obj(xi)
        total.backward()
        out.append((total.item(), terms, xi.grad))
    assert_same(*out)


def test_w2_matches(vgg19):
    c, s, x = _img(70, 54, 1), _img(48, 40, 2), _img(70, 54, 3)
    kw = dict(content=c, regions=[Region(None, [s])], style_stat="w2", **SHALLOW, **WEIGHTS)
    assert_same(*both(vgg19, 24, x, **kw), rel=1e-3)


def test_regions_and_several_styles_match(vgg19):
    c, x = _img(72, 56, 1), _img(72, 56, 3)
    s1, s2, s3 = _img(48, 40, 2), _img(40, 48, 4), _img(44, 44, 5)
    top = torch.zeros(1, 1, 56, 72)
    top[..., :30, :] = 1.0
    top = torch.nn.functional.avg_pool2d(top, 5, 1, 2)       # soft edges, as real masks have
    regions = [Region(top, [s1, s2], [0.3, 0.7]), Region(1 - top, [s3]), ]
    kw = dict(content=c, regions=regions, style_stat="gram", **SHALLOW, **WEIGHTS)
    assert_same(*both(vgg19, 16, x, **kw))
    kw["regions"] = [Region(top, [s1]), Region(1 - top, [])]      # one region keeps content
    assert_same(*both(vgg19, 24, x, **kw))


def test_deep_layers_from_a_larger_painting_match(vgg19):
    c, s, x = _img(64, 48, 1), _img(48, 40, 2), _img(64, 48, 3)
    big = _img(96, 80, 2)
    region = Region(None, [s], deep_styles=[big], deep_layers=["relu3_1"])
    kw = dict(content=c, regions=[region], style_stat="gram", **SHALLOW, **WEIGHTS)
    (loss, terms, grad), tiled_out = both(vgg19, 24, x, **kw)
    assert_same((loss, terms, grad), tiled_out)
    kw["regions"] = [Region(None, [s])]
    assert both(vgg19, 24, x, **kw)[1][0] != pytest.approx(loss, rel=1e-3)


def test_temporal_and_no_grad_evaluation(vgg19):
    c, s, x = _img(64, 48, 1), _img(48, 40, 2), _img(64, 48, 3)
    temporal = (_img(64, 48, 6), torch.rand(1, 1, 48, 64))
    kw = dict(content=c, regions=[Region(None, [s])], style_stat="gram", temporal=temporal,
              temporal_weight=5.0, **SHALLOW, **WEIGHTS)
    assert_same(*both(vgg19, 16, x, **kw))
    with torch.no_grad():           # the optimiser's last scoring: the value alone
        plain = Objective(vgg19, **kw)(x)
        tiled_ = tiled.TiledObjective(vgg19, tile=16, **kw)(x)
    assert tiled_[0].item() == pytest.approx(plain[0].item(), rel=1e-4)
    assert torch.allclose(tiled_[1], plain[1], rtol=1e-4)


def test_only_vgg_models_tile():
    with pytest.raises(Exception, match="VGG models only"):
        tile_geometry.stages("resnet50", ["res2a"])


def test_a_margin_too_small_is_not_exact(vgg19):
    """The margin matters: one stride short of the receptive field, the gradient is off (so
    the tests above would see a wrong margin)."""
    c, s, x = _img(70, 54, 1), _img(48, 40, 2), _img(70, 54, 3)
    kw = dict(content=c, regions=[Region(None, [s])], style_stat="gram", **SHALLOW, **WEIGHTS)
    exact = tiled.TiledObjective(vgg19, tile=16, **kw)
    short = tiled.TiledObjective(vgg19, tile=16, **kw)
    g = short.stages[0].geom
    short.stages[0] = dataclasses.replace(short.stages[0], geom=tile_geometry.Geometry(g.stride,
                                                                              g.margin - 4))
    grads = []
    for obj in (exact, short):
        xi = x.clone().requires_grad_(True)
        obj(xi)[0].backward()
        grads.append(xi.grad)
    assert (grads[0] - grads[1]).abs().max() > 1e-3 * grads[0].abs().max()


# ----------------------------------------------------------------------------- the memory plan
LAYERS = DEEP["content_layers"] + DEEP["style_layers"]
GIB = 2**30


def plan(budget, sides=(1024, 2048, 4096), history=100, tile=None):
    from impasto import estimate
    return estimate.plan_memory("vgg19", LAYERS, DEEP["content_layers"],
                                [(s, 10) for s in sides], (3072, 4096), "fp32", budget, history,
                                tile)


def test_only_the_scales_that_need_it_are_tiled():
    p = plan(6 * GIB)
    assert p["tiles"][0] is None and p["tiles"][1] is not None and p["tiles"][2] is not None
    assert p["peak_bytes"] <= 6 * GIB
    # tiles are multiples of the first stage's stride (pool2: 4 px)
    assert all(t % 4 == 0 for t in p["tiles"][1:])
    assert plan(None)["tiles"] == [None, None, None]
    assert plan(200 * GIB)["tiles"] == [None, None, None]


def test_the_history_is_sized_from_the_budget():
    """At 4096x3072 one L-BFGS entry is two 151 MB vectors: 100 of them do not fit in 6 GiB."""
    from impasto import estimate
    assert estimate.history_bytes((3072, 4096), 1) == pytest.approx(2 * 151e6, rel=0.01)
    p = plan(6 * GIB)
    assert 1 <= p["history"] < 100
    assert estimate.history_bytes((3072, 4096), p["history"]) <= 3 * GIB
    assert plan(None)["history"] == 100


def test_a_chosen_tile_is_capped_on_a_cpu_but_a_forced_one_is_kept():
    from impasto import estimate
    args = ("vgg19", LAYERS, DEEP["content_layers"], [(2048, 10)], (1536, 2048), "fp32", 3 * GIB,
            100)
    free = estimate.plan_memory(*args)["tiles"][0]
    capped = estimate.plan_memory(*args, largest=estimate.CPU_TILE)["tiles"][0]
    assert free > estimate.CPU_TILE and capped == estimate.CPU_TILE
    assert estimate.plan_memory(*args, tile=1024, largest=estimate.CPU_TILE)["tiles"] == [1024]


def test_what_spares_recomputation_grows_with_the_budget():
    """What the budget leaves after the tiles and two L-BFGS entries goes to keeping the
    recomputed stages' tails compact, then to starting them early where that pays (block 4:
    its maps read kept whole), then back to the history; the earlier stages' graphs only once
    HISTORY_FLOOR entries fit beside them."""
    from impasto import estimate, tile_geometry
    hw = (3072, 4096)
    p = plan(6 * GIB)
    assert p["keep"][0] is None and p["keep"][2] >= 3
    works, keeps = [], []
    for budget in (6, 8, 12, 20, 40):
        q = plan(budget * GIB, sides=(4096,), tile=384)
        assert q["peak_bytes"] <= budget * GIB
        assert q["history"] >= estimate.HISTORY_BEFORE_TAILS
        if q["keep"][0] < 3:
            assert q["history"] >= estimate.HISTORY_FLOOR
        assert set(q["early"][0]) <= set(q["compact"][0]) and set(q["early"][0]) <= {2}
        works.append(tile_geometry.work_factor("vgg19", LAYERS, hw, 384, q["keep"][0],
                                               q["compact"][0], q["early"][0]))
        keeps.append(q["keep"][0])
    assert works == sorted(works, reverse=True) and works[0] > works[-1]
    assert keeps == sorted(keeps, reverse=True) and keeps[0] == 3 and keeps[-1] < 3
    # block 4's early tail spares what its graph spares, for a third of the bytes
    sts = tile_geometry.stages("vgg19", LAYERS)
    gains = [tile_geometry.early_gain(st, set(LAYERS)) for st in sts[:3]]
    assert gains[2] >= estimate.EARLY_MIN_GAIN > max(gains[:2])
    early = tile_geometry.work_factor("vgg19", LAYERS, hw, 384, 3, (0, 1, 2), (2,))
    graph = tile_geometry.work_factor("vgg19", LAYERS, hw, 384, 2, (0, 1))
    assert early == pytest.approx(graph, rel=0.01)
    cost = (tile_geometry.compact_bytes("vgg19", LAYERS, hw, 384, (2,), (2,), 4.0)
            - tile_geometry.compact_bytes("vgg19", LAYERS, hw, 384, (2,), (), 4.0))
    assert cost < estimate.graph_bytes("vgg19", LAYERS, hw, 384, "fp32", 2) / 2
    # what is kept costs memory and saves work
    assert estimate.graph_bytes("vgg19", LAYERS, (3072, 4096), 384, "fp32", 2) > 0
    factors = [tile_geometry.work_factor("vgg19", LAYERS, (3072, 4096), 384, k)
               for k in range(5)]
    assert factors == sorted(factors) and factors[0] < 1.15 < 1.4 < factors[-1]


def test_recomputed_stages_keep_their_tails_compact_where_the_budget_has_room():
    """At 4096x3072 in 6 GiB (bf16) no stage's graph fits beside two L-BFGS entries, but the
    tails of every recomputed stage but the last (0.33 GiB) do: only their heads are
    recomputed, and the plan counts them. Without a budget every recomputed stage but the last keeps its tail; a
    stage whose graph is kept needs none."""
    from impasto import estimate, tile_geometry
    hw = (3072, 4096)

    def at(budget, prec="bf16"):
        return estimate.plan_memory("vgg19", LAYERS, ["conv4_2"], [(2048, 10), (4096, 10)],
                                    hw, prec, budget, 100, largest=384)
    p = at(6 * GIB)
    assert p["tiles"][1] == 384 and p["keep"][1] == 3 and p["compact"][1] == (0, 1, 2)
    assert p["early"][1] == (2,)        # block 4's: the most recomputation spared per byte
    # only block 4's pays (tile_geometry.early_gain), and only where it fits
    assert estimate.early_from("vgg19", LAYERS, hw, 384, (0, 1, 2), "bf16", None) == (2,)
    assert estimate.early_from("vgg19", LAYERS, hw, 384, (0, 1, 2), "bf16", 0.0) == ()
    assert estimate.early_from("vgg19", LAYERS, hw, 384, (1,), "bf16", None) == ()
    assert p["history"] >= estimate.HISTORY_BEFORE_TAILS and p["peak_bytes"] <= 6 * GIB
    assert p["compact"][0] is None or set(p["compact"][0]) <= set(range(p["keep"][0]))
    assert estimate.compact_from("vgg19", LAYERS, hw, 384, 3, None) == (0, 1, 2)
    assert estimate.compact_from("vgg19", LAYERS, hw, 384, 1, None) == (0,)
    assert estimate.compact_from("vgg19", LAYERS, hw, 384, 3, 0.0) == ()
    # the deepest first: block 4's tail alone when only it fits
    two = tile_geometry.compact_bytes("vgg19", LAYERS, hw, 384, (2,))
    assert estimate.compact_from("vgg19", LAYERS, hw, 384, 3, two) == (2,)
    # the time plan counts the recomputation they spare
    tails = estimate.estimate("vgg19", LAYERS, [(4096, 10)], hw, "bf16", 1e12, tiles=[384],
                              keep=[3], compact=[(1, 2)])["seconds"]
    none = estimate.estimate("vgg19", LAYERS, [(4096, 10)], hw, "bf16", 1e12, tiles=[384],
                             keep=[3])["seconds"]
    assert tails < 0.9 * none


def test_kept_graphs_count_only_beyond_the_first_stage_tile():
    """The kept graphs are freed before the first stage's backward pass builds its tile's
    graph, so they add to the peak only what exceeds that tile; every stage kept (the first
    included, where the scale holds them all) counts in full, at the fitted bytes."""
    from impasto import estimate, tile_geometry
    hw, first = (3072, 4096), tile_geometry.stages("vgg19", LAYERS)[0]
    tile_act = estimate.BYTES_PER_ACTIVATION["bf16"] * estimate.activation_elements(
        "vgg19", first.names[-1], (384 + 2 * first.geom.margin,) * 2)

    def graphs(keep):
        return estimate.GRAPH_BYTES["bf16"] * tile_geometry.graph_elements(
            "vgg19", LAYERS, hw, 384, keep)
    assert 0 < graphs(3) < tile_act
    assert estimate.graph_bytes("vgg19", LAYERS, hw, 384, "bf16", 3) == 0
    assert estimate.graph_bytes("vgg19", LAYERS, hw, 384, "bf16", 1) == pytest.approx(
        graphs(1) - tile_act)
    assert estimate.graph_bytes("vgg19", LAYERS, hw, 384, "bf16", 0) == pytest.approx(graphs(0))
    assert estimate.graph_bytes("vgg19", LAYERS, hw, 384, "bf16", 4) == 0
    # fp32 keeps more bytes per activation than bf16
    assert estimate.graph_bytes("vgg19", LAYERS, hw, 384, "fp32", 1) > \
        estimate.graph_bytes("vgg19", LAYERS, hw, 384, "bf16", 1)


def test_freed_memory_is_reused_where_the_budget_has_room_for_it():
    """Reuse keeps the steps' holes in the heap (estimate.REUSE_FACTOR of their activations):
    "auto" takes it where that fits after the history, so it never costs a tile or a shorter
    history (at a tiled scale within its passes only, allocator.tile_heap); "on" forces it and
    counts it, "off" never."""
    from impasto import estimate

    def reuse_plan(budget, reuse, sides=(1024, 2048, 4096)):
        return estimate.plan_memory("vgg19", LAYERS, DEEP["content_layers"],
                                    [(s, 10) for s in sides], (3072, 4096), "fp32", budget,
                                    100, reuse=reuse)
    assert reuse_plan(None, "auto")["reuse"] == [True] * 3
    assert reuse_plan(None, "off")["reuse"] == [False] * 3
    for budget in (6 * GIB, 8 * GIB):            # tiles fill the budget at 4096 px
        tight = reuse_plan(budget, "auto")
        without = reuse_plan(budget, "off")
        assert tight["reuse"][0] and not tight["reuse"][2]
        assert (tight["tiles"], tight["keep"], tight["history"]) == (
            without["tiles"], without["keep"], without["history"])
        assert without["peak_bytes"] <= tight["peak_bytes"] <= budget
    forced_tiles = estimate.plan_memory("vgg19", LAYERS, DEEP["content_layers"],
                                        [(1024, 10), (2048, 10)], (3072, 4096), "fp32", None,
                                        100, tile=1024, reuse="auto")
    assert forced_tiles["tiles"] == [None, 1024] and forced_tiles["reuse"] == [True, True]
    roomy = reuse_plan(40 * GIB, "auto", sides=(2048,))
    assert roomy["reuse"] == [True] and roomy["tiles"] == [None]
    assert roomy["peak_bytes"] > reuse_plan(40 * GIB, "off", sides=(2048,))["peak_bytes"]
    forced = reuse_plan(6 * GIB, "on")
    assert forced["reuse"] == [True] * 3 and forced["peak_bytes"] > 6 * GIB


def test_on_a_cpu_the_budget_takes_larger_tiles_only_where_their_heap_is_reused():
    """On a CPU a tile over CPU_TILE px is faulted in afresh at every tile unless the heap
    serves it (allocator.tile_heap): the planner takes one only where reuse fits the budget,
    and only where its plan computes less (smaller margins against more recomputation). With
    the heap reused every tail that fits starts early (estimate.REUSED_EARLY_GAIN)."""
    from impasto import estimate, tile_geometry

    def cpu_plan(budget, reuse="auto"):
        return estimate.plan_memory("vgg19", LAYERS, DEEP["content_layers"], [(4096, 10)],
                                    (3072, 4096), "bf16", budget, 100, reuse=reuse,
                                    largest=estimate.CPU_TILE)
    roomy = cpu_plan(18 * GIB)
    assert estimate.CPU_TILE < roomy["tiles"][0] <= estimate.REUSE_TILE
    assert roomy["reuse"] == [True] and roomy["peak_bytes"] <= 18 * GIB
    # with the heap reused, every tail starts early and no earlier stage keeps its graph
    assert roomy["keep"] == [3] and roomy["early"] == [(0, 1, 2)]
    at_384 = estimate._tiled_plan(384, "vgg19", LAYERS, DEEP["content_layers"], (3072, 4096),
                                  "bf16", 18 * GIB, 100, roomy["history"], "auto")
    work = tile_geometry.work_factor("vgg19", LAYERS, (3072, 4096), roomy["tiles"][0],
                                     roomy["keep"][0], roomy["compact"][0], roomy["early"][0])
    assert work < at_384["work"]
    assert cpu_plan(18 * GIB, reuse="off")["tiles"] == [estimate.CPU_TILE]
    tight = cpu_plan(6 * GIB)     # the early tail of block 4 spares more than larger tiles
    assert tight["tiles"] == [estimate.CPU_TILE] and tight["early"] == [(2,)]
    assert tight["peak_bytes"] <= 6 * GIB


def test_a_forced_tile_applies_to_every_scale_larger_than_it():
    assert plan(None, sides=(256, 512, 1024), tile=512)["tiles"] == [None, None, 512]


def test_too_little_memory_for_one_tile_names_the_option():
    from impasto.errors import UserError
    with pytest.raises(UserError, match="--max-memory"):
        plan(0.6 * GIB)


def test_a_tiled_run_through_the_cli(run_cli, image_files):
    out = image_files["out"] / "tiled.png"
    proc = run_cli("transfer", image_files["content"], image_files["style"], "-o", out,
                   "--size", "64", "--steps", "3", "--precision", "fp32", "--tile", "32",
                   "--style-layers", "relu1_1", "relu2_1", "relu3_1", "--content-layers",
                   "relu2_2")
    assert proc.returncode == 0, proc.stderr
    # a tiny image leaves room to keep every stage's graph: nothing is recomputed
    assert "(tiles of 32px, conv1_1 and deeper not recomputed)" in proc.stderr
    import json
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["memory"]["tiles"] == [32] and rec["options"]["tile"] == 32
    assert rec["memory"]["keep"] == [0] and rec["memory"]["early"] == [[]]


@pytest.mark.parametrize("case", ["tail", "early"])
def test_a_run_whose_budget_keeps_a_tail_compact(run_cli, image_files, case):
    """A budget where the first stage's graph does not fit but its tail's masks do, and one
    where block 4's tail starts early (relu4_1 and relu4_2 kept whole), both found with the
    planner itself: the run says so, records it, and paints the picture the untiled run
    paints."""
    import json

    from PIL import Image

    from impasto import estimate, image as imageio
    if case == "tail":
        style, content, size, tile = ["relu1_1", "relu2_1", "relu3_1"], ["relu1_1"], 64, 32
        want = lambda p: p["compact"] == [(0,)] and p["early"] == [()]     # noqa: E731
        line = "conv2_2-pool2 kept as masks)"
    else:       # a size where the history's floor leaves the graphs out (see estimate)
        style, content, size, tile = ["relu1_1", "relu4_1", "relu5_1"], ["relu4_2"], 256, 64
        want = lambda p: p["early"] == [(2,)] and p["keep"] == [3]         # noqa: E731
        line = "conv4_1-pool4 kept as masks, relu4_1 and relu4_2 as maps)"
    with Image.open(image_files["content"]) as im:
        hw = imageio.fit_size(im.height, im.width, size)
    budget = next((mb for mb in range(520, 1200) if want(estimate.plan_memory(
        "vgg19", style + content, content, [(size, 3)], hw, "fp32", mb * 2**20, 100,
        tile=tile))), None)
    assert budget is not None
    common = ("--size", str(size), "--scales", "1", "--steps", "3", "--precision", "fp32",
              "--style-layers", *style, "--content-layers", *content, "--seed", "0")
    out = image_files["out"] / f"{case}.png"
    proc = run_cli("transfer", image_files["content"], image_files["style"], "-o", out,
                   "--max-memory", f"{budget}M", "--tile", str(tile), *common)
    assert proc.returncode == 0, proc.stderr
    assert line in proc.stderr
    rec = json.loads(out.with_suffix(".json").read_text())
    assert want({"keep": rec["memory"]["keep"],
                 **{k: [tuple(v) for v in rec["memory"][k]] for k in ("compact", "early")}})
    plain = image_files["out"] / f"plain_{case}.png"
    proc = run_cli("transfer", image_files["content"], image_files["style"], "-o", plain,
                   *common)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(plain.with_suffix(".json").read_text())["memory"]["tiles"] == [None]
    a = np.asarray(Image.open(out), dtype=np.float32)
    b = np.asarray(Image.open(plain), dtype=np.float32)
    assert np.abs(a - b).max() <= 2      # the same gradient, to float rounding


def test_the_memory_model_counts_the_kept_maps_in_the_dtype_they_are_held_in(vgg19):
    """``estimate.tiled_bytes`` counts the stages' whole maps and the content targets in the
    network's dtype and the maps' gradients in float32: the objective holds them so (a bf16
    network's maps counted in float32 had put 0.5 GiB too many into the 4096x3072 estimate)."""
    import copy
    from impasto import estimate
    net = copy.deepcopy(vgg19).set_precision(torch.bfloat16)
    c, s, x = _img(96, 80, 1), _img(64, 48, 2), _img(96, 80, 3)
    obj = tiled.TiledObjective(net, tile=32, content=c, regions=[Region(None, [s])],
                               style_stat="gram", **DEEP, **WEIGHTS)
    assert all(t.dtype == torch.bfloat16 for t in obj.content_targets.values())
    kept = obj._stats(x, [None], content=True, keep=True)[3]
    maps = [src for src, graphs, _ in kept[1:]]
    assert maps and all(m.dtype == torch.bfloat16 for m in maps)
    maps_elems, grad_elems = tile_geometry.kept_elements("vgg19", LAYERS, (80, 96))
    assert maps_elems == sum(m.numel() for m in maps)
    bf16 = estimate.tiled_bytes("vgg19", LAYERS, (80, 96), 32, "bf16", 0)
    fp32 = estimate.tiled_bytes("vgg19", LAYERS, (80, 96), 32, "fp32", 0)
    first = (estimate._first_tile_bytes("vgg19", LAYERS, (80, 96), 32, "fp32")
             - estimate._first_tile_bytes("vgg19", LAYERS, (80, 96), 32, "bf16"))
    assert fp32 - bf16 == pytest.approx(first + 2.0 * maps_elems)


@pytest.mark.parametrize("stat", ["gram", "w2"])
def test_regions_and_w2_match_with_early_tails(vgg19, stat):
    """The loss read inside an early tail (from its kept maps) has the region masks and, for
    W2, the means, as the head's autograd path has them."""
    c, x = _img(120, 96, 1), _img(120, 96, 3)
    s1, s2 = _img(64, 48, 2), _img(48, 64, 4)
    top = torch.zeros(1, 1, 96, 120)
    top[..., :40, :] = 1.0
    top = torch.nn.functional.avg_pool2d(top, 5, 1, 2)
    kw = dict(content=c, regions=[Region(top, [s1]), Region(1 - top, [s2])], style_stat=stat,
              content_layers=["relu3_2"], style_layers=["relu1_1", "relu2_1", "relu3_1",
                                                         "relu4_1"], **WEIGHTS)
    out = []
    for obj in (Objective(vgg19, **kw),
                tiled.TiledObjective(vgg19, tile=24, compact=(0, 1, 2), early=(0, 1), **kw)):
        if isinstance(obj, tiled.TiledObjective):
            assert obj.early == {0, 1} and obj.cuts[:2] == [2, 0]
        xi = x.clone().requires_grad_(True)
        total, terms = obj(xi)
        total.backward()
        out.append((total.item(), terms, xi.grad))
    assert_same(*out, rel=1e-3 if stat == "w2" else 1e-4)
