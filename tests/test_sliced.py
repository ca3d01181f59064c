"""The sliced Wasserstein style loss against values worked out by hand on tiny tensors."""
from __future__ import annotations

import pytest
import torch

from impasto import sliced
from impasto.losses import Objective, Region


def feats(values):
    """(1, C, 1, N) features from a (C, N) list."""
    t = torch.tensor(values, dtype=torch.float32)
    return t.reshape(1, t.shape[0], 1, t.shape[1])


def test_identical_distributions_cost_nothing():
    f = torch.randn(1, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    dirs = sliced.directions(4, 4, torch.Generator().manual_seed(1))
    assert sliced.sw_loss(f, f, dirs).item() == pytest.approx(0.0, abs=1e-10)
    # the same samples in another order are the same distribution
    shuffled = f.reshape(1, 4, -1)[..., torch.randperm(30)].reshape(1, 4, 5, 6)
    assert sliced.sw_loss(f, shuffled, dirs).item() == pytest.approx(0.0, abs=1e-10)


def test_a_known_shift_by_hand():
    """Target: values 0, 1, 2, 3 along one channel; output: the same shifted by 0.5. Along the
    one direction (1,) the sorted values differ by 0.5 each: distance 0.25, over the target's
    mean square (0 + 1 + 4 + 9) / 4 = 3.5."""
    target = feats([[0.0, 1.0, 2.0, 3.0]])
    out = feats([[3.5, 0.5, 2.5, 1.5]])
    dirs = torch.ones(1, 1)
    assert sliced.sw_loss(out, target, dirs).item() == pytest.approx(0.25 / 3.5)
    # in two channels, along the diagonal: a shift by (0.5, 0.5) moves every projection by
    # (0.5 + 0.5)/√2; the target's projections are 0 and √2
    t2 = feats([[0.0, 1.0], [0.0, 1.0]])
    o2 = feats([[0.5, 1.5], [0.5, 1.5]])
    diag = torch.tensor([[1.0], [1.0]]) / 2 ** 0.5
    shift = 1.0 / 2 ** 0.5
    energy = (0.0 + (2 / 2 ** 0.5) ** 2) / 2
    assert sliced.sw_loss(o2, t2, diag).item() == pytest.approx(shift ** 2 / energy)


def test_different_sample_counts():
    """The style's quantile function is read at the output's sample levels: a target with every
    sample twice is the same distribution; a target with half the samples is interpolated."""
    out = feats([[0.0, 1.0, 2.0, 3.0]])
    twice = feats([[0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]])
    dirs = torch.ones(1, 1)
    assert sliced.sw_loss(out, twice, dirs).item() == pytest.approx(0.0, abs=1e-12)
    # target 0, 2 at levels 0.25, 0.75; output levels 0.125 .. 0.875 read 0 (clamped), 0.5,
    # 1.5, 2 (clamped): squared differences 0, 0.25, 0.25, 1 -> mean 0.375; energy (0 + 4) / 2
    half = feats([[0.0, 2.0]])
    assert sliced.sw_loss(out, half, dirs).item() == pytest.approx(0.375 / 2.0)


def test_a_mask_over_everything_changes_nothing():
    g = torch.Generator().manual_seed(3)
    f, t = torch.randn(1, 3, 4, 5, generator=g), torch.randn(1, 3, 6, 2, generator=g)
    dirs = sliced.directions(3, 8, torch.Generator().manual_seed(4))
    plain = sliced.sw_loss(f, t, dirs)
    masked = sliced.sw_loss(f, t, dirs, mask=torch.ones(1, 1, 4, 5))
    assert masked.item() == pytest.approx(plain.item(), rel=1e-6)
    # a mask that keeps half of the positions measures those alone
    half = torch.zeros(1, 1, 4, 5)
    half[..., :2, :] = 1.0
    kept = sliced.sw_loss(f[..., :2, :], t, dirs)
    assert sliced.sw_loss(f, t, dirs, mask=half).item() == pytest.approx(kept.item(), rel=1e-5)


def test_the_objective_with_sw_regions_covering_everything(vgg19):
    """SW with one region covering the image equals SW without regions (same directions)."""
    from conftest import pil_to_tensor, synthetic
    c, s, x = (pil_to_tensor(synthetic(48, 40, seed=k)) for k in (1, 2, 3))
    kw = dict(content=c, content_layers=["relu2_2"], style_layers=["relu1_1", "relu2_1"],
              style_stat="sw", content_weight=1.0, style_weight=10.0, tv_weight=0.0,
              tv_norm="squared")
    torch.manual_seed(5)
    plain = Objective(vgg19, regions=[Region(None, [s])], **kw)(x)[0]
    torch.manual_seed(5)
    masked = Objective(vgg19, regions=[Region(torch.ones(1, 1, 40, 48), [s])], **kw)(x)[0]
    assert masked.item() == pytest.approx(plain.item(), rel=1e-5)
    assert plain.item() > 0
    xi = x.clone().requires_grad_(True)
    Objective(vgg19, regions=[Region(None, [s])], **kw)(xi)[0].backward()
    assert xi.grad.abs().sum() > 0


def test_sw_is_refused_in_tiles(vgg19):
    from impasto import tiled
    from impasto.errors import UserError
    with pytest.raises(UserError, match="cannot be evaluated in tiles"):
        tiled.TiledObjective(vgg19, tile=32, style_stat="sw", content_weight=1.0,
                             style_weight=1.0, tv_weight=0.0, tv_norm="squared")


def test_a_channels_last_map_is_read_in_place_with_the_same_loss_and_gradient():
    """fp32 feature maps on a CPU are channels_last: the loss reads them without a copy and
    gives what the contiguous map gives, gradient included."""
    from impasto.sliced import SlicedTarget, _by_channel, directions
    g = torch.Generator().manual_seed(3)
    f = torch.randn(1, 8, 5, 7, generator=g)
    target = SlicedTarget([(torch.randn(8, 30, generator=g), 1.0)])
    dirs = directions(8, 8, torch.Generator().manual_seed(4))
    last = f.contiguous(memory_format=torch.channels_last)
    view = _by_channel(last)
    assert view.data_ptr() == last.data_ptr() and torch.equal(view, f.reshape(8, -1))
    a, b = f.clone().requires_grad_(), last.clone().requires_grad_()
    la, lb = target.loss(a, dirs), target.loss(b, dirs)
    la.backward(), lb.backward()
    assert torch.allclose(la, lb, rtol=1e-6) and torch.allclose(a.grad, b.grad, atol=1e-7)
