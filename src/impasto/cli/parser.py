"""The command line's parser, built from the config's fields: one option per Config field, the
task's defaults shown in the help, nothing set unless given."""
from __future__ import annotations

import argparse
import dataclasses
import typing

from .. import api, backbones, config as config_mod
from ..config import EXPLORE_DEFAULTS, TASKS, Config
from ..errors import UserError, printable
from .executing import add_executor_options

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

POSITIONALS = {
    "transfer": [("content", None, "content image (the photo)"),
                 ("styles", "*", "style image(s) (the painting)")],
    "reconstruct": [("content", None, "image to reconstruct from its features")],
    "texture": [("styles", "*", "style image whose texture to synthesise")],
}
DESCRIPTIONS = {
    "transfer": "Paint CONTENT in the style of STYLE (Gatys et al. 2016).",
    "reconstruct": "Reconstruct CONTENT from its features at one layer, starting from noise.",
    "texture": "Synthesise a texture with the style statistics of STYLE, starting from noise.",
    "video": "Stylise a video with temporal consistency, optionally a style per moving object.",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line (and exit status 2)."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {printable(message)} (see "
                  f"'{self.prog} --help')\n")


def _is_weight_list(name):
    return name.endswith("layer_weights") or name == "style_blend"


def _split(values, convert, option):
    out = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if part:
                try:
                    out.append(convert(part))
                except ValueError:
                    raise UserError(f"option --{option}: '{part}' is not a number") from None
    return out


def add_config_options(parser, task, defaults=None, skip=(), title="options"):
    """One option per Config field that applies to ``task`` (less those of ``skip``); the
    defaults shown are the task's defaults (or ``defaults``); nothing is set unless given
    (argparse.SUPPRESS)."""
    defaults = defaults or Config.for_task(task)
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(Config):
        if task not in f.metadata["tasks"] or f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        if default is None and f.metadata.get("default_text"):
            shown = f.metadata["default_text"]
        help_text = f.metadata["help"]
        if "(default:" not in help_text:
            help_text += f" (default: {shown})"
        kw = dict(default=argparse.SUPPRESS, help=help_text.replace("%", "%%"), dest=f.name)
        if f.metadata.get("metavar"):
            kw["metavar"] = f.metadata["metavar"]
        ftype = config_mod.field_type(f.name)[0]
        if ftype is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif ftype is list or typing.get_origin(ftype) is list:
            group.add_argument(flag, nargs="+", **kw)
        else:
            if f.metadata.get("choices"):
                kw["choices"] = f.metadata["choices"]
            group.add_argument(flag, type=ftype, **kw)
        if task == "reconstruct" and f.name == "content_layers":
            group.add_argument("--layer", dest="content_layers", nargs="+", default=argparse.SUPPRESS,
                               metavar="LAYER", help="same as --content-layers")


def add_run_options(parser):
    defaults = api.Request("transfer")
    run = parser.add_argument_group("run")
    run.add_argument("-o", "--output", required=True, help="output image file (.png or .jpg); "
                     "a run record OUTPUT.json is written beside it")
    run.add_argument("--from-record", metavar="RECORD", help="repeat the run a record (.json, or "
                     "a .png impasto wrote) describes; options given here override it")
    run.add_argument("--save-every", type=int, default=defaults.save_every, metavar="N",
                     help="also write the image every N steps (OUTPUT_stepN.png)")
    add_safety_options(run, defaults)
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    run.add_argument("--plot", action="store_true", help="also plot the loss terms against step "
                     "and time (OUTPUT_loss.png; needs matplotlib: pip install 'impasto[plot]')")


def add_safety_options(group, defaults=None):
    defaults = defaults or api.Request("transfer")
    group.add_argument("--overwrite", action="store_true", help="replace an existing output "
                       "(and its record) that impasto did not write; impasto never replaces "
                       "its inputs")
    group.add_argument("--max-input-pixels", type=int, default=defaults.max_input_pixels,
                       metavar="N", help="refuse input images with more pixels than this, read "
                       f"from the file's header (default: {defaults.max_input_pixels})")


