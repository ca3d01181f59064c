"""Every option impasto has, with its default and help text, defined once.

The CLI builds its parser from these fields, the run record serialises them, ``--from-record``
reads them back, and the Python API takes them as keyword arguments.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

from .errors import UserError

TASKS = ("transfer", "reconstruct", "texture", "video")

# Input limits, checked from the file header before any pixel is decoded. 100 megapixels takes
# a 12000x8000 museum scan; a larger file is refused with a line that names --max-input-pixels.
MAX_INPUT_PIXELS = 100_000_000
MAX_SIZE = 16384            # --size, and the style image's long side (--size x --style-scale)
MAX_STYLE_SCALE = 8.0
INITS = ("content", "style", "gaussian", "uniform")
_ALL = TASKS
_STYLED = ("transfer", "texture", "video")
_CONTENTED = ("transfer", "reconstruct", "video")
_VIDEO = ("video",)


def _opt(default=None, help="", *, tasks=_ALL, choices=None, factory=None, metavar=None,
         default_text=None):
    # default_text: how a None default reads in the help and in `impasto options`
    meta = {"help": help, "tasks": tasks, "choices": choices, "metavar": metavar,
            "default_text": default_text}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """One run's options. Field order is the order of the CLI's help."""

    # --- size and images
    size: int = _opt(512, "long side of the output image in pixels (the aspect ratio is kept)")
    style_scale: float = _opt(
        1.0, "style image long side as a multiple of the output long side: larger values give "
        "larger brush strokes", tasks=_STYLED)
    # --- objective
    content_layers: Optional[list] = _opt(
        None, "layers whose features the output must match (paper names, e.g. relu4_2; "
        "'impasto layers --model M' lists a model's layers and its defaults)",
        tasks=_CONTENTED, metavar="LAYER", default_text="the model's (vgg19: relu4_2)")
    content_layer_weights: Optional[list] = _opt(
        None, "one weight per content layer (default: equal)", tasks=_CONTENTED, metavar="W")
    style_layers: Optional[list] = _opt(
        None, "layers whose Gram matrices the output must match",
        tasks=_STYLED, metavar="LAYER",
        default_text="the model's (vgg19: relu1_1,relu2_1,relu3_1,relu4_1,relu5_1)")
    style_layer_weights: Optional[list] = _opt(
        None, "one weight per style layer (default: equal; each layer's loss is already "
        "normalised by its target's energy)", tasks=_STYLED, metavar="W")
    style_blend: Optional[list] = _opt(
        None, "weights of the style images when several are given, e.g. 0.7,0.3 (default: "
        "equal); their Gram matrices are mixed, not their losses", tasks=_STYLED, metavar="W")
    style_loss: str = _opt("gram", "style statistic: gram (Gram matrices, Gatys et al.) or w2 "
                           "(Wasserstein-2 distance between Gaussian fits: means and covariances)",
                           tasks=_STYLED, choices=("gram", "w2"))
    preserve_color: str = _opt(
        "none", "keep the content's colours: luminance (stylise only the luminance, keep the "
        "content's chroma) or histogram (recolour the style image to the content's colour mean "
        "and covariance first)", tasks=("transfer", "video"), choices=("none", "luminance", "histogram"))
    color_from: str = _opt(
        "none", "style: recolour the content with the style's colour mean and covariance first, "
        "so the result takes the painting's palette", tasks=("transfer", "video"), choices=("none", "style"))
    content_weight: float = _opt(1.0, "weight of the content loss", tasks=_CONTENTED)
    style_weight: float = _opt(10.0, "weight of the style loss", tasks=_STYLED)
    tv_weight: float = _opt(1.0, "weight of the total-variation (smoothness) loss")
    tv_norm: str = _opt("squared", "total-variation penalty on neighbouring pixel differences",
                        choices=("l1", "squared"))
    # --- start and randomness
    init: str = _opt("content", "start image: content, style, gaussian, uniform, or an image "
                     "file (default: content for transfer, gaussian otherwise)", metavar="INIT")
    seed: Optional[int] = _opt(None, "random seed; the same seed repeats a run bit for bit on "
                               "the CPU (default: a random seed, written to the run record)")
    # --- optimiser and stopping
    optimizer: str = _opt("lbfgs", "optimiser", choices=("lbfgs", "adam"))
    lr: Optional[float] = _opt(None, "learning rate (default: 1.0 for lbfgs, 0.02 for adam)")
    steps: int = _opt(500, "step budget: at most this many optimiser steps in all, split over "
                      "the scales (2.25:1.5:1 for three scales, coarsest first)")
    scales: Optional[int] = _opt(None, "number of coarse-to-fine scales, each twice the size of "
                                 "the one before (default: from --size, the coarsest near 128 px; "
                                 "1: every step at full size)")
    history_size: int = _opt(100, "L-BFGS history size")
    line_search: bool = _opt(False, "use the strong-Wolfe line search in L-BFGS (more "
                             "evaluations per step, never diverges)")
    tol: float = _opt(0.0, "stop when the loss improved by less than this fraction over the "
                      "last --tol-window steps (0: off)")
    tol_window: int = _opt(20, "window of steps for --tol")
    patience: int = _opt(20, "stop when the loss has stayed above its best for this many steps "
                         "(the best image so far is kept either way)")
    # --- network
    model: str = _opt("vgg19", "backbone network (resnet50, inception_v3 and mobilenet_v2 need "
                      "torchvision: pip install impasto[models])",
                      choices=("vgg19", "vgg19-torchvision", "vgg16", "resnet50", "inception_v3",
                               "mobilenet_v2"))
    weights: Optional[str] = _opt(None, "weights file for the backbone, a torchvision-format "
                                  "state dict (default: the bundled Caffe VGG19 for vgg19, the "
                                  "torch.hub cache for the others)", metavar="PATH")
    pooling: str = _opt("max", "pooling in the VGG backbones", choices=("max", "avg"))
    device: str = _opt("auto", "compute device: auto, cpu, cuda, cuda:N or mps", metavar="DEVICE")
    precision: str = _opt("auto", "arithmetic inside the network: auto picks bf16 on CPUs with "
                          "AMX or AVX512-BF16 and on CUDA devices that support it, fp32 elsewhere; "
                          "Gram matrices and losses are always accumulated in fp32",
                          choices=("auto", "fp32", "bf16", "fp16"))
    # --- video (Ruder, Dosovitskiy & Brox 2016)
    temporal: bool = _opt(True, "temporal consistency: each frame after the first starts from "
                          "the previous result warped by optical flow and is kept close to it "
                          "outside occlusions; --no-temporal stylises every frame on its own "
                          "with the full --steps (the flickering baseline)", tasks=_VIDEO)
    temporal_weight: float = _opt(100.0, "weight of the temporal loss, the mean squared "
                                  "difference (RGB in [0, 1]) to the warped previous result over "
                                  "non-occluded pixels", tasks=_VIDEO)
    frame_steps: int = _opt(100, "optimiser steps for each frame after the first, at full size "
                            "(the first frame gets --steps, coarse to fine)", tasks=_VIDEO)
    flow: str = _opt("dis", "optical flow: dis (OpenCV DIS, fast, good on large motions) or "
                     "farneback (OpenCV)", tasks=_VIDEO, choices=("dis", "farneback"))
    fps: Optional[float] = _opt(None, "frame rate: drop input frames down to this rate (default: "
                                "the input's rate; 24 for a folder of frames)", tasks=_VIDEO)
    start: float = _opt(0.0, "start this many seconds into the input", tasks=_VIDEO)
    duration: Optional[float] = _opt(None, "stylise at most this many seconds (default: to the "
                                     "end)", tasks=_VIDEO)

    # ------------------------------------------------------------------ helpers
    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def with_model_layers(self) -> "Config":
        """This config with the model's default content and style layers wherever the layers
        are None (not given). The one place the defaults are resolved; a run records them."""
        from . import backbones
        content, style = backbones.default_layers(self.model)
        return self.replace(
            content_layers=content if self.content_layers is None else self.content_layers,
            style_layers=style if self.style_layers is None else self.style_layers)

    @classmethod
    def for_task(cls, task: str, **overrides) -> "Config":
        """The defaults of ``task`` with ``overrides`` applied and checked."""
        base = dict(TASK_DEFAULTS[task])
        base.update({k: v for k, v in overrides.items()})
        unknown = sorted(set(base) - set(field_names()))
        if unknown:
            from .errors import closest
            name = unknown[0]
            raise UserError(f"unknown option '{name}' (did you mean '{closest(name, field_names())}'?)")
        cfg = cls(**base)
        cfg.validate(task)
        return cfg

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        known = set(field_names())
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1.0 if self.optimizer == "lbfgs" else 0.02

    def validate(self, task: str) -> None:
        """Raise UserError naming the option for any value out of range."""
        def bad(name, why):
            raise UserError(f"option --{name.replace('_', '-')}: {why}")

        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                bad(f.name, f"'{value}' is not one of {', '.join(choices)}")
            if isinstance(value, float) and not math.isfinite(value):
                bad(f.name, f"must be a finite number, got {value}")
        if self.size < 16:
            bad("size", f"must be at least 16 pixels, got {self.size}")
        if self.size > MAX_SIZE:
            bad("size", f"must be at most {MAX_SIZE} pixels, got {self.size}")
        if self.style_scale <= 0:
            bad("style_scale", f"must be positive, got {self.style_scale}")
        if self.style_scale > MAX_STYLE_SCALE:
            bad("style_scale", f"must be at most {MAX_STYLE_SCALE:g}, got {self.style_scale:g}")
        if task in _STYLED and self.size * self.style_scale > MAX_SIZE:
            bad("style_scale", f"gives a {self.size * self.style_scale:.0f} px style image at "
                f"--size {self.size}; --size x --style-scale must be at most {MAX_SIZE}")
        if self.scales is not None and not (1 <= self.scales <= 8):
            bad("scales", f"must be between 1 and 8, got {self.scales}")
        if self.steps < 0:
            bad("steps", f"must be zero or more, got {self.steps}")
        for name in ("content_weight", "style_weight", "tv_weight", "tol"):
            if getattr(self, name) < 0:
                bad(name, f"must be zero or more, got {getattr(self, name)}")
        if self.lr is not None and self.lr <= 0:
            bad("lr", f"must be positive, got {self.lr}")
        for name in ("history_size", "tol_window", "patience"):
            if getattr(self, name) < 1:
                bad(name, f"must be at least 1, got {getattr(self, name)}")
        if self.seed is not None and not (0 <= self.seed < 2**63):
            bad("seed", f"must be between 0 and 2**63-1, got {self.seed}")
        for layers, weights in (("content_layers", "content_layer_weights"),
                                ("style_layers", "style_layer_weights")):
            lay, w = getattr(self, layers), getattr(self, weights)   # None: the model's
            if task in field_tasks(layers) and lay is not None and not lay:
                bad(layers, "needs at least one layer")
            if w is not None:
                if lay is not None and len(w) != len(lay):
                    bad(weights, f"gives {len(w)} weights for {len(lay)} layers "
                        f"({', '.join(lay)}): give one weight per layer")
                if any((not math.isfinite(x)) or x < 0 for x in w):
                    bad(weights, "weights must be finite and zero or more")
        if self.style_blend is not None and any((not math.isfinite(x)) or x < 0
                                                for x in self.style_blend):
            bad("style_blend", "weights must be finite and zero or more")
        if self.style_blend is not None and sum(self.style_blend) <= 0:
            bad("style_blend", "at least one weight must be positive")
        if self.preserve_color != "none" and self.color_from != "none":
            bad("color_from", "cannot be combined with --preserve-color (one takes the content's "
                "colours, the other the style's)")
        if self.frame_steps < 0:
            bad("frame_steps", f"must be zero or more, got {self.frame_steps}")
        if self.temporal_weight < 0:
            bad("temporal_weight", f"must be zero or more, got {self.temporal_weight}")
        if self.fps is not None and not self.fps > 0:
            bad("fps", f"must be positive, got {self.fps}")
        if self.start < 0:
            bad("start", f"must be zero or more, got {self.start}")
        if self.duration is not None and not self.duration > 0:
            bad("duration", f"must be positive, got {self.duration}")
        if self.init not in INITS and not isinstance(self.init, str):
            bad("init", f"must be one of {', '.join(INITS)} or an image file")
        if task == "texture" and self.init == "content":
            bad("init", "texture synthesis has no content image: use gaussian, uniform, "
                "style or an image file")
        if task == "reconstruct" and self.init == "style":
            bad("init", "reconstruction has no style image: use gaussian, uniform, "
                "content or an image file")


# Texture synthesis runs at a single scale by default: at a coarse scale the deep layers have
# fewer positions than channels (relu5_1 at 128 px: ~40 positions, 512 channels), so matching
# their Gram matrices all but fixes the features themselves, and every seed grows a copy of the
# painting's composition instead of a new texture (seen here on Starry Night, even without
# relu5_1). A content image pins the layout down, so the other tasks keep coarse-to-fine.
TASK_DEFAULTS = {
    "transfer": {},
    "reconstruct": {"init": "gaussian", "style_weight": 0.0, "tv_weight": 0.0},
    "texture": {"init": "gaussian", "content_weight": 0.0, "tv_weight": 0.0, "scales": 1},
    # 384 px: large enough for the strokes to read in a video, and a later frame (100 full-size
    # fp32 steps, 1.8 s each measured on a quiet 2-core CPU) still takes only ~3 minutes
    "video": {"size": 384},
}


# ``impasto explore`` makes ten runs (five reconstructions, five textures), so it defaults to a
# smaller size and budget than a single transfer.
EXPLORE_DEFAULTS = {"size": 256, "steps": 300}


def field_names():
    return [f.name for f in dataclasses.fields(Config)]


def field_type(name) -> tuple[type, bool]:
    """The value type of option ``name`` (Optional unwrapped) and whether it may be None."""
    import typing
    t = typing.get_type_hints(Config)[name]
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return (args[0] if args else t), type(None) in typing.get_args(t)


def field_tasks(name):
    return {f.name: f.metadata["tasks"] for f in dataclasses.fields(Config)}[name]


def defaults(task: str = "transfer") -> dict:
    """The default value of every option for ``task``."""
    return Config.for_task(task).to_dict()
