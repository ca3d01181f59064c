"""VGG networks with the paper's layer names (conv1_1, relu1_1, ..., pool5).

The network is built only up to the deepest layer a run asks for, so nothing past it is
computed or held in memory.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import fused
from .base import Backbone
from ..errors import UserError, closest

BLOCKS = {"vgg19": (2, 2, 4, 4, 4), "vgg16": (2, 2, 3, 3, 3)}

# Input conventions. Caffe VGG: BGR, 0-255, minus the per-channel mean.
# torchvision VGG: RGB, 0-1, ImageNet mean and std.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def channels(name: str) -> int:
    """The channels of a VGG layer's output (conv3_1, relu3_1, pool3: block 3's 256): 64 in
    the first block, doubling with each block, at most 512."""
    return min(64 * 2 ** (int(name[4]) - 1), 512)


def layer_names(blocks) -> list[str]:
    names = []
    for b, n in enumerate(blocks, start=1):
        for i in range(1, n + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return names


class VGG(Backbone):
    """A VGG feature extractor up to ``last`` with named layers.

    ``features(image, names)`` takes an RGB image in [0, 1] and returns the activations of the
    requested layers by name.
    """

    def __init__(self, arch: str, caffe: bool, pooling: str = "max", last: str | None = None):
        super().__init__()
        self.arch, self.caffe, self.pooling = arch, caffe, pooling
        self.blocks = BLOCKS[arch]
        all_names = layer_names(self.blocks)
        last = last or all_names[-1]
        self.names = all_names[: all_names.index(last) + 1]
        self.convs = nn.ModuleDict()
        cin = 3
        for name in self.names:
            if name.startswith("conv"):
                self.convs[name] = nn.Conv2d(cin, channels(name), 3, padding=1)
                cin = channels(name)
        if caffe:
            mean = torch.tensor(CAFFE_MEAN_BGR).flip(0).view(1, 3, 1, 1) / 255.0
            std = torch.full((1, 3, 1, 1), 1.0 / 255.0)
        else:
            mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.autocast_dtype = None  # set by set_precision
        self.fuse_relu = True       # backbones.fused where it applies (off: eager conv, ReLU)

    def load_weights(self, state_dict: dict, source: str) -> None:
        wanted = {f"{n}.{p}" for n in self.convs for p in ("weight", "bias")}
        missing = sorted(wanted - set(state_dict))
        if missing:
            raise UserError(f"{source}: weights for {missing[0]} are missing (is it a "
                            f"{self.arch} state dict?)")
        for name, conv in self.convs.items():
            w, b = state_dict[f"{name}.weight"], state_dict[f"{name}.bias"]
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise UserError(f"{source}: {name} has shape {tuple(w.shape)}, {self.arch} needs "
                                f"{tuple(conv.weight.shape)} (is it a {self.arch} state dict?)")
            conv.weight = nn.Parameter(w.float(), requires_grad=False)
            conv.bias = nn.Parameter(b.float(), requires_grad=False)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - self.mean) / self.std
        return x.flip(1) if self.caffe else x

    def features(self, image: torch.Tensor, names) -> dict:
        wanted = set(names)
        x, deepest = self._input(image, wanted)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            return self._run(x, wanted, deepest)

    def segment(self, x: torch.Tensor, start: int, stop: int, names) -> dict:
        """The layers ``self.names[start:stop]`` applied to ``x``: the RGB image when ``start``
        is 0, else the output of layer ``start - 1``; returns those of ``names`` (a staged,
        tiled evaluation runs the network a piece at a time)."""
        if start == 0:
            x = self.preprocess(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            return self._run(x, set(names), stop - 1, start)

    def _run(self, x, wanted, deepest, start=0):
        out, relu_done = {}, False
        names = self.names[start: deepest + 1]
        for i, name in enumerate(names):
            if name.startswith("conv"):
                # with the ReLU after it in one call, where the conv's own output is not wanted
                relu_done = (self.fuse_relu and name not in wanted and i + 1 < len(names)
                             and fused.available(x, self.convs[name], self.autocast_dtype))
                x = fused.conv_relu(x, self.convs[name], self.autocast_dtype) if relu_done \
                    else self.convs[name](x)
            elif name.startswith("relu"):
                if not relu_done:
                    x = F.relu(x)
                relu_done = False
            elif self.pooling == "max":
                x = F.max_pool2d(x, 2, 2)
            else:
                x = F.avg_pool2d(x, 2, 2)
            if name in wanted:
                out[name] = x
        return out


def check_layers(names, arch: str, option: str = "layers") -> None:
    """UserError naming the closest valid layer for any unknown name."""
    valid = layer_names(BLOCKS[arch])
    for n in names:
        if n not in valid:
            raise UserError(f"option --{option}: unknown layer '{n}' for {arch} "
                            f"(did you mean '{closest(n, valid)}'? layers: conv1_1 ... pool5)")


def min_side(names, arch: str) -> int:
    """The smallest image side (pixels) for which every layer in ``names`` is at least 1x1."""
    valid = layer_names(BLOCKS[arch])
    deepest = max(valid.index(n) for n in names)
    pools = sum(1 for n in valid[: deepest + 1] if n.startswith("pool"))
    return 2 ** pools
