"""The real command line, in a subprocess: every user mistake is one line on stderr, exit
status 2 and nothing written; real runs write an image, its record, and can be repeated."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic

STEPS_E2E = 60   # ~20x lower loss at the end with these settings; the test asks 10x


def leftovers(folder: Path):
    """Everything in ``folder`` (outputs, records, temp .part files, step snapshots)."""
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("impasto"), lines[0]
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert proc.stdout == ""


# ============================================================================= bad input
def _bad_input_cases():
    """(id, files to make, argv builder, fragments the message must contain)."""
    def files(f, out):
        return [f["content"], f["style"], "-o", out / "result.png"]
    return {
        "missing content file": (lambda f, out: [f["dir"] / "nope.jpg", f["style"], "-o",
                                                 out / "result.png"], ["nope.jpg", "no such file"]),
        "corrupt style file": (lambda f, out: [f["content"], f["truncated"], "-o",
                                               out / "result.png"], ["truncated.jpg"]),
        "random bytes as style": (lambda f, out: [f["content"], f["noise"], "-o",
                                                  out / "result.png"], ["noise.png"]),
        "text file as content": (lambda f, out: [f["text"], f["style"], "-o", out / "result.png"],
                                 ["notes.txt"]),
        "folder as content": (lambda f, out: [f["dir"], f["style"], "-o", out / "result.png"],
                              ["folder"]),
        "image too small": (lambda f, out: [f["thin"], f["style"], "-o", out / "result.png",
                                            "--size", "64"], ["64x13", "relu5_1", "16 px"]),
        "unknown layer": (lambda f, out: files(f, out) + ["--style-layers", "relu1_1", "rleu2_1"],
                          ["'rleu2_1'", "did you mean 'relu2_1'"]),
        "unknown content layer": (lambda f, out: files(f, out) + ["--content-layers", "relu4_3x"],
                                  ["did you mean 'relu4_3'"]),
        "negative steps": (lambda f, out: files(f, out) + ["--steps", "-1"], ["--steps"]),
        "size not a number": (lambda f, out: files(f, out) + ["--size", "abc"],
                              ["--size", "abc"]),
        "size too small": (lambda f, out: files(f, out) + ["--size", "8"], ["--size"]),
        "negative style weight": (lambda f, out: files(f, out) + ["--style-weight", "-1"],
                                  ["--style-weight"]),
        "nan weight": (lambda f, out: files(f, out) + ["--tv-weight", "nan"], ["--tv-weight"]),
        "unknown optimizer": (lambda f, out: files(f, out) + ["--optimizer", "sgd"],
                              ["--optimizer", "sgd"]),
        "layer weight count": (lambda f, out: files(f, out) + ["--style-layer-weights", "1", "2"],
                               ["--style-layer-weights", "2 weights for 5 layers"]),
        "layer weight not a number": (lambda f, out: files(f, out) + ["--style-layer-weights",
                                                                      "1,2,x,4,5"], ["'x'"]),
        "fp16 on the cpu": (lambda f, out: files(f, out) + ["--precision", "fp16"],
                            ["--precision"]),
        "unknown model": (lambda f, out: files(f, out) + ["--model", "resnet"], ["--model"]),
        "missing weights file": (lambda f, out: files(f, out) + ["--weights", f["dir"] / "w.pth"],
                                 ["w.pth", "no such file"]),
        "missing init file": (lambda f, out: files(f, out) + ["--init", f["dir"] / "start.png"],
                              ["start.png"]),
        "output folder missing": (lambda f, out: [f["content"], f["style"], "-o",
                                                  out / "sub" / "result.png"], ["does not exist"]),
        "output is a folder": (lambda f, out: [f["content"], f["style"], "-o", out],
                               ["is a folder"]),
        "unknown output extension": (lambda f, out: [f["content"], f["style"], "-o",
                                                     out / "result.xyz"], [".xyz"]),
        "no output": (lambda f, out: [f["content"], f["style"]], ["--output"]),
        "no style": (lambda f, out: [f["content"], "-o", out / "result.png"], ["STYLE"]),
        "blend count mismatch": (lambda f, out: [f["content"], f["style"], f["style"], "-o",
                                                 out / "result.png", "--style-blend", "1"],
                                 ["--style-blend", "1 weights for 2 style images"]),
        "negative blend": (lambda f, out: files(f, out) + ["--style-blend", "-1"],
                           ["--style-blend"]),
        "mask without region styles": (lambda f, out: [f["content"], "-o", out / "result.png",
                                                       "--mask", f["mask"]], ["--region-style"]),
        "region style without mask": (lambda f, out: [f["content"], "-o", out / "result.png",
                                                      "--region-style", f"ff0000={f['style']}"],
                                      ["--mask"]),
        "mask of the wrong shape": (lambda f, out: [f["content"], "-o", out / "result.png",
                                                    "--mask", f["tall_mask"], "--region-style",
                                                    f"ff0000={f['style']}"],
                                    ["tall_mask.png", "content image is 64x48"]),
        "mask colour not listed": (lambda f, out: [f["content"], "-o", out / "result.png",
                                                   "--mask", f["mask"], "--region-style",
                                                   f"ff0000={f['style']}"],
                                   ["#0000ff", "matches no --region-style"]),
        "region style not COLOUR=STYLE": (lambda f, out: [f["content"], "-o", out / "result.png",
                                                          "--mask", f["mask"], "--region-style",
                                                          "ff0000"], ["COLOUR=STYLE"]),
        "unknown colour name": (lambda f, out: [f["content"], "-o", out / "result.png",
                                                "--mask", f["mask"], "--region-style",
                                                f"blurple={f['style']}", "--region-style",
                                                "0000ff=none"], ["'blurple' is not a colour"]),
        "styles beside a mask": (lambda f, out: [f["content"], f["style"], "-o",
                                                 out / "result.png", "--mask", f["mask"],
                                                 "--region-style", "red=none"], ["--region-style"]),
        "preserve and recolour": (lambda f, out: files(f, out) + ["--preserve-color",
                                                                  "luminance", "--color-from",
                                                                  "style"], ["--color-from"]),
        "missing record": (lambda f, out: ["--from-record", f["dir"] / "old.json", "-o",
                                           out / "result.png"], ["old.json"]),
        "negative save-every": (lambda f, out: files(f, out) + ["--save-every", "-2"],
                                ["--save-every"]),
    }


CASES = _bad_input_cases()


@pytest.fixture
def bad_files(image_files):
    d = image_files["dir"]
    whole = d / "whole.jpg"
    synthetic(64, 48).save(whole, quality=95)
    (d / "truncated.jpg").write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    (d / "noise.png").write_bytes(np.random.default_rng(1).integers(0, 256, 3000,
                                                                     np.uint8).tobytes())
    (d / "notes.txt").write_text("this is not an image\n")
    Image.new("RGB", (40, 8), (200, 100, 50)).save(d / "thin.png")
    mask = Image.new("RGB", (64, 48), (255, 0, 0))
    mask.paste((0, 0, 255), (0, 24, 64, 48))           # red top, blue bottom
    mask.save(d / "mask.png")
    Image.new("RGB", (20, 60), (255, 0, 0)).save(d / "tall_mask.png")
    return {**image_files, "truncated": d / "truncated.jpg", "noise": d / "noise.png",
            "text": d / "notes.txt", "thin": d / "thin.png", "mask": d / "mask.png",
            "tall_mask": d / "tall_mask.png"}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(run_cli, bad_files, case):
    argv, fragments = CASES[case]
    out = bad_files["out"]
    before = leftovers(bad_files["dir"])
    proc = run_cli("transfer", *argv(bad_files, out))
    assert_one_line_error(proc, *fragments)
    assert leftovers(out) == []                      # no image, no .json, no .part
    assert leftovers(bad_files["dir"]) == before


def test_unwritable_output_folder(run_cli, image_files):
    out = image_files["out"]
    out.chmod(0o555)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("running as a user who can write to a read-only folder (root)")
        proc = run_cli("transfer", image_files["content"], image_files["style"], "-o",
                       out / "result.png", "--steps", "1", "--size", "32")
        assert_one_line_error(proc, "permission denied")
        assert leftovers(out) == []
    finally:
        out.chmod(0o755)


def test_bad_usage_of_other_commands(run_cli, image_files):
    assert_one_line_error(run_cli())                                      # no command
    assert_one_line_error(run_cli("paint", image_files["content"]), "paint")
    assert_one_line_error(run_cli("texture", image_files["style"], "-o",
                                  image_files["out"] / "t.png", "--init", "content"), "--init")
    assert_one_line_error(run_cli("reconstruct", image_files["content"], "-o",
                                  image_files["out"] / "r.png", "--layer", "relu9_9"), "relu9_9")
    assert_one_line_error(run_cli("layers", "--model", "alexnet"), "alexnet")
    assert leftovers(image_files["out"]) == []


# ============================================================================= real runs
@pytest.fixture(scope="module")
def e2e(tmp_path_factory, content_image, style_image):
    """One real transfer at 64 px with the bundled VGG19, shared by the tests below."""
    from conftest import THREADS
    d = tmp_path_factory.mktemp("e2e")
    content_image.save(d / "content.png")
    style_image.save(d / "style.png")
    (d / "out").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    argv = ["transfer", "content.png", "style.png", "-o", "out/result.png", "--size", "64",
            "--steps", str(STEPS_E2E), "--precision", "fp32", "--seed", "7",
            "--style-weight", "100", "--content-weight", "0.1", "--init", "uniform"]
    proc = subprocess.run([sys.executable, "-m", "impasto", *argv], cwd=d, env=env,
                          capture_output=True, text=True, timeout=600)
    return {"dir": d, "proc": proc, "argv": argv, "env": env,
            "png": d / "out" / "result.png", "json": d / "out" / "result.json"}


def test_transfer_end_to_end(e2e):
    proc = e2e["proc"]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert leftovers(e2e["dir"] / "out") == ["result.json", "result.png"]
    with Image.open(e2e["png"]) as im:
        assert im.size == (64, 48) and im.mode == "RGB"
    rec = json.loads(e2e["json"].read_text())
    assert rec["task"] == "transfer" and rec["format"] == 1 and rec["output"] == "result.png"
    assert rec["seed"] == 7 and rec["options"]["seed"] == 7 and rec["options"]["size"] == 64
    assert rec["options"]["style_weight"] == 100 and rec["precision"] == "fp32"
    assert rec["weights"].startswith("vgg19-caffe")
    assert rec["command"][:2] == ["impasto", "transfer"]
    assert rec["result"]["steps"] == STEPS_E2E == len(rec["history"])
    assert rec["result"]["stop_reason"] == "budget"
    first, final = rec["history"][0]["loss"], rec["result"]["loss"]
    assert final * 10 <= first, (first, final)
    assert final <= min(h["loss"] for h in rec["history"])
    # inputs are stored relative to the record and lead back to the files
    assert rec["inputs"]["content"] == os.path.join("..", "content.png")
    assert (e2e["json"].parent / rec["inputs"]["styles"][0]).resolve() == \
        (e2e["dir"] / "style.png").resolve()
    # the summary line
    assert "wrote out/result.png (64x48)" in proc.stderr and "seed 7" in proc.stderr


def test_output_png_carries_the_record(e2e):
    with Image.open(e2e["png"]) as im:
        meta = json.loads(im.text["impasto"])
        assert im.text["Software"].startswith("impasto")
    rec = json.loads(e2e["json"].read_text())
    assert meta["task"] == "transfer" and meta["seed"] == 7
    assert meta["options"] == rec["options"] and meta["weights"] == rec["weights"]


def test_from_record_repeats_the_run_bit_for_bit(e2e):
    d = e2e["dir"]
    # from another working directory: the record's paths are relative to itself
    proc = subprocess.run([sys.executable, "-m", "impasto", "transfer", "--from-record",
                           str(e2e["json"]), "-o", str(d / "again.png"), "--quiet"],
                          cwd=d / "out", env=e2e["env"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""                                 # --quiet
    a = np.asarray(Image.open(e2e["png"]))
    b = np.asarray(Image.open(d / "again.png"))
    assert np.array_equal(a, b)
    r1, r2 = json.loads(e2e["json"].read_text()), json.loads((d / "again.json").read_text())
    assert r2["result"]["loss"] == r1["result"]["loss"]
    assert r2["options"] == r1["options"]
    # a different seed given on the command line overrides the record
    proc = subprocess.run([sys.executable, "-m", "impasto", "transfer", "--from-record",
                           str(d / "out" / "result.png"), str(d / "content.png"),
                           str(d / "style.png"), "-o", str(d / "other.png"), "--quiet",
                           "--seed", "8", "--steps", "3"],
                          cwd=d, env=e2e["env"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    r3 = json.loads((d / "other.json").read_text())
    assert r3["seed"] == 8 and r3["result"]["steps"] == 3
    assert r3["options"]["style_weight"] == 100          # the rest comes from the PNG's record


def test_from_record_of_another_task_is_refused(e2e, run_cli):
    proc = run_cli("texture", "--from-record", e2e["json"], "-o", e2e["dir"] / "t.png")
    assert_one_line_error(proc, "transfer")
    assert not (e2e["dir"] / "t.png").exists()


def test_init_from_an_image_file_and_repeat_from_elsewhere(run_cli, image_files, tmp_path):
    f = image_files
    start = f["dir"] / "start.png"
    synthetic(64, 48, seed=5).save(start)
    proc = run_cli("transfer", "content.png", "style.png", "-o", "out/a.png", "--init",
                   "start.png", "--size", "32", "--steps", "3", "--seed", "1", "--precision",
                   "fp32", "--quiet", cwd=f["dir"])
    assert proc.returncode == 0, proc.stderr
    rec = json.loads((f["out"] / "a.json").read_text())
    assert rec["inputs"]["init"] == os.path.join("..", "start.png")
    # repeat from a different working directory
    proc = run_cli("transfer", "--from-record", f["out"] / "a.json", "-o", tmp_path / "b.png",
                   "--quiet", cwd=f["out"])
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.asarray(Image.open(f["out"] / "a.png")),
                          np.asarray(Image.open(tmp_path / "b.png")))


def test_reconstruct_runs(run_cli, image_files):
    out = image_files["out"] / "recon.png"
    proc = run_cli("reconstruct", image_files["content"], "--layer", "relu2_2", "-o", out,
                   "--size", "32", "--steps", "10", "--precision", "fp32", "--seed", "0")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["task"] == "reconstruct" and rec["options"]["content_layers"] == ["relu2_2"]
    assert rec["options"]["init"] == "gaussian" and rec["options"]["style_weight"] == 0
    assert rec["result"]["loss"] < rec["history"][0]["loss"]
    assert Image.open(out).size == (32, 24)


def test_texture_runs(run_cli, image_files):
    out = image_files["out"] / "tex.jpg"
    proc = run_cli("texture", image_files["style"], "-o", out, "--size", "32", "--steps", "5",
                   "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as im:
        assert im.format == "JPEG" and im.size == (32, 20)
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["task"] == "texture" and rec["inputs"]["content"] is None
    assert rec["result"]["steps"] == 5
    assert leftovers(image_files["out"]) == ["tex.jpg", "tex.json"]


def test_other_weights_through_the_cli(run_cli, image_files, tmp_path):
    """--model vgg16 --weights FILE with a torchvision-format state dict."""
    import torch
    from conftest import torchvision_state_dict
    from impasto.backbones import vgg
    sd, _ = torchvision_state_dict(vgg.BLOCKS["vgg16"], seed=4, dtype=torch.bfloat16)
    weights = tmp_path / "vgg16-mine.pth"
    torch.save(sd, weights)
    out = image_files["out"] / "v16.png"
    proc = run_cli("texture", image_files["style"], "-o", out, "--model", "vgg16", "--weights",
                   weights, "--size", "32", "--steps", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["weights"].startswith("vgg16-mine.pth sha256:")
    assert rec["options"]["model"] == "vgg16"
    # the same file does not fit a vgg19
    out.unlink()
    out.with_suffix(".json").unlink()
    proc = run_cli("texture", image_files["style"], "-o", out, "--model", "vgg19-torchvision",
                   "--weights", weights, "--size", "32", "--steps", "3")
    assert_one_line_error(proc, "vgg16-mine.pth")
    assert leftovers(image_files["out"]) == []


def test_layers_command(run_cli):
    proc = run_cli("layers")
    assert proc.returncode == 0
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    names = [r[0] for r in rows]
    assert names[0] == "conv1_1" and names[-1] == "pool5" and len(names) == 37
    marked = {r[0]: r[1] for r in rows if len(r) > 1}
    assert marked == {"relu4_2": "default content", **{f"relu{b}_1": "default style"
                                                       for b in range(1, 6)}}
    proc = run_cli("layers", "--model", "vgg16")
    names16 = [line.split("\t")[0] for line in proc.stdout.splitlines()]
    assert proc.returncode == 0 and len(names16) == 31 and "conv3_4" not in names16
    # the torchvision models' names need no torchvision
    proc = run_cli("layers", "--model", "resnet50")
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert proc.returncode == 0 and rows[0] == ["conv1"] and rows[-1] == ["res5c"]
    assert ["res3d", "default content"] in rows and ["res2a", "default style"] in rows


def test_version(run_cli):
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("impasto ")


def _interrupt(proc, ready, timeout=120):
    """Wait until ``ready()`` (the process is where the test wants it), send Ctrl-C, and
    return (stdout, stderr) once it has exited; the process is killed if the test fails."""
    try:
        ready()
        proc.send_signal(signal.SIGINT)
        # the run stops before its next step (a flag, which cannot be lost); a busy machine
        # only slows the step under way and the exit
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ctrl_c_keeps_the_best_image_and_exits_130(cli_env, image_files):
    f = image_files
    out = f["out"] / "long.png"
    proc = subprocess.Popen([sys.executable, "-m", "impasto", "transfer", f["content"],
                             f["style"], "-o", out, "--save-every", "1", "--steps", "2000",
                             "--size", "64", "--precision", "fp32", "--patience", "5000",
                             "--quiet", "--seed", "0"],
                            env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    def snapshot_written():
        deadline = time.monotonic() + 240
        while not list(f["out"].glob("long_step*.png")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no step snapshot appeared"
            time.sleep(0.05)
    stdout, stderr = _interrupt(proc, snapshot_written)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "the best image so far is in" in stderr
    assert out.is_file() and out.with_suffix(".json").is_file()
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["result"]["stop_reason"] == "interrupted"
    assert 1 <= rec["result"]["steps"] < 2000
    assert rec["result"]["loss"] <= min(h["loss"] for h in rec["history"])
    with Image.open(out) as im:
        assert im.size == (64, 48) and "impasto" in im.text
    assert not [p for p in f["out"].iterdir() if p.name.endswith(".part")]


def _wait_for_torch(proc, deadline=120):
    """Until the process has started importing torch (its shared library is mapped)."""
    start = time.monotonic()
    while "torch" not in Path(f"/proc/{proc.pid}/maps").read_text():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - start < deadline, "torch was never imported"
        time.sleep(0.02)


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(cli_env, image_files):
    """Ctrl-C while impasto is still importing torch (seconds on a small machine): one line,
    exit 130, nothing written."""
    f = image_files
    proc = subprocess.Popen([sys.executable, "-m", "impasto", "transfer", f["content"],
                             f["style"], "-o", f["out"] / "never.png", "--steps", "2000",
                             "--size", "64", "--quiet"],
                            env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = _interrupt(proc, lambda: _wait_for_torch(proc))
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("impasto: interrupted")
    if "no output was written" in stderr:          # the usual case: stopped before the run
        assert leftovers(f["out"]) == []


def test_docs_options_table_is_generated_from_the_config():
    """docs/options.md is `impasto options` verbatim, so the documented defaults are the
    config's (regenerate with `impasto options > docs/options.md`)."""
    from impasto.cli import options_markdown
    doc = Path(__file__).resolve().parents[1] / "docs" / "options.md"
    assert doc.read_text().strip() == options_markdown().strip()
    assert "| `--style-weight` | transfer, texture, video |" in doc.read_text()


