"""A stage's tail kept compact (ReLU masks as bits, max pooling's choices as bytes) gives the
gradient autograd gives through the same layers, in float32 and bfloat16, on maps whose
sides are odd (the pooling drops the last row and column)."""
from __future__ import annotations

import copy

import pytest
import torch

from impasto import compact


def test_bits_round_trip():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(2, 24, 5, 7, generator=g) > 0.5).contiguous(
        memory_format=torch.channels_last)
    bits = compact.pack(mask)
    assert bits.dtype == torch.uint8 and bits.shape == (2, 5, 7, 3)
    back = compact.unpack(bits)
    assert back.shape == mask.shape and torch.equal(back.bool(), mask)
    # in the contiguous layout too
    assert torch.equal(compact.unpack(compact.pack(mask.contiguous())).bool(), mask)


@pytest.fixture(scope="module")
def nets(vgg19):
    """The real VGG19 in float32 and under bfloat16 autocast, channels_last as runs have it,
    and in float32 with average pooling (``--pooling avg``)."""
    avg = copy.deepcopy(vgg19).set_precision(None)
    avg.pooling = "avg"
    return {torch.float32: copy.deepcopy(vgg19).set_precision(None),
            torch.bfloat16: copy.deepcopy(vgg19).set_precision(torch.bfloat16), "avg": avg}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, "avg"])
@pytest.mark.parametrize("first,last,hw", [("conv3_2", "pool3", (13, 11)),
                                            ("relu4_2", "pool4", (9, 10)),
                                            ("conv2_1", "pool2", (12, 15))])
def test_the_tail_gradient_is_autograds(nets, dtype, first, last, hw):
    net = nets[dtype]
    start, stop = net.names.index(first), net.names.index(last) + 1
    cin = net.convs[first].in_channels if first.startswith("conv") else \
        net.convs[first.replace("relu", "conv")].out_channels
    g = torch.Generator().manual_seed(1)
    # the previous layer's output: a ReLU's, zeros included (ties at 0 in the pooling)
    x = torch.relu(torch.randn(1, cin, *hw, generator=g)).to(
        torch.float32 if dtype == "avg" else dtype).contiguous(
        memory_format=torch.channels_last)
    leaf = x.clone().requires_grad_(True)
    ref = net.segment(leaf, start, stop, [last])[last]
    out, saved, read = compact.forward(net, x, start, stop)
    assert read == {}
    assert torch.equal(out, ref.detach())
    gout = torch.randn(ref.shape, generator=g).to(ref.dtype)
    ref.backward(gout)
    got = compact.backward(gout, saved)
    assert saved == []
    assert got.shape == x.shape
    scale = leaf.grad.float().abs().max()
    assert scale > 0
    err = (got.float() - leaf.grad.float()).abs().max() / scale
    assert err < (1e-2 if dtype == torch.bfloat16 else 1e-6), err


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("first,last,reads,hw", [
    ("conv1_2", "pool2", ["relu2_1"], (18, 22)),              # the first stage's early tail
    ("conv4_1", "pool4", ["relu4_1", "conv4_2"], (9, 10)),    # a conv read: not fused
    ("conv3_1", "pool3", ["relu3_1", "pool3"], (13, 11))])    # the output itself read
def test_the_tail_gradient_with_layers_read_in_it_is_autograds(nets, dtype, first, last, reads,
                                                               hw):
    """A tail that starts before layers the objective reads (``tiled``'s early tails) keeps
    their maps and adds their loss gradient where the backward pass reaches them: the
    gradient of ⟨gout, out⟩ + Σ ⟨w_n, f_n⟩ that autograd computes through the same layers."""
    net = nets[dtype]
    start, stop = net.names.index(first), net.names.index(last) + 1
    cin = net.convs[first].in_channels
    g = torch.Generator().manual_seed(2)
    x = torch.relu(torch.randn(1, cin, *hw, generator=g)).to(dtype).contiguous(
        memory_format=torch.channels_last)
    leaf = x.clone().requires_grad_(True)
    ref = net.segment(leaf, start, stop, reads + [last])
    out, saved, read = compact.forward(net, x, start, stop, reads)
    assert torch.equal(out, ref[last].detach())
    assert sorted(read) == sorted(reads)
    for n in reads:
        assert torch.allclose(read[n].float(), ref[n].detach().float(), rtol=1e-2, atol=1e-2)
    weights = {n: torch.randn(ref[n].shape, generator=g) for n in reads}
    gout = torch.randn(ref[last].shape, generator=g).to(ref[last].dtype)
    total = (ref[last].float() * gout.float()).sum() + sum(
        (ref[n].float() * weights[n]).sum() for n in reads)
    total.backward()
    seen = []

    def read_grad(n, f, g):
        seen.append(n)
        assert f is read[n] and g.shape == f.shape
        return g + weights[n].to(g.dtype)
    got = compact.backward(gout, saved, read_grad)
    assert sorted(seen) == sorted(reads) and saved == []
    scale = leaf.grad.float().abs().max()
    err = (got.float() - leaf.grad.float()).abs().max() / scale
    assert err < (2e-2 if dtype == torch.bfloat16 else 1e-5), err


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("hw", [(12, 16), (13, 11)])
def test_a_relus_16_bit_map_pools_as_integers_as_max_pooling_does(dtype, hw):
    """``_pool``'s integer path for a ReLU's 16-bit output: the values max pooling gives and,
    in each window whose maximum is positive, the first position holding it (ties included,
    -0 anywhere); 4 where the maximum is +0 or -0 (the ReLU passes no gradient there)."""
    g = torch.Generator().manual_seed(3)
    x = torch.relu(torch.randn(2, 16, *hw, generator=g)).to(dtype)
    hh, ww = hw[0] // 2 * 2, hw[1] // 2 * 2
    x[:, :8, 0:hh:2, 1:ww:2] = x[:, :8, 0:hh:2, 0:ww:2]     # ties: positions 0 and 1
    x[:, 8:12, 1:hh:2, 1:ww:2] = x[:, 8:12, 1:hh:2, 0:ww:2]  # and 2 and 3
    x[..., 1::4, 1::3] = -0.0
    x[..., :4, :4] = 0.0
    x[..., 2:4, 0:2] = -0.0                             # a window of +0 and -0 only
    x = x.contiguous(memory_format=torch.channels_last)
    out, code = compact._pool(x, relu=True)
    ref, idx = torch.nn.functional.max_pool2d_with_indices(x.float(), 2, 2)
    assert torch.equal(out.float(), ref)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    assert code.dtype == torch.int8
    w = x.shape[-1]
    first = (idx // w % 2) * 2 + idx % w % 2           # the position max pooling chose
    positive = ref > 0
    assert positive.any() and (~positive).any()
    assert torch.equal(code[positive].long(), first[positive])
    assert bool((code[~positive] == 4).all())
    # the float path, where every window with nothing positive gets 4 too
    assert torch.equal(code, compact._pool(x, empty=True)[1])
