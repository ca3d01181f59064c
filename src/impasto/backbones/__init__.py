"""Backbones: named-layer feature extractors and their weights.

Every model has the same interface (``features(image, names) -> {name: tensor}``, an RGB image
in [0, 1]), paper-style layer names, default content and style layers, and is built only up to
the deepest layer a run uses. The VGGs are written here (``vgg.py``); ResNet-50, Inception v3
and MobileNet v2 come from torchvision (``torchvision_models.py``, ``pip install impasto[models]``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..errors import UserError, closest
from . import torchvision_models as tvm
from . import vgg, weights


@dataclass(frozen=True)
class Model:
    arch: str                 # vgg19, vgg16, resnet50, inception_v3, mobilenet_v2
    content: tuple            # default content layers
    style: tuple              # default style layers
    caffe: bool = False       # VGG only: the Caffe input convention
    torchvision: bool = False  # the architecture comes from torchvision

    @property
    def is_vgg(self) -> bool:
        return self.arch in vgg.BLOCKS


# Default layers. VGG: Gatys et al.'s, content relu4_2 (stride 8) and style relu1_1 ... relu5_1,
# the first layer at each resolution (stride 1 to 16). The other networks follow the same rule
# by resolution: style takes the first layer after a nonlinearity at each stride from 2 to 16
# (ResNet's relu1 rather than its bare conv1; never a pooling layer, which only subsamples the
# layer before it), content the last layer at stride 8, as deep as a layer gets at relu4_2's
# resolution. Stride 32 (res5, mixed7, block14 and up) is left out: at the 128 px coarse scale
# it has at most 4x4 positions for up to 2048 channels, too few for a Gram matrix. Only the VGG
# defaults have been judged on real weights; the others await a run with ImageNet weights.
VGG_CONTENT = ("relu4_2",)
VGG_STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
MODELS = {
    "vgg19": Model("vgg19", VGG_CONTENT, VGG_STYLE, caffe=True),
    "vgg19-torchvision": Model("vgg19", VGG_CONTENT, VGG_STYLE),
    "vgg16": Model("vgg16", VGG_CONTENT, VGG_STYLE),
    "resnet50": Model("resnet50", ("res3d",), ("relu1", "res2a", "res3a", "res4a"),
                      torchvision=True),
    "inception_v3": Model("inception_v3", ("mixed5d",), ("conv1a", "conv3b", "mixed5b", "mixed6a"),
                          torchvision=True),
    "mobilenet_v2": Model("mobilenet_v2", ("block6",), ("conv1", "block2", "block4", "block7"),
                          torchvision=True),
}


def spec(model: str) -> Model:
    if model not in MODELS:
        raise UserError(f"option --model: unknown model '{model}' (did you mean "
                        f"'{closest(model, MODELS)}'? models: {', '.join(MODELS)})")
    return MODELS[model]


def arch_of(model: str) -> str:
    return spec(model).arch


def layers(model: str) -> list[str]:
    """Every layer name of ``model``, in order."""
    m = spec(model)
    return vgg.layer_names(vgg.BLOCKS[m.arch]) if m.is_vgg else tvm.layer_names(m.arch)


def default_layers(model: str) -> tuple[list, list]:
    """The default (content layers, style layers) of ``model``."""
    m = spec(model)
    return list(m.content), list(m.style)


def check_layers(model: str, names, option: str = "layers") -> None:
    """UserError naming the closest valid layer for any unknown name."""
    m = spec(model)
    if m.is_vgg:
        return vgg.check_layers(names, m.arch, option)
    valid = layers(model)
    for n in names:
        if n not in valid:
            raise UserError(f"option --{option}: unknown layer '{n}' for {model} (did you mean "
                            f"'{closest(n, valid)}'? layers: {valid[0]} ... {valid[-1]}; "
                            f"'impasto layers --model {model}' lists them)")


def deepest(model: str, names) -> str:
    """The layer of ``names`` that comes last in ``model``."""
    return max(names, key=layers(model).index)


def _out_side(n: int, ops) -> int:
    for k, s, p in ops:
        n = (n + 2 * p - k) // s + 1 if n + 2 * p >= k else 0
    return n


def _chain(arch: str, last: str) -> list:
    ops, names = tvm.spatial_ops(arch), tvm.layer_names(arch)
    return [op for name in names[: names.index(last) + 1] for op in ops[name]]


def out_side(model: str, name: str, side: int) -> int:
    """The side of layer ``name``'s output for an input side of ``side`` pixels (torchvision
    models, from their table of kernels, strides and paddings); 0: too small."""
    return _out_side(side, _chain(arch_of(model), name))


def stride(model: str, name: str) -> int:
    """How many input pixels one position of layer ``name``'s map spans (1, 2, 4, 8 ...)."""
    names = layers(model)
    if spec(model).is_vgg:
        return 2 ** sum(n.startswith("pool") for n in names[: names.index(name) + 1])
    return round(4096 / out_side(model, name, 4096))


@functools.lru_cache(maxsize=None)
def _min_side(arch: str, last: str) -> int:
    chain, n = _chain(arch, last), 1
    while _out_side(n, chain) < 1:
        n += 1
    return n


def min_side(model: str, names) -> int:
    """The smallest image side (pixels) for which every layer in ``names`` is at least 1x1."""
    m = spec(model)
    if m.is_vgg:
        return vgg.min_side(names, m.arch)
    return _min_side(m.arch, deepest(model, names))


def profile(model: str, last: str, hw) -> tuple[float, float]:
    """(forward conv FLOPs, activation elements) up to ``last`` for an (H, W) input; the
    torchvision models only (a dry run on the meta device)."""
    return tvm.profile(arch_of(model), last, hw)


def check_available(model: str, weights_path: str | None = None) -> None:
    """UserError now if ``model`` cannot be built: torchvision missing, or no weights file."""
    if not spec(model).is_vgg:
        tvm.import_torchvision(model)
    weights.locate(model, weights_path)


def build(model: str, used_layers, pooling: str = "max", weights_path: str | None = None,
          device: torch.device | str = "cpu"):
    """A frozen backbone that computes ``used_layers`` and nothing deeper, and its weights id."""
    m = spec(model)
    check_layers(model, used_layers)
    last = deepest(model, used_layers)
    if m.is_vgg:
        net = vgg.VGG(m.arch, caffe=m.caffe, pooling=pooling, last=last)
        state, weights_id = weights.load(model, vgg.BLOCKS[m.arch], weights_path)
        net.load_weights(state, weights_path or model)
    else:
        if pooling != "max":
            raise UserError(f"option --pooling: {pooling} pooling is for the VGG models only; "
                            f"{model} keeps its own pooling")
        tvm.import_torchvision(model)            # the one-line error before any download
        state, weights_id, source = weights.load_raw(model, weights_path)
        net = tvm.build(m.arch, last, state, source)
    net.model = model
    net.eval().requires_grad_(False)
    return net.to(device), weights_id
