"""ResNet-50, Inception v3 and MobileNet v2 from torchvision, with paper-style layer names.

The architectures come from ``torchvision.models`` (the optional extra ``impasto[models]``);
this module only names their layers, truncates them after the deepest layer a run uses and
gives them the interface of :class:`impasto.backbones.vgg.VGG`: ``features(image, names)``
takes an RGB image in [0, 1], shape (1, 3, H, W), and returns ``{name: activation}``.

Layer names (each is the output of the named torchvision module, in forward order):

* resnet50 (Caffe ResNet names): ``conv1`` (conv1 + bn1), ``relu1``, ``pool1`` (maxpool),
  ``res2a … res2c`` (layer1[0..2]), ``res3a … res3d`` (layer2), ``res4a … res4f`` (layer3),
  ``res5a … res5c`` (layer4); a ``resXY`` layer is the output of its bottleneck block,
  after the residual sum and its ReLU.
* inception_v3 (the TF-slim names, lower case): ``conv1a`` (Conv2d_1a_3x3), ``conv2a``,
  ``conv2b``, ``pool1`` (maxpool1), ``conv3b``, ``conv4a``, ``pool2``, ``mixed5b … mixed5d``,
  ``mixed6a … mixed6e``, ``mixed7a … mixed7c``; each conv is conv + batch norm + ReLU.
* mobilenet_v2: ``conv1`` (features.0, conv + bn + ReLU6), ``block1 … block17``
  (features.1 … features.17, the inverted residual blocks; their outputs are the linear
  bottlenecks, without a ReLU), ``conv2`` (features.18, the last 1x1 conv + bn + ReLU6).
"""
from __future__ import annotations

import contextlib
import importlib

import torch
import torch.nn as nn

from .base import Backbone
from ..errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _resnet50_layers():
    """(name, torchvision module path, output channels, spatial ops (kernel, stride, padding))."""
    out = [("conv1", "conv1+bn1", 64, [(7, 2, 3)]), ("relu1", "relu", 64, []),
           ("pool1", "maxpool", 64, [(3, 2, 1)])]
    for stage, (blocks, ch) in enumerate(((3, 256), (4, 512), (6, 1024), (3, 2048)), start=2):
        for i in range(blocks):
            # torchvision's ResNet v1.5: the 3x3 conv of a stage's first block has stride 2
            ops = [(3, 2, 1)] if i == 0 and stage > 2 else []
            out.append((f"res{stage}{'abcdef'[i]}", f"layer{stage - 1}.{i}", ch, ops))
    return out


def _inception_v3_layers():
    return [
        ("conv1a", "Conv2d_1a_3x3", 32, [(3, 2, 0)]),
        ("conv2a", "Conv2d_2a_3x3", 32, [(3, 1, 0)]),
        ("conv2b", "Conv2d_2b_3x3", 64, [(3, 1, 1)]),
        ("pool1", "maxpool1", 64, [(3, 2, 0)]),
        ("conv3b", "Conv2d_3b_1x1", 80, [(1, 1, 0)]),
        ("conv4a", "Conv2d_4a_3x3", 192, [(3, 1, 0)]),
        ("pool2", "maxpool2", 192, [(3, 2, 0)]),
        ("mixed5b", "Mixed_5b", 256, []), ("mixed5c", "Mixed_5c", 288, []),
        ("mixed5d", "Mixed_5d", 288, []),
        ("mixed6a", "Mixed_6a", 768, [(3, 2, 0)]),   # unpadded 3x3 stride-2 conv and max pool
        ("mixed6b", "Mixed_6b", 768, []), ("mixed6c", "Mixed_6c", 768, []),
        ("mixed6d", "Mixed_6d", 768, []), ("mixed6e", "Mixed_6e", 768, []),
        ("mixed7a", "Mixed_7a", 1280, [(3, 2, 0)]),  # likewise
        ("mixed7b", "Mixed_7b", 2048, []), ("mixed7c", "Mixed_7c", 2048, []),
    ]


def _mobilenet_v2_layers():
    # torchvision's inverted residual setting: (channels, repeats, stride of the first)
    out = [("conv1", "features.0", 32, [(3, 2, 1)])]
    idx = 1
    for ch, n, s in ((16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2),
                     (320, 1, 1)):
        for i in range(n):
            out.append((f"block{idx}", f"features.{idx}", ch,
                        [(3, s, 1)] if i == 0 and s > 1 else []))
            idx += 1
    out.append(("conv2", "features.18", 1280, [(1, 1, 0)]))
    return out


ARCHS = {
    "resnet50": _resnet50_layers(),
    "inception_v3": _inception_v3_layers(),
    "mobilenet_v2": _mobilenet_v2_layers(),
}

# Input conventions: torchvision's ImageNet mean and std, except Inception v3, whose weights
# (Google's, ported) were trained on inputs scaled to [-1, 1]. torchvision builds that model
# with transform_input=True, which maps an ImageNet-normalised input back to (x - 0.5) / 0.5,
# so users can feed it ImageNet-normalised images; normalising with mean 0.5 and std 0.5 here
# gives the network exactly the same input in one step.
NORMALISATION = {
    "resnet50": (IMAGENET_MEAN, IMAGENET_STD),
    "inception_v3": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "mobilenet_v2": (IMAGENET_MEAN, IMAGENET_STD),
}


def layer_names(arch: str) -> list[str]:
    return [name for name, *_ in ARCHS[arch]]


def channels(arch: str) -> dict:
    return {name: ch for name, _, ch, _ in ARCHS[arch]}


def spatial_ops(arch: str) -> dict:
    """For each layer the (kernel, stride, padding) steps that change the spatial size on the
    way from the layer before it (checked against the real networks in tests/test_models.py)."""
    return {name: ops for name, _, _, ops in ARCHS[arch]}


