"""The run API's checks, each class of bad input through the real command line (a subprocess):
one line, exit status 2, no traceback, the inputs' bytes unchanged and nothing left behind;
and the same checks through ``impasto.api`` itself, which every front end calls."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
from PIL import Image

from conftest import synthetic
from test_cli import assert_one_line_error, leftovers

from impasto import api
from impasto.errors import UserError

FAST = ["--size", "32", "--steps", "2", "--precision", "fp32", "--seed", "1"]


def digest(folder: Path) -> dict:
    """Every regular file under ``folder`` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture
def files(image_files):
    d = image_files["dir"]
    mask = Image.new("RGB", (64, 48), (255, 0, 0))
    mask.paste((0, 0, 255), (0, 24, 64, 48))
    mask.save(d / "mask.png")
    synthetic(64, 48, seed=5).save(d / "photo.jpg", quality=90)
    return {**image_files, "mask": d / "mask.png", "photo": d / "photo.jpg"}


def refused(run_cli, folder, *argv, fragments=()):
    """Run the CLI, expect the one-line refusal, and check nothing changed in ``folder``."""
    before = digest(folder)
    names = leftovers(folder)
    proc = run_cli(*argv)
    assert_one_line_error(proc, *fragments)
    assert digest(folder) == before, "an input or an existing file changed"
    assert leftovers(folder) == names, "something was left behind"
    assert "estimated peak memory" not in proc.stderr      # refused before the run started
    return proc


# ============================================================================= your files are safe
@pytest.mark.parametrize("how", ["same path", "dot path", "symlink", "hard link", "style",
                                 "mask"])
def test_an_output_that_is_an_input_is_refused(run_cli, files, how):
    d, c, s = files["dir"], files["content"], files["style"]
    argv = ["transfer", c, s]
    if how == "same path":
        out = c
    elif how == "dot path":
        out = d / "out" / ".." / "content.png"
    elif how == "symlink":
        out = d / "link.png"
        out.symlink_to(c)
    elif how == "hard link":
        out = d / "hard.png"
        os.link(c, out)
    elif how == "style":
        out = s
    else:
        argv = ["transfer", c, "--mask", files["mask"], "--region-style", f"ff0000={s}",
                "--region-style", "0000ff=none"]
        out = files["mask"]
    refused(run_cli, d, *argv, "-o", out, *FAST, "--overwrite",
            fragments=("never overwrites its inputs",))


def test_a_record_that_would_replace_an_input_is_refused(run_cli, files):
    d = files["dir"]
    style = d / "result.json"                 # an input where the record of result.png goes
    style.write_bytes(files["style"].read_bytes())
    refused(run_cli, d, "transfer", files["content"], style, "-o", d / "result.png", *FAST,
            fragments=("the run record", "never overwrites its inputs"))


def test_a_file_impasto_did_not_write_is_kept_unless_overwrite(run_cli, files):
    d = files["dir"]
    mine = d / "out" / "holiday.png"
    synthetic(40, 30, seed=9).save(mine)
    refused(run_cli, d, "transfer", files["content"], files["style"], "-o", mine, *FAST,
            fragments=("impasto did not write it", "--overwrite"))
    notes = d / "out" / "result.json"
    notes.write_text('{"my": "notes"}')
    refused(run_cli, d, "transfer", files["content"], files["style"], "-o",
            d / "out" / "result.png", *FAST, fragments=("result.json", "--overwrite"))
    # --overwrite replaces both; a second run replaces impasto's own files without it
    proc = run_cli("transfer", files["content"], files["style"], "-o", mine, *FAST,
                   "--overwrite", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(mine).size == (32, 24)
    proc = run_cli("transfer", files["content"], files["style"], "-o", mine, *FAST, "--quiet",
                   "--steps", "1")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(mine.with_suffix(".json").read_text())["result"]["steps"] == 1


def test_sweep_and_video_outputs_are_checked_against_their_inputs(run_cli, files):
    d = files["dir"]
    refused(run_cli, d, "sweep", files["content"], files["style"], "-o", files["content"],
            "--vary", "tv_weight=0,1", *FAST, fragments=("is a file",))
    clip = d / "clip.gif"
    frames = [synthetic(32, 24, seed=k) for k in range(2)]
    frames[0].save(clip, save_all=True, append_images=frames[1:], duration=100)
    refused(run_cli, d, "video", clip, files["style"], "-o", clip, *FAST,
            fragments=("never overwrites its inputs",))


# ============================================================================= special files
@pytest.mark.parametrize("kind", ["fifo", "device", "socket", "folder"])
@pytest.mark.parametrize("role", ["content", "style", "mask"])
def test_special_files_are_refused_at_once(run_cli, files, kind, role):
    d = files["dir"]
    if kind == "fifo":
        special = d / "pipe.png"
        os.mkfifo(special)
    elif kind == "device":
        special = Path("/dev/zero")
    elif kind == "socket":
        special = d / "sock.png"
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(special))
    else:
        special = d / "folder.png"
        special.mkdir()
    c, s = files["content"], files["style"]
    argv = {"content": ["transfer", special, s],
            "style": ["transfer", c, special],
            "mask": ["transfer", c, "--mask", special, "--region-style", f"ff0000={s}"]}[role]
    try:
        refused(run_cli, d, *argv, "-o", d / "out" / "r.png", *FAST,
                fragments=(str(special.name),))
    finally:
        if kind == "socket":
            server.close()


