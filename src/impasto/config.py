"""Every option impasto has, with its default and help text, defined once.

The CLI builds its parser from these fields, the run record serialises them, ``--from-record``
reads them back, and the Python API takes them as keyword arguments.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass, field
from typing import Optional

from .errors import UserError, problems_error

TASKS = ("transfer", "reconstruct", "texture", "video")

# Input limits, checked from the file header before any pixel is decoded. 100 megapixels takes
# a 12000x8000 museum scan; a larger file is refused with a line that names --max-input-pixels.
MAX_INPUT_PIXELS = 100_000_000
MAX_SIZE = 16384            # --size, and the style image's long side (--size x --style-scale)
DEEP_STYLE_LIMIT = 1536    # px: the deep style layers' copy of a painting is enlarged no further
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
    deep_style_scale: float = _opt(
        3.0, "the deep style layers (stride 8 and more: vgg19's relu4_1, relu5_1) take their "
        "statistics from the style image enlarged this many times (to at most "
        f"{DEEP_STYLE_LIMIT} px, or the style image's own size if larger), so that they describe "
        "brushwork, not the painting's objects (faces, figures); 1: off", tasks=_STYLED)
    # --- objective
    content_layers: Optional[list[str]] = _opt(
        None, "layers whose features the output must match (paper names, e.g. relu4_2; "
        "'impasto layers --model M' lists a model's layers and its defaults)",
        tasks=_CONTENTED, metavar="LAYER", default_text="the model's (vgg19: relu4_2)")
    content_layer_weights: Optional[list[float]] = _opt(
        None, "one weight per content layer (default: equal)", tasks=_CONTENTED, metavar="W")
    style_layers: Optional[list[str]] = _opt(
        None, "layers whose Gram matrices the output must match",
        tasks=_STYLED, metavar="LAYER",
        default_text="the model's (vgg19: relu1_1,relu2_1,relu3_1,relu4_1,relu5_1)")
    style_layer_weights: Optional[list[float]] = _opt(
        None, "one weight per style layer (default: equal; each layer's loss is already "
        "normalised by its target's energy)", tasks=_STYLED, metavar="W")
    style_blend: Optional[list[float]] = _opt(
        None, "weights of the style images when several are given, e.g. 0.7,0.3 (default: "
        "equal); their Gram matrices are mixed, not their losses", tasks=_STYLED, metavar="W")
    style_loss: str = _opt("gram", "style statistic: gram (Gram matrices, Gatys et al.), w2 "
                           "(Wasserstein-2 distance between Gaussian fits: means and covariances) "
                           "or sw (sliced Wasserstein, Heitz et al. 2021: the whole distribution "
                           "of each layer's features along random directions, redrawn every "
                           "step; not with tiled evaluation)",
                           tasks=_STYLED, choices=("gram", "w2", "sw"))
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
    time: Optional[str] = _opt(
        None, "time budget such as 30s, 2m or 1h, start-up included: impasto measures this "
        "machine's step rate, plans the scales and steps to finish within it (the plan printed "
        "before the run says what the budget bought) and re-plans before every scale; --steps "
        "is then a ceiling", metavar="DURATION")
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
    max_memory: Optional[str] = _opt(
        None, "memory budget such as 6G or 800M: a scale whose network does not fit is "
        "evaluated tile by tile with exact global statistics (the same loss, no seams), and the "
        "L-BFGS history is sized to fit; the plan printed before the run says so (default: the "
        "free memory less 10%; on CUDA the device's free memory)", metavar="SIZE")
    tile: Optional[int] = _opt(
        None, "evaluate the network in tiles of this many pixels, a stage at a time (each tile "
        "with a margin that covers its stage's receptive field), at every scale larger than a "
        "tile (default: only where --max-memory needs it)", metavar="PX")
    reuse_memory: str = _opt(
        "auto", "keep the memory freed during a step in the C heap for the next step instead "
        "of handing it back to the system (CPUs with glibc, i.e. Linux): steps 15-30% faster "
        "at 1024-2048 px for up to a third more peak memory; auto: at the scales where the "
        "memory budget has room for it", choices=("auto", "on", "off"))
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

    def style_sides(self, long_side: int) -> tuple[int, int]:
        """The long sides of the style image and of its deep layers' copy at an output long
        side of ``long_side`` (equal when ``deep_style_scale`` is 1 or the limit is reached)."""
        side = max(1, round(long_side * self.style_scale))
        deep = min(round(side * self.deep_style_scale), max(side, DEEP_STYLE_LIMIT))
        return side, max(side, deep)

    def style_load_side(self) -> int:
        """The long side a style image is decoded for: the largest of ``style_sides``."""
        return self.style_sides(self.size)[1]

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
        """The defaults of ``task`` with ``overrides`` applied and checked: the names, the
        types, then the ranges, every problem at once in one UserError (see ``problems``)."""
        if task not in TASK_DEFAULTS:
            raise UserError(f"unknown task '{task}' (use one of {', '.join(TASKS)})")
        lines = problems(task, overrides)
        if lines:
            raise options_error(lines)
        return cls(**{**TASK_DEFAULTS[task], **overrides})

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        known = set(field_names())
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1.0 if self.optimizer == "lbfgs" else 0.02

    def problems(self, task: str) -> list[str]:
        """Every problem with this config for ``task``, one ``name: why`` line each: the types
        first, and the ranges once every type is right."""
        return (type_problems({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
                or self._range_problems(task))

    def validate(self, task: str) -> None:
        """Raise one UserError naming every option whose type or value is wrong."""
        lines = self.problems(task)
        if lines:
            raise options_error(lines)

    def _range_problems(self, task: str) -> list[str]:
        """Values out of range, the types already checked."""
        out = []

        def bad(name, why):
            out.append(f"{name}: {why}")

        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                bad(f.name, f"{_show(value)} is not one of {', '.join(choices)}")
        if self.size < 16:
            bad("size", f"must be at least 16 pixels, got {self.size}")
        if self.time is not None:
            from .budget import parse_duration
            if parse_duration(self.time) is None:
                bad("time", f"{_show(self.time)} is not a duration such as 30s, 2m, 1m30s or 1h")
        if self.max_memory is not None and parse_bytes(self.max_memory) is None:
            bad("max_memory", f"{_show(self.max_memory)} is not a size such as 6G, 800M or 1.5G")
        if self.tile is not None and not 16 <= self.tile <= MAX_SIZE:
            bad("tile", f"must be between 16 and {MAX_SIZE} pixels, got {self.tile}")
        if self.size > MAX_SIZE:
            bad("size", f"must be at most {MAX_SIZE} pixels, got {self.size}")
        if self.style_scale <= 0:
            bad("style_scale", f"must be positive, got {self.style_scale}")
        elif self.style_scale > MAX_STYLE_SCALE:
            bad("style_scale", f"must be at most {MAX_STYLE_SCALE:g}, got {self.style_scale:g}")
        elif task in _STYLED and self.size <= MAX_SIZE < self.size * self.style_scale:
            bad("style_scale", f"gives a {self.size * self.style_scale:.0f} px style image at "
                f"--size {self.size}; --size x --style-scale must be at most {MAX_SIZE}")
        if not 1 <= self.deep_style_scale <= MAX_STYLE_SCALE:
            bad("deep_style_scale", f"must be between 1 (off) and {MAX_STYLE_SCALE:g}, got "
                f"{self.deep_style_scale:g}")
        if self.scales is not None and not (1 <= self.scales <= 8):
            bad("scales", f"must be between 1 and 8, got {self.scales}")
        for name in ("steps", "content_weight", "style_weight", "tv_weight", "tol", "frame_steps",
                     "temporal_weight", "start"):
            if getattr(self, name) < 0:
                bad(name, f"must be zero or more, got {getattr(self, name)}")
        for name in ("lr", "fps", "duration"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                bad(name, f"must be positive, got {getattr(self, name)}")
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
                if any(x < 0 for x in w):
                    bad(weights, "weights must be zero or more")
                elif not math.isfinite(sum(w)):
                    bad(weights, "weights too large: their sum is not a finite number")
        if self.style_blend is not None:
            if any(x < 0 for x in self.style_blend):
                bad("style_blend", "weights must be zero or more")
            elif sum(self.style_blend) <= 0:
                bad("style_blend", "at least one weight must be positive")
            elif not math.isfinite(sum(self.style_blend)):
                bad("style_blend", "weights too large: their sum is not a finite number")
        if self.preserve_color != "none" and self.color_from != "none":
            bad("color_from", "cannot be combined with --preserve-color (one takes the content's "
                "colours, the other the style's)")
        if not self.init.strip():
            bad("init", f"is empty: give {', '.join(INITS)} or an image file")
        elif task == "texture" and self.init == "content":
            bad("init", "texture synthesis has no content image: use gaussian, uniform, "
                "style or an image file")
        elif task == "reconstruct" and self.init == "style":
            bad("init", "reconstruction has no style image: use gaussian, uniform, "
                "content or an image file")
        if self.weights is not None and not self.weights.strip():
            bad("weights", "is empty: give a weights file, or leave it out for the default")
        return out


# ---------------------------------------------------------------------- checking values
def _show(value, limit: int = 60) -> str:
    """``value`` as repr shows it, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number_problem(value, whole: bool) -> str | None:
    """Why ``value`` is not a (whole) finite number, or None."""
    kind = "a whole number" if whole else "a number"
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return f"{_show(value)} is not {kind}"
        return f"{_show(value)} is a string; give {kind} without quotes"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{_show(value)} is not {kind}"
    if whole and not isinstance(value, int):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
            return f"{_show(value)} is a decimal number; give a whole number ({int(value)})"
        return f"{_show(value)} is not a whole number"
    try:
        if not math.isfinite(value):
            return f"{_show(value)} is not a finite number"
    except OverflowError:     # an int too large for a float
        return f"{_show(value)} is too large"
    return None


