"""Loss functions against values worked out by hand, and the Objective that combines them."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from impasto import losses
from impasto.losses import Objective, content_loss, gram, style_loss, tv_loss


# 1x2x2x2 features: channel 0 = [[1, 2], [3, 4]], channel 1 = [[0, 1], [-1, 2]]
F2 = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [-1.0, 2.0]]]])
# G = F Fᵀ / (H·W), H·W = 4:
#   G00 = (1 + 4 + 9 + 16) / 4 = 7.5
#   G01 = (1·0 + 2·1 + 3·(-1) + 4·2) / 4 = 7 / 4 = 1.75
#   G11 = (0 + 1 + 1 + 4) / 4 = 1.5
G2 = torch.tensor([[[7.5, 1.75], [1.75, 1.5]]])


# ----------------------------------------------------------------------------- gram
# The objective has no defaults of its own (the config holds them): these tests use unit
# weights, no TV and Gram statistics unless they say otherwise.
UNIT = dict(style_stat="gram", content_weight=1.0, style_weight=1.0, tv_weight=0.0,
            tv_norm="squared")


def objective(net, **kw):
    return Objective(net, **{**UNIT, **kw})


def test_gram_of_a_tiny_tensor_by_hand():
    g = gram(F2)
    assert g.shape == (1, 2, 2)
    assert torch.allclose(g, G2)


def test_gram_is_symmetric_float32_even_for_bf16_features():
    f = torch.randn(2, 3, 5, 4)
    g = gram(f.to(torch.bfloat16))
    assert g.dtype == torch.float32
    assert g.shape == (2, 3, 3)
    assert torch.equal(g, g.transpose(1, 2))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("masked", [False, True])
def test_gram_gradient_equals_autograd_through_the_plain_product(layout, masked):
    """gram's gradient is written out (F (D + Dᵀ), one product); it must equal autograd
    through F Fᵀ / (H·W), for both memory layouts, with and without a mask."""
    torch.manual_seed(0)
    f = torch.randn(2, 6, 5, 7)
    if layout == "channels_last":
        f = f.contiguous(memory_format=torch.channels_last)
    mask = torch.rand(2, 1, 5, 7) if masked else None
    weight = torch.randn(2, 6, 6)      # not symmetric: D ≠ Dᵀ

    a = f.clone().requires_grad_(True)
    (gram(a, mask) * weight).sum().backward()
    b = f.clone().requires_grad_(True)
    fb = b * mask if masked else b
    ref = torch.bmm(fb.reshape(2, 6, -1), fb.reshape(2, 6, -1).transpose(1, 2)) / 35
    if masked:
        ref = ref / mask.pow(2).mean(dim=(1, 2, 3)).view(2, 1, 1)
    (ref * weight).sum().backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    assert a.grad.abs().max() > 0.1


def test_gram_does_not_depend_on_image_size():
    """Tiling a feature map 2x2 repeats every position 4 times: the mean outer product,
    and so the Gram matrix, stays the same (the normalisation by H·W)."""
    f = torch.randn(1, 4, 3, 5)
    tiled = f.repeat(1, 1, 2, 2)
    assert torch.allclose(gram(tiled), gram(f), atol=1e-5)


# ----------------------------------------------------------------------------- content/style
def test_content_loss_by_hand():
    target = torch.tensor([1.0, 2.0, 2.0]).view(1, 3, 1, 1)   # ‖P‖² = 1 + 4 + 4 = 9
    feats = torch.tensor([1.0, 2.0, 5.0]).view(1, 3, 1, 1)    # ‖F − P‖² = 3² = 9
    assert content_loss(feats, target).item() == pytest.approx(1.0)
    assert content_loss(target, target).item() == 0.0


def test_content_loss_is_relative_squared_error():
    gen = torch.Generator().manual_seed(0)
    f, p = torch.randn(1, 8, 4, 4, generator=gen), torch.randn(1, 8, 4, 4, generator=gen)
    expected = sum((a - b) ** 2 for a, b in zip(f.flatten().tolist(), p.flatten().tolist())) \
        / sum(b ** 2 for b in p.flatten().tolist())
    assert content_loss(f, p).item() == pytest.approx(expected, rel=1e-5)
    # dimensionless: scaling both by the same factor changes nothing
    assert content_loss(f * 1000, p * 1000).item() == pytest.approx(expected, rel=1e-4)


def test_style_loss_by_hand():
    target = torch.tensor([[[7.5, 0.0], [0.0, 1.5]]])
    # G2 − A = [[0, 1.75], [1.75, 0]]: ‖·‖² = 2 · 1.75² = 6.125; ‖A‖² = 7.5² + 1.5² = 58.5
    assert style_loss(F2, target).item() == pytest.approx(6.125 / 58.5, rel=1e-6)
    assert style_loss(F2, G2).item() == pytest.approx(0.0, abs=1e-7)


# ----------------------------------------------------------------------------- total variation
IMG = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]]])   # 1x1x2x3
# horizontal differences: row 0: 1, 2; row 1: 0, 0     vertical differences: 2, 1, -1
# l1:      mean |dx| = 3/4,  mean |dy| = 4/3
# squared: mean dx²  = 5/4,  mean dy²  = 6/3


def test_tv_l1_by_hand():
    assert tv_loss(IMG, "l1").item() == pytest.approx(3 / 4 + 4 / 3)


def test_tv_squared_by_hand():
    assert tv_loss(IMG, "squared").item() == pytest.approx(5 / 4 + 2.0)
    assert tv_loss(IMG).item() == pytest.approx(5 / 4 + 2.0)   # the default


def test_tv_of_a_flat_image_is_zero_and_bad_norm_raises():
    flat = torch.full((1, 3, 5, 7), 0.3)
    assert tv_loss(flat, "l1").item() == 0.0
    assert tv_loss(flat, "squared").item() == 0.0
    with pytest.raises(ValueError):
        tv_loss(flat, "l2")


# ----------------------------------------------------------------------------- Objective
class TinyBackbone(nn.Module):
    """Two named 'layers' with trainable parameters (so a missing no_grad would show)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 5, 3, padding=1)

    def features(self, image, names):
        out = {}
        a = torch.relu(self.a(image))
        if "a" in names:
            out["a"] = a
        if "b" in names:
            out["b"] = torch.relu(self.b(torch.nn.functional.avg_pool2d(a, 2)))
        return out


