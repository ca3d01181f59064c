"""A hostile user's inputs, a second round (issue #10): each refused with one line and exit
status 2 (a ``UserError`` from Python), no input's bytes changed and nothing left behind.

The command-line cases run through the real ``impasto.cli.main`` in ONE subprocess (a small
driver that runs every case in its own folder), so the whole set costs one interpreter and
one torch import; the Python API cases call ``impasto`` and ``impasto.api`` directly."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import impasto
from impasto import api, config, errors, record, sweep
from impasto.errors import UserError

FAST = ["--size", "32", "--steps", "2", "--precision", "fp32", "--seed", "1", "--quiet"]
T = ["transfer", "c.png", "s.png"]
SW = ["sweep", "c.png", "s.png", "--vary", "style_weight=1", *FAST]
EX = ["explore", "c.png", "s.png", *FAST, "--layers", "relu1_1"]
V = ["video", *FAST, "--frame-steps", "1", "clip.gif", "s.png"]
# a record impasto could have written for out.png (every option left at its default)
RECORD = {"format": 1, "task": "transfer", "options": {}, "output": "out.png",
          "inputs": {"content": "c.png", "styles": ["s.png"]}}


def _json(data):
    return lambda d: (d / "r.json").write_text(json.dumps(data))


def _copy(src, dst):
    return lambda d: shutil.copy(d / src, d / dst)


def _ours(name="out"):
    """out.png and the record impasto would have written beside it."""
    def setup(d):
        shutil.copy(d / "c.png", d / f"{name}.png")
        (d / f"{name}.json").write_text(json.dumps({**RECORD, "output": f"{name}.png"}))
    return setup


def _png_record(d):
    """out.png as impasto writes it: its options in the PNG's text."""
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_itxt("impasto", json.dumps({"format": 1, "task": "transfer", "options": {}}))
    Image.open(d / "c.png").save(d / "out.png", pnginfo=info)


def _both(*setups):
    return lambda d: [s(d) for s in setups]