def test_progress_eta_weights_steps_by_their_pixels_and_skips_warm_ups():
    """Under coarse-to-fine the remaining full-size steps dominate the time left; the first
    step of each scale (kernels built for a new size) does not set the rate."""
    import io
    from impasto.cli import Progress
    from impasto.optimize import Step
    p = Progress(stream=io.StringIO())
    p.set_schedule([(128, 10), (256, 10)])
    t = 5.0                                   # a slow first step: warm-up
    p.observe(Step(1, 20, 1.0, {}, t, scale=0))
    assert p.eta(Step(1, 20, 1.0, {}, t)) is None      # nothing steady measured yet
    for k in range(2, 11):                    # then 0.1 s per 128 px step
        t += 0.1
        p.observe(Step(k, 20, 1.0, {}, t, scale=0))
    # 10 steps of 4x the work remain: 4 s, not the 50 s the warm-up would suggest
    assert p.eta(Step(10, 20, 1.0, {}, t)) == pytest.approx(4.0)
    t += 3.0                                  # the first 256 px step warms up again
    p.observe(Step(11, 20, 1.0, {}, t, scale=1))
    assert p.eta(Step(11, 20, 1.0, {}, t)) == pytest.approx(3.6)
    plain = Progress(stream=io.StringIO())    # no schedule: steps count alike
    for k, t in ((1, 2.0), (2, 2.5), (3, 3.0)):
        plain.observe(Step(k, 10, 1.0, {}, t))
    assert plain.eta(Step(3, 10, 1.0, {}, 3.0)) == pytest.approx(3.5)
