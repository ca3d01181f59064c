"""A run's inputs and outputs, checked once for every front end.

``gather`` says which sources a task needs (and refuses a missing or contradictory one),
``check_output`` makes sure an output can really be written and never replaces an input or a
file impasto did not write, and ``load`` decodes every input at no more than the size the run
needs. The run API (``impasto.api``) calls them; the video and workbench front ends call the
same functions for their own outputs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from . import image as imageio, regions as regionsmod, safe_io
from .config import INITS, Config
from .errors import UserError

RECORD_LIMIT = 64 * 2**20      # a run record larger than this is not one of ours


def is_path(source) -> bool:
    return isinstance(source, (str, Path))


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


def snapshot_path(output: Path, step: int) -> Path:
    return output.with_name(f"{output.stem}_step{step:05d}{output.suffix}")


def plot_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}_loss.png")


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
    regions = None if given_regions is None else [(m, list(ss), b) for m, ss, b in given_regions]
    return Spec(task, content if task != "texture" else None,
                styles if task != "reconstruct" else [], mask, specs, init, regions)


# ----------------------------------------------------------------------------- outputs
def written_by_impasto(output: Path, record: Path) -> bool:
    """Whether ``record`` is an impasto run record of ``output`` (so both may be replaced)."""
    try:
        if not record.is_file() or record.stat().st_size > RECORD_LIMIT:
            return False
        data = json.loads(record.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "task" in data and "options" in data \
        and data.get("output") == output.name


def check_output(output: Path, inputs: dict, overwrite: bool, extra=(), record=None) -> Path:
    """``output`` (an image file) and its record can be written, now: a real file is created and
    removed in their folder, Pillow can write the format, neither is one of ``inputs``
    ({role: path}), and neither replaces a file impasto did not write unless ``overwrite``.
    ``extra`` are further files the run writes (snapshots, plots), checked against the
    inputs."""
    from . import record as records
    output = Path(output)
    record = Path(record) if record is not None else records.record_path(output)
    outs = {"-o": output, "the run record": record}
    outs.update({f"{p.name}": p for p in map(Path, extra)})
    safe_io.refuse_overwriting_inputs(outs, inputs)
    imageio.check_output(output)
    if record.exists() and not record.is_file():
        raise UserError(f"-o {output}: the run record's place {record} is taken by a folder or "
                        "special file; move it or choose another output name")
    ours = written_by_impasto(output, record)
    if not overwrite and not ours:
        if record.exists():
            raise UserError(f"-o {output}: {record} exists and is not impasto's run record of "
                            f"{output.name}; choose another output name, or add --overwrite "
                            "to replace both")
        if output.exists():
            raise UserError(f"-o {output}: exists and impasto did not write it (no run record "
                            "beside it); choose another output name, or add --overwrite")
    return output


def check_folder_writable(folder: Path, label: str) -> None:
    """A file can really be created, written and removed in ``folder`` (a read-only file
    system, a permission or a full disk fail now, with one line)."""
    import os
    import tempfile
    try:
        fd, tmp = tempfile.mkstemp(prefix=".impasto.", suffix=".part", dir=folder)
        try:
            os.write(fd, bytes(4096))
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as e:
        raise UserError(f"{label}: cannot write to folder {folder} ({e.strerror})") from None


def check_output_dir(path, inputs: dict) -> Path:
    """A folder for many outputs (a sweep, a batch): its parent exists and is writable, it is
    not a file and not one of the inputs. Creates nothing."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out}: is a file; give a folder for the results")
    if not out.exists():
        parent = out.parent
        if not parent.is_dir():
            raise UserError(f"-o {out}: folder {parent} does not exist (create it first)")
        check_folder_writable(parent, f"-o {out}")
    else:
        check_folder_writable(out, f"-o {out}")
    safe_io.refuse_overwriting_inputs({"-o": out}, inputs)
    return out


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
    if not (is_path(source) or isinstance(source, (bytes, bytearray))):
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
    image at ``--size``, the styles at ``--size`` x ``--style-scale``."""
    style_side = max(1, round(cfg.size * cfg.style_scale))
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
    if spec.mask is not None:
        mask_img = get(spec.mask, cfg.size, "mask")
        if is_path(spec.mask):
            name = str(spec.mask)
        else:
            name = "mask"
        regionsmod.check_aspect(mask_img.size, _wh(content), name)
        colours = region_colours(spec.region_styles)
        masks = regionsmod.masks_from_image(mask_img, colours, name)
        regions = [(m, [get(s, style_side, f"style of region {c}")] if s is not None else [],
                    None) for m, (c, s) in zip(masks, spec.region_styles)]
    return Loaded(content, styles, regions, init, max(peaks, default=0.0),
                  sum(_size_of(im) for im in images))