# id: (argv, setup(folder) or None, fragments the one line must contain)
CLI_CASES = {
    # ------------------------------------------------------------ one line, whatever the text
    "a record with one bad field is one line": (
        ["transfer", "--from-record", "r.json", "-o", "new.png", *FAST],
        _json({**RECORD, "options": {"size": "big"}}),
        ["--from-record r.json: options.size: 'big' is not a whole number"]),
    "a record with a 5000-digit number": (
        ["transfer", "--from-record", "r.json", "-o", "new.png", *FAST],
        lambda d: (d / "r.json").write_text('{"format": 1, "task": "transfer", "options": '
                                            '{"seed": 1' + "0" * 5000 + "}}"),
        ["not an impasto run record", "digits"]),
    "a missing file whose name has a newline": (
        ["transfer", "new\nline.png", "s.png", "-o", "r.png", *FAST], None,
        ["'new\\nline.png'", "no such file"]),
    "a device value with a newline": (
        [*T, "-o", "r.png", *FAST, "--device", "cpu\n"], None, ["--device", "'cpu\\n'"]),
    "an output name with a terminal escape": (
        [*T, "-o", "x\x1b[2J.psd", *FAST], None, ["\\x1b[2J", "cannot write PSD"]),
    "an empty content name": (["transfer", "", "s.png", "-o", "r.png", *FAST], None,
                              ["content image", "file name is empty"]),
    "an empty output name": ([*T, "-o", "", *FAST], None, ["-o", "give a file name"]),
    "a JPEG given as a record": (["transfer", "--from-record", "s.jpg", "-o", "new.png", *FAST],
                                 lambda d: Image.open(d / "s.png").save(d / "s.jpg"),
                                 ["is an image, not a run record"]),
    # ------------------------------------------------------------ devices torch knows, impasto not
    "a meta device": ([*T, "-o", "r.png", *FAST, "--device", "meta"], None,
                      ["--device", "does not run on 'meta'"]),
    "a weights file that is a folder": ([*T, "-o", "r.png", *FAST, "--weights", "wdir"],
                                        lambda d: (d / "wdir").mkdir(),
                                        ["--weights wdir: is a folder, not a weights file"]),
    # ------------------------------------------------------------ every file a run reads is an input
    "the record a run repeats is not replaced": (
        ["transfer", "--from-record", "out.json", "-o", "out.png", *FAST], _ours(),
        ["the run record out.json", "is the record it repeats (--from-record)"]),
    "the PNG record a run repeats is not replaced": (
        [*T, "--from-record", "out.png", "-o", "out.png", *FAST], _both(_ours(), _png_record),
        ["-o out.png: is the record it repeats"]),
    "the weights file is not replaced by the record": (
        [*T, "-o", "net.png", *FAST, "--weights", "net.json", "--overwrite"],
        lambda d: (d / "net.json").write_bytes(b"weights"),
        ["the run record net.json: is the --weights file"]),
    "a later snapshot is not an input": (
        ["transfer", "r_step00002.png", "s.png", "-o", "r.png", *FAST, "--save-every", "1"],
        _copy("c.png", "r_step00002.png"),
        ["--save-every snapshot r_step00002.png: is the content image"]),
    # ------------------------------------------------------------ files beside the output are kept
    "a user's file at a snapshot's place": (
        [*T, "-o", "r.png", *FAST, "--save-every", "1"], _copy("c.png", "r_step00002.png"),
        ["--save-every snapshot r_step00002.png: exists and impasto did not write it",
         "--overwrite"]),
    "a folder at the plot's place": ([*T, "-o", "r.png", *FAST, "--plot"],
                                     lambda d: (d / "r_loss.png").mkdir(),
                                     ["--plot r_loss.png: is a folder"]),
    "a symbolic link at the record's place, even with --overwrite": (
        [*T, "-o", "r.png", *FAST, "--overwrite"],
        lambda d: ((d / "notes.txt").write_text("mine"), os.symlink("notes.txt", d / "r.json")),
        ["the run record's place r.json is taken by a symbolic link (to notes.txt)"]),
    "an output the user made read-only": (
        [*T, "-o", "out.png", *FAST], _both(_ours(), lambda d: os.chmod(d / "out.png", 0o444)),
        ["out.png is read-only, so impasto keeps it", "--overwrite"]),
    # ------------------------------------------------------------ sweeps and explorations
    "a sweep's contact sheet would replace its content image": (
        ["sweep", "contact_sheet.png", "s.png", "-o", ".", "--vary", "style_weight=1", *FAST],
        _copy("c.png", "contact_sheet.png"),
        ["the sweep's contact_sheet.png: is the content image"]),
    "a user's results.csv in the sweep's folder": (
        [*SW, "-o", "sw"], lambda d: ((d / "sw").mkdir(), (d / "sw" / "results.csv").write_text(
            "mine\n")),
        ["-o sw: results.csv exists and impasto did not write it", "--overwrite"]),
    "a thumb a billion pixels wide": ([*SW, "-o", "sw", "--thumb", str(10**9)], None,
                                     ["--thumb: must be between 16 and 2048"]),
    "an infinite whole number in --vary": (
        ["sweep", *T[1:], "-o", "sw", "--vary", "steps=1e999", *FAST], None,
        ["--vary steps: '1e999' is not a whole number"]),
    "a layer given twice to explore": ([*EX, "relu1_1", "-o", "ex"], None,
                                       ["--layers: relu1_1 given twice"]),
    "a user's textures.png in the exploration's folder": (
        [*EX, "-o", "ex"], lambda d: ((d / "ex").mkdir(), shutil.copy(d / "c.png",
                                                                      d / "ex" / "textures.png")),
        ["-o ex: textures.png exists and impasto did not write it"]),
    # ------------------------------------------------------------ video
    "a file at the video's work folder place": (
        [*V, "-o", "v.gif"], lambda d: (d / "v.gif.frames").write_text("mine"),
        ["work folder's place v.gif.frames is taken"]),
    "a user's file at the video's plot place": (
        [*V, "-o", "v.gif", "--plot"], _copy("s.png", "v_loss.png"),
        ["--plot v_loss.png: exists and impasto did not write it"]),
    "an empty video output name": ([*V, "-o", ""], None, ["-o: the output name is empty"]),
}

DRIVER = r"""
import contextlib, io, json, sys, os, traceback
from impasto.cli import main
for folder, argv in json.loads(sys.stdin.read()):
    os.chdir(folder)
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
        except BaseException:
            rc, err = "traceback", io.StringIO(traceback.format_exc())
    print(json.dumps([folder, rc, err.getvalue(), out.getvalue()]), flush=True)
"""


def digest(folder: Path) -> dict:
    """Every entry under ``folder``: a regular file's hash and mode, a link's target, a kind."""
    out = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        if p.is_symlink():
            out[key] = "link:" + os.readlink(p)
        elif p.is_file():
            out[key] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        else:
            out[key] = "folder"
    return out


