"""The fused convolution + ReLU (backbones/fused.py) against eager conv then ReLU."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from impasto.backbones import fused, vgg


def frozen_conv(cin=8, cout=16):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, 3, padding=1)
    for p in conv.parameters():
        p.requires_grad_(False)
    return conv


@pytest.mark.skipif(fused._OP is None or not torch.backends.mkldnn.is_available(),
                    reason="this torch has no oneDNN pointwise convolution")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_conv_relu_equals_conv_then_relu_with_its_input_gradient(dtype):
    conv = frozen_conv()
    x = torch.randn(2, 8, 11, 13).contiguous(memory_format=torch.channels_last)
    assert fused.available(x, conv)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    weight = torch.randn(2, 16, 11, 13)
    y = fused.conv_relu(a, conv, dtype)
    ref = F.relu(F.conv2d(b.to(dtype), conv.weight.to(dtype), conv.bias.to(dtype), padding=1))
    assert y.dtype == dtype and (y == 0).any() and (y > 0).any()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    assert torch.allclose(y.float(), ref.float(), **tol)
    (y.float() * weight).sum().backward()
    (ref.float() * weight).sum().backward()
    assert a.grad.abs().max() > 0
    assert torch.allclose(a.grad.float(), b.grad.float(), **tol)


def test_fusion_only_where_it_applies():
    conv = frozen_conv()
    x = torch.randn(1, 8, 5, 5)
    assert not fused.available(x, conv)                 # not channels_last
    xl = x.contiguous(memory_format=torch.channels_last)
    conv.weight.requires_grad_(True)
    assert not fused.available(xl, conv)                # weights being trained
    conv.weight.requires_grad_(False)
    strided = nn.Conv2d(8, 16, 3, padding=1, stride=2).requires_grad_(False)
    assert not fused.available(xl, strided)
    assert not fused.available(xl, conv, torch.float16)  # oneDNN's CPU fusion: fp32, bf16
    assert not fused.available(xl.half(), conv)


def test_vgg_features_are_the_same_fused_or_not_and_a_wanted_conv_is_not_fused():
    torch.manual_seed(0)
    net = vgg.VGG("vgg19", caffe=True, last="conv3_1").set_precision(None)   # random weights
    for p in net.parameters():
        p.requires_grad_(False)
    image = torch.rand(1, 3, 32, 40)
    names = ["conv1_2", "relu1_2", "relu2_1", "conv3_1"]
    out = {}
    for fuse in (False, True):
        net.fuse_relu = fuse
        x = image.clone().requires_grad_(True)
        feats = net.features(x, names)
        sum(f.float().sum() for f in feats.values()).backward()
        out[fuse] = (feats, x.grad)
    assert (out[True][0]["conv1_2"] < 0).any()          # the conv's own output, not ReLU'd
    close = lambda a, b: float((a - b).abs().max() / b.abs().max()) < 1e-5   # noqa: E731
    out = {k: ({n: f.detach() for n, f in feats.items()}, g) for k, (feats, g) in out.items()}
    for n in names:
        assert close(out[True][0][n], out[False][0][n]), n
    assert close(out[True][1], out[False][1])
