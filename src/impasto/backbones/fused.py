"""A 3x3 convolution and the ReLU after it in one oneDNN call, on a CPU.

Eager PyTorch runs the ReLU as a pass of its own over the convolution's output: at 2048x1536
a 64-channel map is 400 MB in bf16, and on a 2-core CPU that pass took 100 ms against 175 ms
for the convolution itself. oneDNN applies the ReLU as the convolution writes its output
(``mkldnn::_convolution_pointwise``, what torch.compile's CPU backend emits). The backward
pass is the usual one: ReLU's (from the output) then the convolution's input gradient.
"""
from __future__ import annotations

import torch

_OP = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)


def available(x: torch.Tensor, conv, dtype=None) -> bool:
    """Whether ``conv`` (3x3, stride 1, padding 1, frozen) then ReLU can run fused on ``x``:
    a channels_last CPU tensor, computed in float32 or bfloat16 (``dtype``, the autocast
    dtype; None: x's own), with oneDNN present."""
    return (_OP is not None and torch.backends.mkldnn.is_available() and x.device.type == "cpu"
            and (dtype or x.dtype) in (torch.float32, torch.bfloat16)
            and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
            and not conv.weight.requires_grad and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1)


def conv_relu(x: torch.Tensor, conv, dtype=None) -> torch.Tensor:
    """relu(conv(x)), computed in ``dtype`` (the autocast dtype; None: x's own)."""
    dtype = dtype or x.dtype
    return _ConvReLU.apply(x.to(dtype), conv.weight.to(dtype), conv.bias.to(dtype))


class _ConvReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        y = _OP(x, weight, bias, [1, 1], [1, 1], [1, 1], 1, "relu", [], "")
        ctx.save_for_backward(x, weight, y)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, y = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        g = torch.ops.aten.threshold_backward(grad, y, 0)
        gx = torch.ops.aten.convolution_backward(
            g, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
            [True, False, False])[0]
        return gx, None, None
