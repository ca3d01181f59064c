"""A run's inputs, checked once for every front end.

``gather`` says which sources a task needs (and refuses a missing or contradictory one),
``check_source`` and ``check_regions`` check what Python hands in (images, tensors, region
masks), and ``load`` decodes every input at no more than the size the run needs. The run API
(``impasto.api``) calls them. Outputs are checked in ``impasto.outputs`` (its functions are
named here too).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import image as imageio, regions as regionsmod
from .config import INITS, Config
from .errors import UserError, show_path
# where a run writes, checked in outputs.py; named here too, as the front ends know them
from .outputs import (check_folder_writable, check_output, check_output_dir,  # noqa: F401
                      plot_path, run_extras, snapshot_path, written_by_impasto)


def is_path(source) -> bool:
    return isinstance(source, (str, os.PathLike))


def parse_region_style(spec):
    """'COLOUR=STYLE' (or a [colour, style] pair from a record) -> (colour text, style or
    None); STYLE 'none' keeps the content in that region."""
    if isinstance(spec, (list, tuple)):
        if len(spec) != 2:
            raise UserError(f"option --region-style: {spec!r} is not a [colour, style] pair")
        colour, style = spec
    else:
        colour, sep, style = str(spec).partition("=")
        if not sep or not colour or not style:
            raise UserError(f"option --region-style: '{spec}' is not COLOUR=STYLE (e.g. "
                            "ff0000=starry.jpg or 00ff00=none)")
    if isinstance(style, str) and style.lower() == "none":
        style = None
    return str(colour), style


def region_colours(specs) -> list:
    """The (r, g, b) of each region spec; the same colour twice is an error."""
    colours = [regionsmod.parse_color(c) for c, _ in specs]
    if len(set(colours)) != len(colours):
        raise UserError("option --region-style: the same colour is given twice")
    return colours


def layers_for_model(options: dict, given: dict) -> None:
    """A record's layers belong to its model: with another --model (and no layers given),
    layers that model lacks fall back to its defaults."""
    from . import backbones
    for name in ("content_layers", "style_layers"):
        if name in given or options.get(name) is None:
            continue
        try:
            backbones.check_layers(options["model"], options[name])
        except UserError:
            options[name] = None
            options[name.replace("layers", "layer_weights")] = None


# ----------------------------------------------------------------------------- what a run reads
@dataclass
class Spec:
    """The sources of one run, by role."""
    task: str
    content: object = None
    styles: list = field(default_factory=list)
    mask: object = None
    region_styles: list = field(default_factory=list)    # [(colour text, source or None)]
    init: object = None                                  # an init image (cfg.init a file)
    regions: list | None = None      # from Python: [(mask (H, W), [style sources], blend)]

    def roles(self):
        """(role, source, record key) for every source, in the order they are read."""
        out = []
        if self.content is not None:
            out.append(("content image", self.content, "content"))
        for i, s in enumerate(self.styles):
            out.append((f"style image {i + 1}" if len(self.styles) > 1 else "style image", s,
                        "styles"))
        if self.mask is not None:
            out.append(("mask", self.mask, "mask"))
        for colour, s in self.region_styles:
            if s is not None:
                out.append((f"style of region {colour}", s, "region_styles"))
        for i, (_, ss, _) in enumerate(self.regions or []):
            out += [(f"style of region {i + 1}", s, "regions") for s in ss]
        if self.init is not None:
            out.append(("init image", self.init, "init"))
        return out

    def input_paths(self) -> dict:
        """{role: path} of every source that is a file."""
        return {role: Path(s) for role, s, _ in self.roles() if is_path(s)}

    def reads(self) -> list:
        """[(role, absolute path)]: every file the run reads, to show in the plan."""
        return [(role, str(Path(s).resolve())) for role, s, _ in self.roles() if is_path(s)]

    def record_inputs(self) -> dict:
        """The inputs as a record keeps them (file paths; None for in-memory images)."""
        p = lambda s: str(s) if is_path(s) else None
        inputs = {"content": p(self.content), "styles": [p(s) for s in self.styles]}
        if self.init is not None:
            inputs["init"] = p(self.init)
        if self.mask is not None:
            inputs["mask"] = p(self.mask)
            inputs["region_styles"] = [[c, p(s) if s is not None else None]
                                       for c, s in self.region_styles]
        return inputs


def gather(task: str, cfg: Config, found: dict) -> Spec:
    """The sources ``task`` needs from ``found`` (content, styles, mask, region_styles, init),
    with one line for a missing or contradictory one."""
    content, styles = found.get("content"), list(found.get("styles") or [])
    mask, given_regions = found.get("mask"), found.get("regions")
    specs = [parse_region_style(r) for r in found.get("region_styles") or []]
    if given_regions is not None:
        if mask is not None or specs or styles:
            raise UserError("give either regions, or a mask with region styles, or styles")
        if not isinstance(given_regions, (list, tuple)) or not given_regions or any(
                not isinstance(r, (list, tuple)) or len(r) != 3 for r in given_regions):
            raise UserError("regions: give a list of (mask, [style images], blend) triples")
    if task in ("transfer", "reconstruct") and content is None:
        raise UserError(f"impasto {task}: give a CONTENT image (or --from-record RECORD)")
    if mask is not None or specs:
        if task != "transfer":
            raise UserError(f"impasto {task}: --mask and --region-style are for transfer")
        if mask is None:
            raise UserError("option --region-style: needs --mask MASK.png (the regions' colours)")
        if not specs:
            raise UserError("option --mask: give one --region-style COLOUR=STYLE per region "
                            "colour (STYLE an image or none)")
        if styles:
            raise UserError("impasto transfer: with --mask, give the styles with --region-style "
                            "COLOUR=STYLE, not as STYLE arguments")
        region_colours(specs)
    elif task in ("transfer", "texture") and not styles and given_regions is None:
        raise UserError(f"impasto {task}: give a STYLE image (or --from-record RECORD)")
    if task == "texture" and len(styles) > 1:
        raise UserError("impasto texture: give one STYLE image")
    if cfg.style_blend is not None and not specs and len(cfg.style_blend) != len(styles):
        raise UserError(f"option --style-blend: gives {len(cfg.style_blend)} weights for "
                        f"{len(styles)} style images: give one weight per style image")
    init = found.get("init")
    if init is None and cfg.init not in INITS:
        init = cfg.init
    regions = None if given_regions is None else check_regions(given_regions)
    return Spec(task, content if task != "texture" else None,
                styles if task != "reconstruct" else [], mask, specs, init, regions)


def _numbers_problem(values):
    """Why ``values`` is not a list of finite numbers of zero or more, or None."""
    if not isinstance(values, (list, tuple)):
        return f"{type(values).__name__} is not a list of numbers"
    for x in values:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) \
                or x < 0:
            return f"{x!r} is not a finite number of zero or more"
    return None


def check_mask_array(mask, name: str):
    """A region's weight map from Python: a 2-D (H, W) tensor or array of finite weights in
    [0, 1], with pixels. Returns it as a float tensor."""
    import numpy as np
    import torch
    if not isinstance(mask, (torch.Tensor, np.ndarray)):
        raise UserError(f"{name}: give a (H, W) tensor or array of weights in [0, 1], got "
                        f"{type(mask).__name__} (a colour-coded mask image goes in mask=, "
                        "with region_styles)")
    shape = tuple(mask.shape)
    if len(shape) != 2 or 0 in shape:
        raise UserError(f"{name}: must have shape (H, W) with pixels, got {shape}")
    try:
        t = torch.as_tensor(mask).detach().float()
    except (TypeError, RuntimeError) as e:
        raise UserError(f"{name}: not numbers ({' '.join(str(e).split())})") from None
    if not torch.isfinite(t).all() or t.min() < -1e-4 or t.max() > 1 + 1e-4:
        raise UserError(f"{name}: weights must be finite and in [0, 1]")
    return t


def check_regions(given) -> list:
    """Regions from Python, each (mask, [style images], blend), checked: the mask a (H, W)
    weight map (``check_mask_array``), the styles a list, the blend None or one weight of zero
    or more per style."""
    out = []
    for i, (mask, styles, blend) in enumerate(given):
        name = f"regions[{i}]"
        if not isinstance(styles, (list, tuple)):
            raise UserError(f"{name}: the styles must be a list of images (empty: keep the "
                            f"content there), got {type(styles).__name__}")
        mask = check_mask_array(mask, f"{name} mask")
        if blend is not None:
            why = _numbers_problem(blend)
            if why is None and len(blend) != len(styles):
                why = f"gives {len(blend)} weights for {len(styles)} style images"
            if why is None and styles and not sum(blend) > 0:
                why = "needs at least one positive weight"
            if why:
                raise UserError(f"{name} blend: {why}; give None or one weight per style image")
        out.append((mask, list(styles), None if blend is None else list(blend)))
    return out


def check_source(source, role: str) -> None:
    """A source of any kind, checked before it is used: a path, bytes or a binary file object
    (decoded later, with their own checks), a PIL image with pixels, or an image tensor of
    shape (3, H, W) or (1, 3, H, W) with pixels and finite values in [0, 1] (uint8: 0-255)."""
    if is_path(source) or isinstance(source, (bytes, bytearray, memoryview)) \
            or hasattr(source, "read"):
        return
    import torch
    from PIL import Image
    if isinstance(source, Image.Image):
        if 0 in source.size:
            raise UserError(f"{role}: the image has no pixels ({source.width}x{source.height})")
        return
    if not isinstance(source, torch.Tensor):
        raise UserError(f"{role}: expected a file path, bytes, a PIL image or an image tensor, "
                        f"got {type(source).__name__}")
    shape = tuple(source.shape)
    if not ((len(shape) == 3 and shape[0] == 3) or (len(shape) == 4 and shape[:2] == (1, 3))):
        raise UserError(f"{role}: an image tensor has shape (3, H, W) or (1, 3, H, W), got {shape}")
    if 0 in shape:
        raise UserError(f"{role}: the image tensor has no pixels (shape {shape})")
    if source.device.type == "meta":
        raise UserError(f"{role}: a meta tensor holds no pixel values")
    if source.dtype == torch.uint8:
        return
    if not source.is_floating_point():
        raise UserError(f"{role}: a {source.dtype} tensor is not an image; give float values in "
                        "[0, 1] (or uint8 values in 0-255)")
    t = source.detach()
    if not torch.isfinite(t).all():
        raise UserError(f"{role}: the image tensor has NaN or infinite values")
    lo, hi = float(t.min()), float(t.max())
    if lo < -0.01 or hi > 1.01:
        raise UserError(f"{role}: the image tensor's values run from {lo:.4g} to {hi:.4g}; give "
                        "values in [0, 1] (divide 8-bit values by 255, or pass a uint8 tensor)")


# ----------------------------------------------------------------------------- decoding
@dataclass
class Loaded:
    """Decoded inputs, as ``tasks.run`` takes them."""
    content: object
    styles: list
    regions: list | None
    init: object
    decode_bytes: float       # the peak of decoding them, one after another
    resident_bytes: float     # what the decoded images hold during the run


def _decode(source, long_side, role, max_pixels, cache):
    """A source as a PIL image (or a tensor, kept), decoded at no more than ``long_side``."""
    check_source(source, role)
    if hasattr(source, "read") and not is_path(source):   # a file object: its bytes, once
        seekable = getattr(source, "seekable", lambda: False)()
        pos = source.tell() if seekable else None
        data = source.read()
        if seekable:
            source.seek(pos)
        if not isinstance(data, (bytes, bytearray)):
            raise UserError(f"{role}: the file object gives {type(data).__name__}, not bytes "
                            "(open the file in binary mode, 'rb')")
        source = bytes(data)
    if not (is_path(source) or isinstance(source, (bytes, bytearray, memoryview))):
        return source, 0.0
    key = (str(source) if is_path(source) else id(source), long_side)
    if cache is not None and key in cache:
        return cache[key], 0.0
    peak = imageio.input_peak_bytes(source, long_side, what=role, max_pixels=max_pixels)
    im = imageio.load(source, long_side=long_side, max_pixels=max_pixels, what=role)
    if cache is not None:
        cache[key] = im
    return im, peak


def _wh(im) -> tuple:
    """(width, height) of a PIL image or an image tensor."""
    return tuple(im.size) if hasattr(im, "getbbox") else (im.shape[-1], im.shape[-2])


def _size_of(im) -> float:
    if hasattr(im, "size") and isinstance(getattr(im, "size"), tuple):
        w, h = im.size
        return 3.0 * w * h * (1 + 4)      # 8-bit PIL image and its float32 tensor
    return 0.0


def load(spec: Spec, cfg: Config, max_pixels: int, cache: dict | None = None) -> Loaded:
    """Decode every source of ``spec`` at the size the run needs: the content, mask and init
    image at ``--size``, the styles at ``Config.style_load_side``."""
    style_side = cfg.style_load_side()
    peaks, images = [], []

    def get(source, side, role):
        im, peak = _decode(source, side, role, max_pixels, cache)
        peaks.append(peak)
        images.append(im)
        return im

    content = get(spec.content, cfg.size, "content image") if spec.content is not None else None
    styles = [get(s, style_side, role) for role, s, key in spec.roles() if key == "styles"]
    init = get(spec.init, cfg.size, "init image") if spec.init is not None else None
    regions = None
    if spec.regions is not None:
        regions = [(m, [get(s, style_side, f"style of region {i + 1}") for s in ss], b)
                   for i, (m, ss, b) in enumerate(spec.regions)]
        if content is not None:
            for i, (m, _, _) in enumerate(regions):
                regionsmod.check_aspect((m.shape[-1], m.shape[-2]), _wh(content),
                                        f"regions[{i}] mask")
    if spec.mask is not None:
        mask_img = get(spec.mask, cfg.size, "mask")
        if not hasattr(mask_img, "getbbox"):       # a tensor: the colours as an image
            mask_img = imageio.to_pil(imageio.to_tensor(mask_img))
        name = show_path(spec.mask) if is_path(spec.mask) else "mask"
        regionsmod.check_aspect(mask_img.size, _wh(content), name)
        colours = region_colours(spec.region_styles)
        masks = regionsmod.masks_from_image(mask_img, colours, name)
        regions = [(m, [get(s, style_side, f"style of region {c}")] if s is not None else [],
                    None) for m, (c, s) in zip(masks, spec.region_styles)]
    return Loaded(content, styles, regions, init, max(peaks, default=0.0),
                  sum(_size_of(im) for im in images))