def build_parser():
    parser = OneLineParser(prog="impasto", description="Neural style transfer by optimisation "
                           "(Gatys, Ecker & Bethge 2016).")
    from ..version import __version__
    parser.add_argument("--version", action="version", version=f"impasto {__version__}")
    sub = parser.add_subparsers(dest="task", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for task in TASKS:
        p = sub.add_parser(task, help=DESCRIPTIONS[task], description=DESCRIPTIONS[task])
        if task == "video":   # its own positionals, regions and run options
            add_video_arguments(p)
            continue
        for name, nargs, help_text in POSITIONALS[task]:
            p.add_argument(name, nargs=nargs or "?", help=help_text)
        if task == "transfer":
            g = p.add_argument_group("regions")
            g.add_argument("--mask", metavar="MASK", help="a colour-coded image at the content's "
                           "aspect ratio: each colour marks a region with its own style")
            g.add_argument("--region-style", action="append", metavar="COLOUR=STYLE",
                           help="the style of the region painted COLOUR in --mask (hex like "
                           "ff0000 or a name like red); STYLE an image, or none to keep the "
                           "content there. Repeat once per colour")
        add_config_options(p, task)
        add_run_options(p)
    add_sweep_parser(sub)
    add_explore_parser(sub)
    add_serve_parser(sub)
    add_batch_parser(sub)
    sub.add_parser("options", help="print every option with its default, as a markdown table",
                   description="Print every option of every task with its default (markdown).")
    lp = sub.add_parser("layers", help="list the layer names of a model",
                        description="List the layer names of a model, in order; the second "
                        "column marks its default content and style layers.")
    lp.add_argument("--model", default=Config().model, choices=list(backbones.MODELS))
    return parser


def add_video_arguments(parser):
    parser.add_argument("input", nargs="?", help="video file (mp4, mov, webm, gif, ...), folder "
                        "of frames, or a glob of frames such as 'frames/*.png'")
    parser.add_argument("styles", nargs="*", help="style image(s)")
    g = parser.add_argument_group("regions (a style per moving object)")
    g.add_argument("--mask-video", metavar="MASKS", help="colour-coded masks, one per frame: a "
                   "video (lossless: gif, or PNG frames) or a folder or glob of frames")
    g.add_argument("--first-mask", metavar="MASK", help="the colour-coded mask of the first "
                   "frame only; impasto carries it through the clip with the optical flow")
    g.add_argument("--region-style", action="append", metavar="COLOUR=STYLE",
                   help="the style of the region painted COLOUR in the masks (STYLE an image, "
                   "or none to keep the video there). Repeat once per colour")
    add_config_options(parser, "video")
    run = parser.add_argument_group("run")
    run.add_argument("-o", "--output", required=True, help="output: .mp4/.mov/.mkv (H.264), "
                     ".gif, or a folder name (PNG frames); a run record OUTPUT.json is written "
                     "beside it. Finished frames wait in OUTPUT.frames/: the same command again "
                     "resumes an interrupted run")
    run.add_argument("--restart", action="store_true", help="discard the finished frames of an "
                     "earlier run of this output and start over")
    add_safety_options(run)
    run.add_argument("--quiet", action="store_true", help="no progress or summary")
    run.add_argument("--plot", action="store_true", help="also plot each frame's final loss "
                     "terms and temporal error (OUTPUT_loss.png; needs matplotlib: pip install "
                     "'impasto[plot]')")
    add_executor_options(parser)


def _workbench_run_options(p, what):
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", required=True, metavar="DIR", help=f"folder for the {what} "
                   "(created if missing): one image and run record per run, results.csv, the "
                   "figures; a re-run skips the runs that are already done")
    g.add_argument("--thumb", type=int, default=256, metavar="PX", help="long side of each "
                   "picture in the figures (default: 256)")
    g.add_argument("--plot", action="store_true", help="also plot each run's loss terms "
                   "(STEM_loss.png); the overlay of all runs, losses.png, is always drawn when "
                   "matplotlib is installed")
    add_safety_options(g)
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    add_executor_options(p)


def add_sweep_parser(sub):
    p = sub.add_parser("sweep", help="run every combination of the varied options into a "
                       "labelled contact sheet, a CSV and loss curves",
                       description="Run every combination of the --vary options with the same "
                       "seed; each output is named after its options. Writes contact_sheet.png "
                       "(rows and columns are the varied options), results.csv (final loss "
                       "terms, steps, seconds) and losses.png (every run's loss curve).")
    p.add_argument("inputs", nargs="*", metavar="IMAGE", help="CONTENT STYLE [STYLE ...] for "
                   "transfer, CONTENT for reconstruct, STYLE for texture")
    p.add_argument("--task", dest="sweep_task", choices=("transfer", "reconstruct", "texture"),
                   default="transfer", help="what each run does (default: transfer)")
    p.add_argument("--vary", action="append", required=True, metavar="NAME=V1,V2",
                   help="an option and its values, e.g. style_weight=1e2,1e3,1e4 or "
                   "init=content,gaussian; list values join items with +, e.g. "
                   "style_layers=relu1_1+relu2_1,relu1_1+relu2_1+relu3_1; options that change "
                   "together are linked with ':', e.g. optimizer:lr=lbfgs:1,adam:0.02. Repeat for "
                   "more axes: the last one gives the columns of the contact sheet")
    add_config_options(p, "transfer")
    _workbench_run_options(p, "sweep")