def type_problem(name: str, value) -> str | None:
    """Why ``value`` is not of option ``name``'s type (as its annotation says), or None."""
    kind, optional = field_type(name)
    item = typing.get_args(kind)[0] if typing.get_origin(kind) is list else None
    if item is not None:
        what = "a list of layer names" if item is str else "a list of numbers"
    elif kind is str:
        choices = _field(name).metadata.get("choices") or (
            (*INITS[:-1], f"{INITS[-1]} or an image file") if name == "init" else None)
        what = f"one of {', '.join(choices)}" if choices else "a string"
    else:
        what = {int: "a whole number", float: "a number", bool: "true or false"}[kind]
    if value is None:
        return None if optional else f"None is not allowed; give {what}"
    if item is not None:
        if isinstance(value, str):
            return f"{_show(value)} is a string; give {what}"
        if not isinstance(value, list):
            return f"{_show(value)} is not a list; give {what}"
        for i, x in enumerate(value, 1):
            if (not isinstance(x, str)) if item is str else _number_problem(x, whole=False):
                return f"{_show(value)} has {_show(x)} at position {i}; give {what}"
        return None
    if kind is bool:
        return None if isinstance(value, bool) else f"{_show(value)} is not true or false"
    if kind is str:
        if isinstance(value, str):
            return None
        return f"{_show(value)} is not a string" + (f"; give {what}" if choices_or_init(name)
                                                     else "")
    return _number_problem(value, whole=kind is int)


