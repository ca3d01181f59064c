"""A run never overwrites its own inputs: an output path that names an input file, by any
spelling (``./``, ``..``, a symbolic or hard link), is refused before the run starts.

Kept apart from image.py, which every module imports and which imports only errors and config.
"""
from __future__ import annotations

import os

from .errors import UserError


def _key(p) -> str:
    return os.path.normcase(os.path.realpath(os.path.abspath(p)))


def same_file(a, b) -> bool:
    """Whether paths ``a`` and ``b`` name one file: the same inode when both exist (symbolic
    and hard links), else the same path once '..' and links are resolved."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return _key(a) == _key(b)


def refuse_overwriting_inputs(outputs: dict, inputs: dict) -> None:
    """UserError if an output path is one of the run's input files. ``outputs``: option ->
    path; ``inputs``: role ("content image") -> path or list of paths (None and data skipped)."""
    named = []
    for role, value in inputs.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        items = [p for p in items if isinstance(p, (str, os.PathLike))]
        named += [(f"the {role}" if len(items) == 1 else f"{role} {i}", p)
                  for i, p in enumerate(items, start=1)]
    for option, out in outputs.items():
        if not isinstance(out, (str, os.PathLike)):
            continue
        for role, p in named:
            if same_file(out, p):
                raise UserError(f"{option} {out}: is {role}; choose another output name "
                                "(impasto never overwrites its inputs)")
