"""Where a run writes, checked once for every front end, before anything runs.

``check_output`` makes sure an output image and its record can really be written and never
replace an input or a file impasto did not write (nor anything but a regular file, nor a file
the user made read-only); the files a run writes beside them (``--save-every`` snapshots, the
``--plot`` figure) get the same checks. ``check_output_dir`` does it for a folder of many
outputs. The run API, the sweeps and the video front end call them.
"""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from . import image as imageio, safe_io
from .errors import UserError, show_path

RECORD_LIMIT = 64 * 2**20      # a run record larger than this is not one of ours


def snapshot_path(output: Path, step: int) -> Path:
    return output.with_name(f"{output.stem}_step{step:05d}{output.suffix}")


def plot_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}_loss.png")


def snapshot_paths(output: Path, every: int, steps: int) -> list:
    """The snapshots (``snapshot_path``) a run of ``steps`` steps saving every ``every``
    would write that exist now: a file in the way, or one of the inputs under that name."""
    output = Path(output)
    if not every or not output.parent.is_dir():
        return []
    pattern = re.compile(re.escape(output.stem) + r"_step(\d{5,})" + re.escape(output.suffix))
    found = []
    try:
        names = os.listdir(output.parent)
    except OSError:
        return []
    for name in sorted(names):
        m = pattern.fullmatch(name)
        if m and int(m.group(1)) % every == 0 and 0 < int(m.group(1)) <= steps \
                and snapshot_path(output, int(m.group(1))).name == name:
            found.append(output.parent / name)
    return found


def written_by_impasto(output: Path, record: Path) -> bool:
    """Whether ``record`` is an impasto run record of ``output`` (so both may be replaced)."""
    try:
        if not record.is_file() or record.stat().st_size > RECORD_LIMIT:
            return False
        data = json.loads(record.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and "task" in data and "options" in data \
        and data.get("output") == output.name


def _taken_by(path: Path):
    """What is at ``path`` when it is not a regular file impasto may replace (a folder, a
    symbolic link, a FIFO ...), in words; None when nothing or a regular file is there."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        return f"something impasto cannot check ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    kind = imageio._kind(mode)
    return kind + (f" (to {os.readlink(path)})" if stat.S_ISLNK(mode) else "")


def _read_only(path: Path) -> bool:
    """Whether the regular file ``path`` exists with no write permission for anyone (the
    user's way of saying 'keep this'; root could replace it anyway)."""
    try:
        return not os.lstat(path).st_mode & 0o222
    except OSError:
        return False


def check_output(output: Path, inputs: dict, overwrite: bool, extra=(), record=None) -> Path:
    """``output`` (an image file) and its record can be written, now: a real file is created and
    removed in their folder, Pillow can write the format, neither is one of ``inputs``
    ({role: path}), and neither replaces a file impasto did not write unless ``overwrite``.
    ``extra`` ([(label, path)]) are further files the run writes (snapshots, plots): never an
    input, never anything but a regular file, and an existing one is replaced only when the
    output's record is impasto's (they belong to that run) or with ``overwrite``. A file the
    user made read-only is replaced only with ``overwrite``."""
    from . import record as records
    output = Path(output)
    record = Path(record) if record is not None else records.record_path(output)
    extra = [(x if isinstance(x, tuple) else ("the output", x)) for x in extra]
    safe_io.refuse_overwriting_inputs({"-o": output, "the run record": record}, inputs)
    for label, p in extra:
        safe_io.refuse_overwriting_inputs({label: Path(p)}, inputs)
    imageio.check_output(output)
    shown = show_path(output)
    taken = _taken_by(record)
    if taken:
        raise UserError(f"-o {shown}: the run record's place {show_path(record)} is taken by "
                        f"{taken}; move it or choose another output name")
    ours = written_by_impasto(output, record)
    if not overwrite and not ours:
        if record.exists():
            raise UserError(f"-o {shown}: {show_path(record)} exists and is not impasto's run "
                            f"record of {output.name}; choose another output name, or add "
                            "--overwrite to replace both")
        if output.exists():
            raise UserError(f"-o {shown}: exists and impasto did not write it (no run record "
                            "beside it); choose another output name, or add --overwrite")
    for label, p in extra:
        p = Path(p)
        taken = _taken_by(p)
        if taken:
            raise UserError(f"{label} {show_path(p)}: is {taken}; impasto replaces only a "
                            "regular file (move it or choose another output name)")
        if p.exists() and not ours and not overwrite:
            raise UserError(f"{label} {show_path(p)}: exists and impasto did not write it (no "
                            f"run record of {output.name} beside it); move it, choose another "
                            "output name, or add --overwrite")
    if not overwrite:
        for p in (output, record, *(Path(p) for _, p in extra)):
            if _read_only(p):
                raise UserError(f"-o {shown}: {show_path(p)} is read-only, so impasto keeps "
                                "it; choose another output name, make it writable, or add "
                                "--overwrite")
    return output


def run_extras(output: Path, save_every: int, steps: int, plot: bool) -> list:
    """[(label, path)] of the files a run writes besides ``output`` and its record that need a
    check now: the snapshots (``--save-every``) already there, and the loss plot."""
    out = [("--save-every snapshot", p) for p in snapshot_paths(output, save_every, steps)]
    return out + ([("--plot", plot_path(output))] if plot else [])


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
