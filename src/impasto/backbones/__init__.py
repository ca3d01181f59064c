"""Backbones: named-layer feature extractors and their weights."""
from __future__ import annotations

import torch

from ..errors import UserError
from . import vgg, weights

MODELS = {
    # name: (architecture, Caffe input convention)
    "vgg19": ("vgg19", True),
    "vgg19-torchvision": ("vgg19", False),
    "vgg16": ("vgg16", False),
}


def arch_of(model: str) -> str:
    if model not in MODELS:
        from ..errors import closest
        raise UserError(f"option --model: unknown model '{model}' (did you mean "
                        f"'{closest(model, MODELS)}'? models: {', '.join(MODELS)})")
    return MODELS[model][0]


def layers(model: str) -> list[str]:
    """Every layer name of ``model``, in order."""
    return vgg.layer_names(vgg.BLOCKS[arch_of(model)])


def check_layers(model: str, names, option: str = "layers") -> None:
    vgg.check_layers(names, arch_of(model), option)


def deepest(model: str, names) -> str:
    """The layer of ``names`` that comes last in ``model``."""
    return max(names, key=layers(model).index)


def min_side(model: str, names) -> int:
    return vgg.min_side(names, arch_of(model))


def build(model: str, used_layers, pooling: str = "max", weights_path: str | None = None,
          device: torch.device | str = "cpu"):
    """A frozen backbone that computes ``used_layers`` and nothing deeper, and its weights id."""
    arch = arch_of(model)
    check_layers(model, used_layers)
    net = vgg.VGG(arch, caffe=MODELS[model][1], pooling=pooling, last=deepest(model, used_layers))
    state, weights_id = weights.load(model, vgg.BLOCKS[arch], weights_path)
    net.load_weights(state, weights_path or model)
    net.eval().requires_grad_(False)
    return net.to(device), weights_id