def choices_or_init(name: str) -> bool:
    return bool(_field(name).metadata.get("choices")) or name == "init"


def type_problems(values) -> list[str]:
    """A ``name: why`` line for every known option in ``values`` (a mapping of option names
    to values) whose value has the wrong type; unknown names are left to ``problems``."""
    names = set(field_names())
    return [f"{k}: {why}" for k, v in values.items()
            if k in names and (why := type_problem(k, v)) is not None]


def problems(task: str | None, values) -> list[str]:
    """Every problem with options ``values`` for ``task`` (the task's defaults filling the
    rest), one ``name: why`` line each: unknown names (with the nearest known one), wrong
    types, and, once every type is right, values out of range (not checked when ``task`` is
    None: unknown)."""
    from .errors import closest
    names = field_names()
    lines = [f"{k}: unknown option (did you mean '{closest(k, names)}'?)"
             for k in values if k not in names]
    wrong = type_problems(values)
    if not wrong and task is not None:
        known = {k: v for k, v in values.items() if k in names}
        lines += Config(**{**TASK_DEFAULTS[task], **known})._range_problems(task)
    return lines + wrong


def options_error(lines) -> UserError:
    """One UserError for the ``name: why`` lines of ``problems``, named as the CLI spells
    the options: ``option --size: ...``, or a count and one line per problem."""
    shown = []
    for line in lines:
        name, why = line.split(": ", 1)
        shown.append(f"option --{name.replace('_', '-')}: {why}")
    return problems_error(shown, f"{len(shown)} problems with the options:")