def _inputs(d: Path):
    from conftest import example
    example("tubingen.jpg", (64, 48)).save(d / "c.png")
    example("starry_night.jpg", (64, 40)).save(d / "s.png")
    frames = [example("tubingen.jpg", (32, 24)).rotate(a) for a in (0, 10, 20)]
    frames[0].save(d / "clip.gif", save_all=True, append_images=frames[1:], duration=100)


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    """Every CLI case run once, each in its own folder: {id: (rc, stderr, stdout, folder,
    digest before)}."""
    root = tmp_path_factory.mktemp("hostile")
    jobs, before = [], {}
    for i, (name, (argv, setup, _)) in enumerate(CLI_CASES.items()):
        d = root / f"case{i}"
        d.mkdir()
        _inputs(d)
        if setup:
            setup(d)
        before[str(d)] = (name, digest(d))
        jobs.append([str(d), argv])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(jobs), text=True,
                          capture_output=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {}
    for line in proc.stdout.splitlines():
        folder, rc, err, out = json.loads(line)
        name, dig = before[folder]
        results[name] = (rc, err, out, Path(folder), dig)
    assert set(results) == set(CLI_CASES), proc.stderr[-3000:]
    return results


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_the_cli_refuses_with_one_line_and_changes_nothing(cli_results, name):
    rc, err, out, folder, before = cli_results[name]
    assert rc == 2, (rc, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("impasto"), err
    assert "Traceback" not in err and out == ""
    for fragment in CLI_CASES[name][2]:
        assert fragment in lines[0], (fragment, lines[0])
    assert digest(folder) == before, "an input changed, or something was left behind"


def test_a_closed_pipe_is_not_a_traceback(cli_env):
    """``impasto options | head -1``: the reader goes away; impasto ends quietly."""
    proc = subprocess.run(f"'{sys.executable}' -m impasto options | head -1", shell=True,
                          capture_output=True, text=True, env=cli_env, timeout=120)
    assert proc.stdout.startswith("| option |") and proc.stderr == "", proc.stderr


def test_the_cli_says_out_of_memory_in_one_line(monkeypatch, capsys):
    from impasto import cli

    def oom(argv, interrupt):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 805306368 bytes.")
    monkeypatch.setattr(cli, "_dispatch", oom)
    assert cli.main(["transfer"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "out of memory (RAM): use a smaller --size" in err[0]


# ============================================================================= errors
def test_messages_stay_on_one_line():
    e = UserError("content image 'a\nb.png': no such file")
    assert e.lines() == ["content image 'a\\nb.png': no such file"]
    several = errors.problems_error(["size: bad", "steps: worse\x1b"], "2 problems:")
    assert several.lines() == ["2 problems:", "  size: bad", "  steps: worse\\x1b"]
    assert str(several) == "2 problems:\n  size: bad\n  steps: worse\x1b"
    assert str(errors.problems_error(["size: bad"], "1 problems:", prefix="r.json: ")) == \
        "r.json: size: bad"
    assert errors.show_path("a.png") == "a.png"
    assert errors.show_path("fötö 🎨.png") == "fötö 🎨.png"
    assert errors.show_path(" a.png") == "' a.png'" and errors.show_path("") == "''"


# ============================================================================= config, record, sweep
def test_option_messages_for_odd_values():
    assert config.type_problem("device", None) == "None is not allowed; give a string"
    assert config.type_problem("size", 1e308) == "1e+308 is not a whole number"
    with pytest.raises(UserError, match="their sum is not a finite number"):
        config.Config.for_task("transfer", style_blend=[1e308, 1e308])
    with pytest.raises(UserError, match="--vary seed: '1e999' is not a whole number"):
        sweep.parse_vary("seed=1e999", "transfer")


def test_a_record_with_a_huge_number_is_one_line(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"format": 1, "task": "transfer", "options": {"size": 1' + "0" * 5000 + "}}")
    with pytest.raises(UserError, match="not an impasto run record.*4300 digits") as e:
        record.read(path)
    assert "\n" not in str(e.value)


# ============================================================================= the Python API
@pytest.fixture
def pics(content_image, style_image):
    return content_image, style_image


K = dict(size=32, steps=1, precision="fp32", seed=1)


@pytest.mark.parametrize("make, says", [
    (lambda: torch.full((3, 48, 64), float("nan")), "NaN or infinite values"),
    (lambda: torch.rand(3, 48, 64) * 255, "values run from"),
    (lambda: torch.rand(1, 3, 0, 64), "has no pixels"),
    (lambda: torch.empty(3, 48, 64, device="meta"), "meta tensor"),
    (lambda: torch.rand(3, 48, 64, dtype=torch.complex64), "is not an image"),
    (lambda: torch.rand(2, 3, 48, 64), "shape (3, H, W) or (1, 3, H, W)"),
    (lambda: Image.new("RGB", (0, 10)), "has no pixels (0x10)"),
    (lambda: np.zeros((48, 64, 3), np.uint8), "got ndarray"),
    (lambda: 5, "expected a file path, bytes, a PIL image or an image tensor, got int"),
])
def test_bad_in_memory_images_are_refused_before_the_run(pics, make, says):
    with pytest.raises(UserError, match="^content image: .*" + says.replace("(", r"\(")
                       .replace(")", r"\)")):
        api.prepare(api.Request("transfer", K, content=make(), styles=[pics[1]]))


def test_a_uint8_tensor_is_read_as_0_to_255(pics):
    from impasto import image as imageio
    t = torch.from_numpy(np.asarray(pics[0]).copy()).permute(2, 0, 1)
    assert torch.allclose(imageio.to_tensor(t), imageio.to_tensor(pics[0]))
    api.prepare(api.Request("transfer", K, content=t, styles=[pics[1]]))


@pytest.mark.parametrize("region, says", [
    (lambda s: ("mask.png", [s], None), r"regions\[0\] mask: give a \(H, W\) tensor"),
    (lambda s: (torch.ones(48, 64), "s.png", None), r"regions\[0\]: the styles must be a list"),
    (lambda s: (torch.full((48, 64), float("nan")), [s], None), "finite and in"),
    (lambda s: (torch.ones(2, 48, 64), [s], None), r"shape \(H, W\)"),
    (lambda s: (torch.ones(10, 10), [s], None), "is 10x10 but the content image is 64x48"),
    (lambda s: (torch.ones(48, 64), [s], [float("nan")]), r"regions\[0\] blend: nan"),
    (lambda s: (torch.ones(48, 64), [s], [1, 2]), "gives 2 weights for 1 style images"),
])
def test_malformed_regions_are_refused_before_the_run(pics, region, says):
    with pytest.raises(UserError, match=says):
        api.prepare(api.Request("transfer", K, content=pics[0], regions=[region(pics[1])]))


@pytest.mark.parametrize("fields, says", [
    ({"options": None}, "Request.options: give a dict"),
    ({"options": {5: 1}}, "the option name 5 is not a string"),
    ({"styles": "s.png"}, "Request.styles: give a list, got str"),
    ({"region_styles": "ff0000=s.png"}, "Request.region_styles: give a list"),
    ({"output": 5}, "-o: give a file name, got 5"),
    ({"output": ""}, "-o: give a file name"),
    ({"from_record": ""}, "--from-record: give a file name"),
    ({"overwrite": "no"}, "Request.overwrite: give True or False"),
    ({"plot": "no"}, "Request.plot: give True or False"),
    ({"save_every": True}, "--save-every: must be zero or more, got True"),
    ({"max_input_pixels": True}, "--max-input-pixels: must be a positive whole number"),
    ({"argv": "impasto"}, "Request.argv: give a list of strings"),
])
def test_request_fields_of_the_wrong_type_are_one_line(pics, fields, says):
    request = api.Request("transfer", dict(K), content=pics[0], styles=[pics[1]])
    for k, v in fields.items():
        setattr(request, k, v)
    with pytest.raises(UserError, match=says.replace("(", r"\(").replace(")", r"\)")):
        api.prepare(request)


def test_prepare_and_run_check_what_they_are_given(pics):
    with pytest.raises(UserError, match="api.prepare takes an api.Request, got dict"):
        api.prepare({"task": "transfer"})
    with pytest.raises(UserError, match="callback: give a function"):
        impasto.transfer(*pics, callback=5, **K)
    with pytest.raises(UserError, match="cancel: give a threading.Event"):
        impasto.run("transfer", *pics, cancel=True, **K)
    job = api.prepare(api.Request("transfer", K, content=pics[0], styles=[pics[1]]))
    with pytest.raises(UserError, match="on_event: give a function"):
        job.run(on_event="print")
