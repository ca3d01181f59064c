"""impasto: neural style transfer by optimisation (Gatys, Ecker & Bethge, CVPR 2016).

    >>> import impasto
    >>> from PIL import Image
    >>> out = impasto.transfer(Image.open("photo.jpg"), Image.open("painting.jpg"), size=256)

``transfer``, ``reconstruct`` and ``texture`` take PIL images, (3,H,W)/(1,3,H,W) tensors in
[0, 1] or image files, and any option of :class:`impasto.Config` as keyword arguments, and
return an image of the same kind as their first argument. ``impasto.run`` gives the full
:class:`Result` (loss history, timings, the options used). They go through the run API
(``impasto.api``), the same checks as the command line: a mistake is a ``UserError``.

Importing impasto is light (torch is imported on first use), so the command line can catch
Ctrl-C from its first instant.
"""
from __future__ import annotations

from .config import Config, defaults
from .errors import UserError
from .version import __version__

__all__ = ["Config", "Result", "UserError", "defaults", "run", "transfer", "reconstruct",
           "texture", "__version__"]


def __getattr__(name):
    if name == "Result":
        from .tasks import Result
        return Result
    raise AttributeError(f"module 'impasto' has no attribute '{name}'")


def _same_kind(like, result):
    import torch
    return result.tensor if isinstance(like, torch.Tensor) else result.image


def run(task: str, content=None, style=None, *, callback=None, init_image=None, regions=None,
        cancel=None, **options):
    """Run ``task`` ('transfer', 'reconstruct' or 'texture') and return the full Result.

    ``style`` is an image or a list of images (blended with ``style_blend``); ``regions`` a
    list of (mask, styles, blend) for a style per region; ``callback`` sees every step
    (``impasto.api.StepEvent``); ``cancel`` (a threading.Event) stops the run, keeping the
    best image so far."""
    from . import api
    from .config import TASKS
    if task == "video":
        raise UserError("video runs go through impasto.video.stylise (frames in, frames out)")
    if task not in TASKS:
        raise UserError(f"unknown task '{task}' (use one of {', '.join(TASKS)})")
    api.check_callbacks(callback, cancel, name="callback")
    styles = [] if style is None else (list(style) if isinstance(style, (list, tuple)) else [style])
    job = api.prepare(api.Request(task, options, content=content, styles=styles,
                                  regions=regions, init=init_image))
    on_event = None if callback is None else (lambda e: callback(e) if e.kind == "step" else None)
    return job.run(on_event, cancel=cancel).result


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