# Texture synthesis runs at a single scale by default: at a coarse scale the deep layers have
# fewer positions than channels (relu5_1 at 128 px: ~40 positions, 512 channels), so matching
# their Gram matrices all but fixes the features themselves, and every seed grows a copy of the
# painting's composition instead of a new texture (seen here on Starry Night, even without
# relu5_1). A content image pins the layout down, so the other tasks keep coarse-to-fine.
TASK_DEFAULTS = {
    "transfer": {},
    "reconstruct": {"init": "gaussian", "style_weight": 0.0, "tv_weight": 0.0},
    # a texture reproduces the painting's structure by design, so its deep layers read the
    # painting at its own size (deep_style_scale is the cure for pasted objects in a transfer)
    "texture": {"init": "gaussian", "content_weight": 0.0, "tv_weight": 0.0, "scales": 1,
                "deep_style_scale": 1.0},
    # 384 px: large enough for the strokes to read in a video, and a later frame (100 full-size
    # fp32 steps, 1.8 s each measured on a quiet 2-core CPU) still takes only ~3 minutes
    "video": {"size": 384},
}


# ``impasto explore`` makes ten runs (five reconstructions, five textures), so it defaults to a
# smaller size and budget than a single transfer.
EXPLORE_DEFAULTS = {"size": 256, "steps": 300}


def parse_bytes(text) -> int | None:
    """'6G', '800M', '1.5g', '4096K' or a plain number of bytes -> bytes; None if not a size."""
    import re
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text), re.IGNORECASE)
    if not m:
        return None
    value = float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " ")
    return int(value) if value >= 1 else None


def field_names():
    return [f.name for f in dataclasses.fields(Config)]


@functools.lru_cache(maxsize=None)
def _hints() -> dict:
    return typing.get_type_hints(Config)


def _field(name):
    return {f.name: f for f in dataclasses.fields(Config)}[name]


def field_type(name) -> tuple[type, bool]:
    """The value type of option ``name`` (Optional unwrapped; ``list[str]`` for the layer
    lists, ``list[float]`` for the weight lists) and whether it may be None."""
    t = _hints()[name]
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return (args[0] if args else t), type(None) in typing.get_args(t)


def field_tasks(name):
    return {f.name: f.metadata["tasks"] for f in dataclasses.fields(Config)}[name]


def defaults(task: str = "transfer") -> dict:
    """The default value of every option for ``task``."""
    return Config.for_task(task).to_dict()