def _img(seed, h=8, w=10):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def net():
    return TinyBackbone()


def test_objective_combines_weighted_terms(net):
    content, style, x = _img(1), _img(2), _img(3)
    obj = objective(net, content=content, styles=[style], content_layers=["b"],
                    style_layers=["a", "b"], content_weight=2.0, style_weight=5.0,
                    tv_weight=3.0, tv_norm="l1")
    total, terms = obj(x)
    with torch.no_grad():
        fx, fc, fs = (net.features(t, ["a", "b"]) for t in (x, content, style))
    c = content_loss(fx["b"], fc["b"])
    s = 0.5 * style_loss(fx["a"], gram(fs["a"])) + 0.5 * style_loss(fx["b"], gram(fs["b"]))
    tv = tv_loss(x, "l1")
    assert terms.tolist() == pytest.approx([c.item(), s.item(), tv.item()], rel=1e-5)
    assert total.item() == pytest.approx(2 * c.item() + 5 * s.item() + 3 * tv.item(), rel=1e-5)
    assert not terms.requires_grad


def test_layer_weights_are_normalised(net):
    content, style, x = _img(1), _img(2), _img(3)

    def losses_with(cw, sw):
        obj = objective(net, content=content, styles=[style], content_layers=["a", "b"],
                        content_layer_weights=cw, style_layers=["a", "b"],
                        style_layer_weights=sw)
        return obj(x)[1]

    equal = losses_with(None, None)
    assert torch.allclose(losses_with([1, 1], [1, 1]), equal)
    assert torch.allclose(losses_with([2, 2], [2, 2]), equal)
    assert torch.allclose(losses_with([0.1, 0.1], [7, 7]), equal, rtol=1e-5)
    # unequal weights: 1:3 is 0.25 and 0.75 of the per-layer losses
    with torch.no_grad():
        fx, fc, fs = (net.features(t, ["a", "b"]) for t in (x, content, style))
    c = 0.25 * content_loss(fx["a"], fc["a"]) + 0.75 * content_loss(fx["b"], fc["b"])
    s = 0.25 * style_loss(fx["a"], gram(fs["a"])) + 0.75 * style_loss(fx["b"], gram(fs["b"]))
    got = losses_with([1, 3], [2, 6])
    assert got[0].item() == pytest.approx(c.item(), rel=1e-5)
    assert got[1].item() == pytest.approx(s.item(), rel=1e-5)