def add_explore_parser(sub):
    p = sub.add_parser("explore", help="reconstruct the content from each block and synthesise "
                       "textures from growing sets of style layers, as figures",
                       description="Layer exploration as in Gatys et al.: reconstructions.png, the "
                       "content reconstructed from the features of each block (relu1_1 ... "
                       "relu5_1), and textures.png, textures from growing sets of style layers "
                       "(relu1_1; relu1_1 + relu2_1; ...).")
    p.add_argument("content", help="content image (for the reconstructions)")
    p.add_argument("style", help="style image (for the textures)")
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="the layers, shallow to deep "
                   "(default: the model's default style layers, relu1_1 ... relu5_1 for VGG)")
    add_config_options(p, "transfer", defaults=Config.for_task("transfer", **EXPLORE_DEFAULTS))
    _workbench_run_options(p, "figures")


def add_serve_parser(sub):
    p = sub.add_parser("serve", help="start the studio: a local web page that shows a painting "
                       "as it forms and lets you steer it (needs: pip install 'impasto[web]')",
                       description="Start the studio, a local web page and JSON API on the run "
                       "API (see the README's Studio section).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: "
                   "127.0.0.1, this machine only; any other prints a warning and needs the "
                   "printed token)")
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0: any free one)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.add_argument("--data", metavar="DIR", help="the studio's folder for uploads and runs "
                   "(default: $IMPASTO_STUDIO_DATA or ~/.local/share/impasto/studio)")
    p.add_argument("--token", help="the token another host must give (default: a random one, "
                   "printed; none on 127.0.0.1)")
    p.add_argument("--max-upload-mb", type=float, default=32, metavar="MB",
                   help="refuse uploads larger than this (default: 32)")
    p.add_argument("--max-input-pixels", type=int, default=config_mod.MAX_INPUT_PIXELS,
                   metavar="N", help="refuse images with more pixels than this, read from the "
                   f"header (default: {config_mod.MAX_INPUT_PIXELS})")


def add_batch_parser(sub):
    p = sub.add_parser("batch", help="style every content image with every style image "
                       "into one folder, locally or on Ray", description="Paint every CONTENT "
                       "in every --style (files, folders or globs on both sides; or the pairs "
                       "of --pairs FILE.csv): DIR/<content>__<style>.png with its run record, "
                       "results.csv (a row per pair) and contact_sheet.png (contents as rows, "
                       "styles as columns). A re-run skips finished pairs; a bad input file "
                       "fails only its pairs (exit status 1).")
    p.add_argument("contents", nargs="*", metavar="CONTENT", help="content images: files, "
                   "folders (their images) or globs such as 'photos/*.jpg'")
    p.add_argument("--style", action="extend", nargs="+", metavar="STYLE", help="style images: "
                   "files, folders or globs")
    p.add_argument("--pairs", metavar="FILE.csv", help="explicit pairs instead: a CSV with a "
                   "header naming 'content' and 'style' columns (paths relative to the CSV) and "
                   "optionally columns named after options (style_weight, seed, ...) that set "
                   "them for that pair")
    add_config_options(p, "transfer")
    transfer = {n for n in config_mod.field_names() if "transfer" in config_mod.field_tasks(n)}
    add_config_options(p, "video", skip=transfer, title="video clips (a CONTENT "
                       "that is a video runs impasto video, its frames in order)")
    _workbench_run_options(p, "batch")


def options_markdown() -> str:
    """Every option, the tasks it applies to and its default per task, from Config."""
    per_task = {t: Config.for_task(t) for t in TASKS}
    rows = ["| option | tasks | default | what it does |", "|---|---|---|---|"]
    for f in dataclasses.fields(Config):
        tasks = f.metadata["tasks"]
        values = {t: getattr(per_task[t], f.name) for t in tasks}
        fmt = lambda v: ",".join(map(str, v)) if isinstance(v, list) else (
            f.metadata.get("default_text") or "None" if v is None else str(v))
        if len({fmt(v) for v in values.values()}) == 1:
            default = fmt(next(iter(values.values())))
        else:
            default = "; ".join(f"{t}: {fmt(v)}" for t, v in values.items())
        choices = f.metadata.get("choices")
        text = f.metadata["help"] + (f" ({' / '.join(choices)})" if choices else "")
        rows.append(f"| `--{f.name.replace('_', '-')}` | {', '.join(tasks)} | `{default}` | "
                    f"{text.replace('|', '/')} |")
    return "\n".join(rows)


def layers_text(model: str) -> str:
    """Every layer of ``model``, one a line, its default content/style layers marked."""
    content, style = backbones.default_layers(model)
    lines = []
    for name in backbones.layers(model):
        marks = [m for m, ds in (("default content", content), ("default style", style))
                 if name in ds]
        lines.append(f"{name}\t{', '.join(marks)}" if marks else name)
    return "\n".join(lines)


def options_from_args(args, task) -> dict:
    """The Config options the user gave on the command line (and only those)."""
    given = {}
    for f in dataclasses.fields(Config):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if isinstance(value, list):
            conv = float if _is_weight_list(f.name) else str
            value = _split(value, conv, f.name.replace("_", "-"))
        given[f.name] = value
    return given