# ============================================================================= huge inputs
def bomb_png(path: Path, side: int = 20000) -> None:
    """A real, valid 1-bit PNG that claims ``side`` x ``side`` pixels in a few tens of KB."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    raw = zlib.compress(b"\x00" * ((side + 7) // 8 + 1) * side, 9)
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw)
                     + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_from_its_header(run_cli, files):
    bomb = files["dir"] / "bomb.png"
    bomb_png(bomb)
    assert bomb.stat().st_size < 200_000
    proc = refused(run_cli, files["dir"], "transfer", bomb, files["style"], "-o",
                   files["out"] / "r.png", *FAST, fragments=("bomb.png", "--max-input-pixels"))
    assert "400" in proc.stderr          # 400 megapixels, said


PEAK_DRIVER = r"""
import sys
from impasto.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as fh:
    peak = [l for l in fh if l.startswith("VmHWM:")][0].split()[1]
print(f"exit {code} peak_kib {peak}")
"""


def test_a_bomb_allowed_in_runs_at_size_48_within_2_gib(cli_env, files):
    bomb = files["dir"] / "bomb.png"
    bomb_png(bomb)
    out = files["out"] / "bomb_out.png"
    proc = subprocess.run([sys.executable, "-c", PEAK_DRIVER, "transfer", str(bomb),
                           str(files["style"]), "-o", str(out), "--size", "48", "--steps", "1",
                           "--precision", "fp32", "--max-input-pixels", "500000000", "--quiet"],
                          env=cli_env, capture_output=True, text=True, timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr
    words = proc.stdout.split()
    assert words[:2] == ["exit", "0"], (proc.stdout, proc.stderr)
    peak = int(words[3]) * 1024
    assert peak < 2 * 2**30, f"peak {peak / 2**30:.2f} GiB"
    assert Image.open(out).size == (48, 48)


def test_style_scale_has_a_sane_upper_bound(run_cli, files):
    refused(run_cli, files["dir"], "transfer", files["content"], files["style"], "-o",
            files["out"] / "r.png", "--style-scale", "1000", fragments=("--style-scale",))


# ============================================================================= outputs, for real
def mount_tmpfs(where: Path, options: str):
    """A real tmpfs at ``where`` (root only; the test is skipped elsewhere)."""
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    return where


@pytest.fixture
def tiny_mount(tmp_path):
    """A 24 KiB tmpfs: a disk that fills up."""
    yield mount_tmpfs(tmp_path / "small", "size=24k")
    subprocess.run(["umount", str(tmp_path / "small")], check=True)


@pytest.fixture
def read_only_mount(tmp_path):
    yield mount_tmpfs(tmp_path / "ro", "ro,size=64k")
    subprocess.run(["umount", str(tmp_path / "ro")], check=True)


def test_a_read_only_place_fails_before_the_run(run_cli, files, read_only_mount):
    refused(run_cli, files["dir"], "transfer", files["content"], files["style"], "-o",
            read_only_mount / "r.png", *FAST, fragments=("read-only file system",))


def test_a_folder_in_the_records_place_fails_before_the_run(run_cli, files):
    (files["out"] / "r.json").mkdir()
    refused(run_cli, files["dir"], "transfer", files["content"], files["style"], "-o",
            files["out"] / "r.png", *FAST, fragments=("r.json",))


@pytest.mark.parametrize("name, says", [("r.psd", "cannot write"), ("r.xyz", "unknown"),
                                        ("r", "extension")])
def test_a_format_pillow_cannot_write_fails_before_the_run(run_cli, files, name, says):
    refused(run_cli, files["dir"], "transfer", files["content"], files["style"], "-o",
            files["out"] / name, *FAST, fragments=(says,))


def test_a_full_disk_leaves_no_partial_file(run_cli, files, tiny_mount):
    free = os.statvfs(tiny_mount)
    filler = tiny_mount / "filler"     # leaves 8 KiB: room for the check, not for the outputs
    filler.write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 8192))
    proc = run_cli("transfer", files["content"], files["style"], "-o", tiny_mount / "r.png",
                   "--size", "96", "--steps", "2", "--precision", "fp32", "--quiet")
    assert_one_line_error(proc, "No space left on device")
    assert sorted(p.name for p in tiny_mount.iterdir()) == ["filler"]


# ============================================================================= records
def test_a_bad_record_names_every_bad_field(run_cli, files):
    rec = files["dir"] / "bad.json"
    rec.write_text(json.dumps({"format": 1, "task": "transfer",
                               "options": {"size": "big", "steps": [3], "stpes": 2},
                               "inputs": {"content": "content.png", "styles": "style.png"}}))
    before = digest(files["dir"])
    proc = run_cli("transfer", "--from-record", rec, "-o", files["out"] / "r.png")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    text = proc.stderr
    for field in ("options.size", "options.steps", "options.stpes", "inputs.styles"):
        assert field in text, text
    assert digest(files["dir"]) == before and leftovers(files["out"]) == []


def test_a_record_with_nan_is_refused(run_cli, files):
    rec = files["dir"] / "nan.json"
    rec.write_text('{"format": 1, "task": "transfer", "options": {"tv_weight": NaN}}')
    refused(run_cli, files["dir"], "transfer", "--from-record", rec, "-o",
            files["out"] / "r.png", fragments=("NaN",))


def test_record_paths_are_relative_to_the_record_and_shown_in_the_plan(run_cli, files, tmp_path):
    d = files["dir"]
    first = run_cli("transfer", files["content"], files["style"], "-o", d / "out" / "a.png",
                    *FAST)
    assert first.returncode == 0, first.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = run_cli("transfer", "--from-record", d / "out" / "a.json", "-o", "b.png",
                    cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    reading = next(l for l in again.stderr.splitlines() if l.startswith("impasto: reading"))
    assert str(files["content"].resolve()) in reading and str(files["style"].resolve()) in reading
    text = (elsewhere / "b.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))


# ============================================================================= many runs
def test_a_refused_sweep_leaves_nothing_behind(run_cli, files):
    out = files["dir"] / "sweep"
    refused(run_cli, files["dir"], "sweep", files["content"], files["style"], "-o", out,
            "--vary", "lr=1,-2", *FAST, fragments=("--lr",))
    refused(run_cli, files["dir"], "sweep", files["content"], files["dir"] / "nope.png", "-o",
            out, "--vary", "tv_weight=0,1", *FAST, fragments=("nope.png",))
    refused(run_cli, files["dir"], "sweep", files["content"], files["style"], "-o", out,
            "--vary", "model=vgg19,vgg16", *FAST, fragments=("vgg16",))
    assert not out.exists()


def test_a_refused_explore_leaves_nothing_behind(run_cli, files):
    out = files["dir"] / "explore"
    refused(run_cli, files["dir"], "explore", files["content"], files["dir"] / "nope.png", "-o",
            out, fragments=("nope.png",))
    assert not out.exists()


# ============================================================================= the API itself
def test_the_api_checks_what_the_cli_checks(files):
    c, s = str(files["content"]), str(files["style"])
    with pytest.raises(UserError, match="never overwrites its inputs"):
        api.prepare(api.Request("transfer", {"size": 32}, content=c, styles=[s], output=c))
    with pytest.raises(UserError, match="'32' is a string; give a whole number"):
        api.prepare(api.Request("transfer", {"size": "32"}, content=c, styles=[s]))
    with pytest.raises(UserError, match="unknown task"):
        api.prepare(api.Request("paint", {}, content=c, styles=[s]))
    with pytest.raises(UserError, match="--save-every"):
        api.prepare(api.Request("transfer", {}, content=c, styles=[s], save_every=-1))


def test_the_api_runs_with_events_and_a_cancel_flag(files):
    job = api.prepare(api.Request("transfer", {"size": 32, "steps": 50, "precision": "fp32",
                                               "seed": 3, "patience": 1000},
                                  content=str(files["content"]), styles=[str(files["style"])],
                                  output=str(files["out"] / "e.png")))
    cancel, events = threading.Event(), []

    def on_event(e):
        events.append(e)
        if e.kind == "step" and e.step == 4:
            cancel.set()
    done = job.run(on_event, cancel=cancel)
    kinds = [e.kind for e in events]
    assert kinds[0] == "plan" and kinds[-1] == "done" and kinds.count("step") == 4
    plan = events[0]
    assert plan.peak_bytes > 0 and (files["content"].resolve().as_posix(), ) != ()
    assert [r for r, _ in plan.reads] == ["content image", "style image"]
    assert done.interrupted and done.result.outcome.steps == 4
    assert (files["out"] / "e.png").is_file() and done.record["result"]["steps"] == 4


def test_a_run_cancelled_before_its_first_step_writes_nothing(files):
    from impasto.errors import Cancelled
    job = api.prepare(api.Request("transfer", {"size": 32, "steps": 5},
                                  content=str(files["content"]), styles=[str(files["style"])],
                                  output=str(files["out"] / "never.png")))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        job.run(cancel=cancel)
    assert leftovers(files["out"]) == []