def test_blend_of_styles_is_a_weighted_mean_of_grams(net):
    s1, s2, x = _img(4), _img(5), _img(6)
    with torch.no_grad():
        g1 = {k: gram(v) for k, v in net.features(s1, ["a", "b"]).items()}
        g2 = {k: gram(v) for k, v in net.features(s2, ["a", "b"]).items()}
    obj = objective(net, styles=[s1, s2], style_blend=[1, 3], style_layers=["a", "b"])
    for k in ("a", "b"):
        assert torch.allclose(obj.style_targets[0][k].gram, 0.25 * g1[k] + 0.75 * g2[k], rtol=1e-5)
    even = objective(net, styles=[s1, s2], style_layers=["a", "b"])
    for k in ("a", "b"):
        assert torch.allclose(even.style_targets[0][k].gram, 0.5 * (g1[k] + g2[k]), rtol=1e-5)
    # the loss is measured against the blended target
    with torch.no_grad():
        fx = net.features(x, ["a", "b"])
    expected = 0.5 * sum(style_loss(fx[k], 0.25 * g1[k] + 0.75 * g2[k]) for k in ("a", "b"))
    assert obj(x)[1][1].item() == pytest.approx(expected.item(), rel=1e-5)


def test_deep_layers_take_their_statistics_from_the_larger_copy_of_each_painting(net):
    s1, s2, big1, big2 = _img(4), _img(5), _img(7, 16, 20), _img(8, 16, 20)
    region = losses.Region(None, [s1, s2], [1, 3], deep_styles=[big1, big2], deep_layers=["b"])
    assert region.style_sources(["a", "b"]) == [(0.25, [(s1, ["a"]), (big1, ["b"])]),
                                                (0.75, [(s2, ["a"]), (big2, ["b"])])]
    assert region.style_sources(["a"]) == [(0.25, [(s1, ["a"])]), (0.75, [(s2, ["a"])])]
    with torch.no_grad():
        stats = {id(t): {k: gram(v) for k, v in net.features(t, ["a", "b"]).items()}
                 for t in (s1, s2, big1, big2)}
    for stat in ("gram", "sw"):
        obj = objective(net, regions=[region], style_layers=["a", "b"], style_stat=stat)
        tg = obj.style_targets[0]
        assert torch.allclose(tg["a"].gram, 0.25 * stats[id(s1)]["a"] + 0.75 * stats[id(s2)]["a"])
        assert torch.allclose(tg["b"].gram,
                              0.25 * stats[id(big1)]["b"] + 0.75 * stats[id(big2)]["b"])
    # without the larger copies every layer reads the paintings themselves
    plain = objective(net, regions=[losses.Region(None, [s1], deep_layers=["b"])], style_layers=["a", "b"])
    assert torch.allclose(plain.style_targets[0]["b"].gram, stats[id(s1)]["b"])


def test_targets_have_no_grad_but_the_image_does(net):
    content = _img(1).requires_grad_(True)
    style = _img(2).requires_grad_(True)
    obj = objective(net, content=content, styles=[style], content_layers=["b"],
                    style_layers=["a", "b"], tv_weight=1.0)
    for t in [*obj.content_targets.values(), *(s.gram for s in obj.style_targets[0].values())]:
        assert not t.requires_grad and t.grad_fn is None
    x = _img(3).requires_grad_(True)
    total, _ = obj(x)
    total.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert content.grad is None and style.grad is None