def import_torchvision(model: str):
    """torchvision, or a one-line UserError that says how to install it."""
    try:
        return importlib.import_module("torchvision")
    except ImportError:
        raise UserError(f"option --model: {model} needs torchvision: pip install "
                        "impasto[models]") from None
    except Exception as e:   # installed but built for another torch: fails inside its import
        raise UserError(f"option --model: {model} needs torchvision, which is installed but "
                        f"does not import beside torch {torch.__version__} ({e}): install the "
                        "torchvision release built for this torch") from None


def _torchvision_model(arch: str, tv):
    if arch == "resnet50":
        return tv.models.resnet50(weights=None)
    if arch == "inception_v3":
        # transform_input=False: the normalisation above already is its input transform.
        return tv.models.inception_v3(weights=None, aux_logits=False, transform_input=False,
                                      init_weights=False)
    if arch == "mobilenet_v2":
        return tv.models.mobilenet_v2(weights=None)
    raise KeyError(arch)


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def _truncate(model: nn.Module, arch: str, last: str) -> nn.Module:
    """Drop every child module that no layer up to ``last`` uses (and the classifier)."""
    keep = {}   # top-level child -> number of leading sub-modules kept (None: all)
    for name, path, _, _ in ARCHS[arch]:
        for p in path.split("+"):
            top, _, rest = p.partition(".")
            if rest:
                keep[top] = max(keep.get(top) or 0, int(rest) + 1)
            else:
                keep[top] = None
        if name == last:
            break
    for child in list(model._modules):
        if child not in keep:
            delattr(model, child)
        elif keep[child] is not None:
            seq = model._modules[child]
            setattr(model, child, seq[: keep[child]])   # Sequential slices keep their keys
    return model


class TorchvisionBackbone(Backbone):
    """A torchvision classifier cut after layer ``last``, with named layers.

    ``self.net`` is the torchvision model itself with every module past ``last`` deleted, so
    its state-dict keys are torchvision's own and nothing deeper is held or computed.
    """

    def __init__(self, arch: str, last: str | None = None, device="cpu"):
        super().__init__()
        tv = import_torchvision(arch)
        self.arch = arch
        all_names = layer_names(arch)
        last = last or all_names[-1]
        self.names = all_names[: all_names.index(last) + 1]
        # Built on the meta device (no memory, no random init), then truncated; the weights
        # are assigned by load_weights.
        with torch.device("meta"):
            model = _torchvision_model(arch, tv)
        self.net = _truncate(model, arch, last)
        self.paths = {name: path for name, path, _, _ in ARCHS[arch][: len(self.names)]}
        mean, std = NORMALISATION[arch]
        self.register_buffer("mean", torch.tensor(mean, device=device).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, device=device).view(1, 3, 1, 1),
                             persistent=False)
        self.autocast_dtype = None
        self.relu = nn.ReLU(inplace=False)   # resnet's relu1; torchvision's is in-place and
        #                                      would overwrite the conv1 output we return

    def load_weights(self, state_dict: dict, source: str) -> None:
        """Assign torchvision-format weights (``layer1.0.conv1.weight`` ...) to the kept
        modules; keys past the deepest layer (and the classifier) are ignored."""
        wanted = self.net.state_dict(keep_vars=True)
        sd = {}
        for key, ref in wanted.items():
            if key not in state_dict:
                if key.endswith("num_batches_tracked"):    # absent from old checkpoints
                    sd[key] = torch.zeros((), dtype=torch.long)
                    continue
                raise UserError(f"{source}: weights for {key} are missing (is it a torchvision "
                                f"{self.arch} state dict?)")
            value = state_dict[key]
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(ref.shape):
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise UserError(f"{source}: {key} has shape {shape}, {self.arch} needs "
                                f"{tuple(ref.shape)} (is it a torchvision {self.arch} state dict?)")
            sd[key] = value.float() if value.is_floating_point() else value
        self.net.load_state_dict(sd, strict=True, assign=True)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) / self.std

    def _stage(self, name, x):
        path = self.paths[name]
        if name == "relu1" and self.arch == "resnet50":
            return self.relu(x)
        for p in path.split("+"):
            x = _get(self.net, p)(x)
        return x

    def features(self, image: torch.Tensor, names) -> dict:
        wanted = set(names)
        x, deepest = self._input(image, wanted)
        out = {}
        autocast = (torch.autocast(x.device.type, dtype=self.autocast_dtype)
                    if self.autocast_dtype is not None else contextlib.nullcontext())
        with autocast:
            for name in self.names[: deepest + 1]:
                x = self._stage(name, x)
                if name in wanted:
                    out[name] = x
        return out


def build(arch: str, last: str, state_dict: dict, source: str) -> TorchvisionBackbone:
    net = TorchvisionBackbone(arch, last)
    net.load_weights(state_dict, source)
    return net.eval().requires_grad_(False)


def profile(arch: str, last: str, hw) -> tuple[float, float]:
    """(forward convolution FLOPs, activation elements) of the network up to ``last`` for an
    (H, W) input: a shape-only dry run on the meta device, counting every conv's multiply-adds
    and every leaf module's output."""
    net = TorchvisionBackbone(arch, last, device="meta").eval()
    flops, elements = [0.0], [0.0]

    def hook(module, inputs, output):
        elements[0] += output.numel()
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            flops[0] += 2.0 * output.numel() * (module.in_channels // module.groups) * k

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if not list(m.children()) and not isinstance(m, TorchvisionBackbone)]
    try:
        with torch.no_grad():
            net.features(torch.empty(1, 3, *hw, device="meta"), [last])
    finally:
        for h in handles:
            h.remove()
    return flops[0], elements[0]
