"""impasto: neural style transfer by optimisation (Gatys, Ecker & Bethge, CVPR 2016).

    >>> import impasto
    >>> from PIL import Image
    >>> out = impasto.transfer(Image.open("photo.jpg"), Image.open("painting.jpg"), size=256)

``transfer``, ``reconstruct`` and ``texture`` take PIL images or (3,H,W)/(1,3,H,W) tensors in
[0, 1] and any option of :class:`impasto.Config` as keyword arguments, and return an image of
the same kind as their first argument. ``impasto.run`` gives the full :class:`Result`
(loss history, timings, the options used).
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

from .config import Config, defaults
from .errors import UserError
from .tasks import Result, run as _run

try:
    __version__ = _version("impasto")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+src"

__all__ = ["Config", "Result", "UserError", "defaults", "run", "transfer", "reconstruct",
           "texture", "__version__"]


def _same_kind(like, result: Result):
    import torch
    return result.tensor if isinstance(like, torch.Tensor) else result.image


def run(task: str, content=None, style=None, *, callback=None, init_image=None, regions=None,
        **options) -> Result:
    """Run ``task`` ('transfer', 'reconstruct' or 'texture') and return the full Result.

    ``style`` is an image or a list of images (blended with ``style_blend``); ``regions`` a
    list of (mask, styles, blend) for a style per region (see ``impasto.tasks.run``)."""
    from .config import TASKS
    if task == "video":
        raise UserError("video runs go through impasto.video.stylise (frames in, frames out)")
    if task not in TASKS:
        raise UserError(f"unknown task '{task}' (use one of {', '.join(TASKS)})")
    styles = [] if style is None else (list(style) if isinstance(style, (list, tuple)) else [style])
    cfg = Config.for_task(task, **options)
    return _run(task, cfg, content, styles, init_image=init_image, callback=callback,
                regions=regions)


def transfer(content, style, *, callback=None, **options):
    """Paint ``content`` in the style of ``style`` (an image, or a list of images)."""
    return _same_kind(content, run("transfer", content, style, callback=callback, **options))


def reconstruct(content, layer: str | None = None, *, callback=None, **options):
    """Reconstruct ``content`` from its features at ``layer`` (default: the content layers),
    starting from noise."""
    if layer is not None:
        options["content_layers"] = [layer]
    return _same_kind(content, run("reconstruct", content, None, callback=callback, **options))


def texture(style, *, callback=None, **options):
    """Synthesise a texture with the Gram statistics of ``style``, starting from noise."""
    return _same_kind(style, run("texture", None, style, callback=callback, **options))