def test_terms_are_zero_where_there_is_nothing_to_match(net):
    x = _img(3)
    only_tv = objective(net, content=None, styles=(), content_layers=["a"], style_layers=["a"],
                        tv_weight=1.0)
    assert only_tv.layers == []
    total, terms = only_tv(x)
    assert terms[0].item() == 0.0 and terms[1].item() == 0.0
    assert total.item() == pytest.approx(tv_loss(x).item())


def test_content_and_style_losses_vanish_at_their_own_targets(vgg19, content_image, style_image):
    """With the real network: the content image has zero content loss, the style image zero
    style loss, and a different image does not."""
    from conftest import pil_to_tensor
    c, s = pil_to_tensor(content_image), pil_to_tensor(style_image)
    obj = objective(vgg19, content=c, styles=[s], content_layers=["relu4_2"],
                    style_layers=["relu1_1", "relu3_1", "relu5_1"])
    assert obj(c)[1][0].item() == pytest.approx(0.0, abs=1e-6)
    style_only = objective(vgg19, styles=[s], style_layers=["relu1_1", "relu3_1", "relu5_1"])
    assert style_only(s)[1][1].item() == pytest.approx(0.0, abs=1e-5)
    assert obj(c)[1][1].item() > 0.01                       # the photo is not the painting
    assert obj(torch.flip(c, [3]))[1][0].item() > 0.01     # a mirrored photo is not the photo


def test_normalised_helper():
    assert losses._normalised(None, 4) == [0.25] * 4
    assert losses._normalised([1, 0, 3], 3) == [0.25, 0.0, 0.75]
    assert losses._normalised([0, 0], 2) == [0.0, 0.0]


# ----------------------------------------------------------------------- guided Gram, W2, regions
from impasto.losses import Region, feature_mean, w2_style_loss  # noqa: E402


def test_guided_gram_with_an_all_ones_mask_is_the_gram():
    f = torch.randn(1, 3, 4, 5)
    assert torch.allclose(gram(f, torch.ones(1, 1, 4, 5)), gram(f), atol=1e-6)


def test_guided_gram_is_the_gram_of_the_masked_positions():
    f = torch.randn(1, 2, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])          # left column only
    left = f[..., :1]
    assert torch.allclose(gram(f, mask), gram(left), atol=1e-6)
    assert torch.allclose(feature_mean(f, mask), left.mean(dim=(2, 3)), atol=1e-6)


def test_w2_of_one_channel_gaussians_by_hand():
    # 1 channel: W2² = (μ1-μ2)² + (σ1-σ2)², relative to μ2² + σ2².
    x = torch.tensor([1.0, 3.0, 1.0, 3.0]).view(1, 1, 2, 2)    # μ 2, σ 1
    y = torch.tensor([4.0, 8.0, 4.0, 8.0]).view(1, 1, 2, 2)    # μ 6, σ 2
    mu_t = feature_mean(y)
    cov_t = gram(y) - mu_t.unsqueeze(2) * mu_t.unsqueeze(1)
    expected = ((2 - 6) ** 2 + (1 - 2) ** 2) / (6 ** 2 + 2 ** 2)
    assert w2_style_loss(x, mu_t, cov_t).item() == pytest.approx(expected, rel=1e-4)
    assert w2_style_loss(y, mu_t, cov_t).item() == pytest.approx(0.0, abs=1e-5)


def _tiny_net():
    class Net:
        def features(self, image, names):
            a = torch.nn.functional.avg_pool2d(image, 2)
            return {"a": image * 2.0, "b": a.relu() + 0.1}
    return Net()


def test_one_region_covering_everything_equals_the_unmasked_loss():
    net = _tiny_net()
    c, s, x = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    kw = dict(content=c, content_layers=["b"], style_layers=["a", "b"], tv_weight=0.5)
    plain, _ = objective(net, styles=[s], **kw)(x)
    masked, _ = objective(net, regions=[Region(torch.ones(1, 1, 8, 8), [s])], **kw)(x)
    assert masked.item() == pytest.approx(plain.item(), rel=1e-6)


def test_a_content_only_region_has_no_style_loss_and_halves_count_by_area():
    net = _tiny_net()
    s1, x = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    top = torch.zeros(1, 1, 8, 8)
    top[..., :4, :] = 1
    obj = objective(net, regions=[Region(top, [s1]), Region(1 - top, [])], style_layers=["a"])
    _, terms = obj(x)
    direct = style_loss(x * 2.0, obj.style_targets[0]["a"].gram,
                        torch.nn.functional.adaptive_avg_pool2d(top, (8, 8)))
    assert terms[1].item() == pytest.approx(0.5 * direct.item(), rel=1e-5)


def test_blend_weights_one_zero_equal_the_single_style_target():
    net = _tiny_net()
    s1, s2 = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    one = objective(net, styles=[s1], style_layers=["a", "b"])
    blend = objective(net, styles=[s1, s2], style_blend=[1, 0], style_layers=["a", "b"])
    for k in ("a", "b"):
        assert torch.equal(one.style_targets[0][k].gram, blend.style_targets[0][k].gram)


def test_w2_objective_runs_and_is_zero_at_the_style_itself():
    net = _tiny_net()
    s = torch.rand(1, 3, 8, 8)
    obj = objective(net, styles=[s], style_layers=["a", "b"], style_stat="w2")
    loss, _ = obj(s)
    assert loss.item() == pytest.approx(0.0, abs=1e-4)
    loss2, _ = obj(torch.rand(1, 3, 8, 8))
    assert loss2.item() > 1e-3


class CountingBackbone(TinyBackbone):
    """The tiny backbone, counting the images it is asked to look at."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def features(self, image, names):
        self.seen.append(image)
        return super().features(image, names)


def test_style_targets_are_computed_once_per_process_for_a_shared_painting():
    """Jobs that share a painting (a batch, a sweep, a Ray worker's later jobs) reuse its
    statistics; a different painting, other layers or another network compute their own."""
    net = CountingBackbone()
    style, other = _img(2), _img(5)
    kw = dict(style_layers=["a", "b"], content_weight=0.0, style_weight=1.0, tv_weight=0.0,
              tv_norm="l1")
    first = objective(net, styles=[style], **kw)
    again = objective(net, styles=[style.clone()], **kw)     # equal values, another tensor
    assert len(net.seen) == 1
    for k in ("a", "b"):
        assert torch.equal(first.style_targets[0][k].gram, again.style_targets[0][k].gram)
    objective(net, styles=[other], **kw)
    objective(net, styles=[style], **{**kw, "style_layers": ["a"]})
    assert len(net.seen) == 3
    fresh = CountingBackbone()
    objective(fresh, styles=[style], **kw)
    assert len(fresh.seen) == 1
    x = _img(3)
    assert first(x)[0].item() == pytest.approx(objective(fresh, styles=[style], **kw)(x)[0].item())


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_self_product_grad_of_a_crop_equals_autograd(layout):
    """The tiles' written-out gradient (``self_product_grad``) on a tile's interior, a crop
    of the map in either layout, equals autograd through the plain product, and comes back
    in the crop's layout."""
    from impasto.losses import self_product, self_product_grad
    torch.manual_seed(1)
    f = torch.randn(1, 5, 9, 11)
    if layout == "channels_last":
        f = f.contiguous(memory_format=torch.channels_last)
    crop = f[..., 2:7, 3:10]
    d = torch.randn(1, 5, 5)
    a = crop.detach().clone().requires_grad_(True)
    (torch.bmm(a.reshape(1, 5, -1), a.reshape(1, 5, -1).transpose(1, 2)) * d).sum().backward()
    got = self_product_grad(crop, d)
    assert torch.allclose(got, a.grad, rtol=1e-5, atol=1e-5)
    assert (got.stride(1) == 1) == (layout == "channels_last")
    ref = torch.bmm(crop.reshape(1, 5, -1), crop.reshape(1, 5, -1).transpose(1, 2))
    assert torch.allclose(self_product(crop), ref, rtol=1e-5, atol=1e-5)
