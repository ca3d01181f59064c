"""impasto batch on the local executor: pairs from files, folders, globs and CSV, naming,
results.csv, the contact sheet, a bad input file failing only its pairs, skip-if-done, and the
one-line error when --executor ray is asked for without Ray. (Ray itself: test_ray.py.)"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from impasto import batch, executors
from impasto.errors import UserError


@pytest.fixture
def inputs(tmp_path, content_image, style_image):
    """photos/ with two photos, paintings/ with two paintings, 32 px, and a broken file."""
    photos, paintings = tmp_path / "photos", tmp_path / "paintings"
    photos.mkdir()
    paintings.mkdir()
    content_image.resize((32, 24)).save(photos / "a.png")
    content_image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((32, 24)).save(photos / "b.jpg")
    style_image.resize((32, 20)).save(paintings / "starry.png")
    style_image.rotate(90, expand=True).resize((20, 32)).save(paintings / "turned.png")
    (photos / "notes.txt").write_text("not an image")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return {"photos": photos, "paintings": paintings, "bad": bad, "dir": tmp_path}


# ----------------------------------------------------------------------------- pairs
def test_files_folders_and_globs_expand_in_order(inputs):
    photos, paintings = inputs["photos"], inputs["paintings"]
    got = batch.expand([str(photos), str(paintings / "t*.png"), str(photos / "a.png")], "content")
    assert got == [str(photos / "a.png"), str(photos / "b.jpg"), str(paintings / "turned.png")]
    assert batch.expand(["missing.jpg"], "content") == ["missing.jpg"]   # fails in its rows
    (inputs["dir"] / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        batch.expand([str(inputs["dir"] / "empty")], "content")
    with pytest.raises(UserError, match="matches no files"):
        batch.expand([str(photos / "*.gif")], "--style")


def test_pairs_csv_gives_pairs_and_their_own_options(inputs):
    f = inputs["dir"] / "pairs.csv"
    f.write_text("content,style,style_weight\nphotos/a.png,paintings/starry.png,\n"
                 "photos/b.jpg,paintings/starry.png,1e3\n")
    pairs = batch.read_pairs(f)
    assert [(Path(p.content).name, Path(p.style).name) for p in pairs] == \
        [("a.png", "starry.png"), ("b.jpg", "starry.png")]
    assert Path(pairs[0].content) == inputs["photos"] / "a.png"      # relative to the CSV
    assert pairs[0].options == {} and pairs[1].options == {"style_weight": 1000.0}
    cells = batch.cells(pairs, {"size": 32})
    assert [c.stem for c in cells] == ["a__starry", "b__starry_sw-1e3"]
    assert cells[1].options == {"size": 32, "style_weight": 1000.0}
    for text, message in [("c,style\nx,y\n", "must name a 'content' and a 'style'"),
                          ("content,style,stlye_weight\nx,y,1\n", "did you mean 'style_weight'"),
                          ("content,style,steps\nx,y,many\n", "line 2: option --vary steps: "
                                                             "'many' is not a whole number"),
                          ("content,style\n", "no pairs")]:
        f.write_text(text)
        with pytest.raises(UserError, match=message):
            batch.read_pairs(f)


def test_cells_are_named_by_their_inputs_and_laid_out_contents_by_styles():
    pairs = batch.cross(["p/a.jpg", "q/a.jpg", "p/b.png"], ["s/starry.jpg", "s/scream.jpg"])
    cells = batch.cells(pairs, {"seed": 3})
    assert [c.stem for c in cells] == ["a__starry", "a__scream", "a__starry_2", "a__scream_2",
                                       "b__starry", "b__scream"]
    assert [(c.row, c.col) for c in cells] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(c.options == {"seed": 3} and c.task == "transfer" for c in cells)


# ----------------------------------------------------------------------------- the command
def _csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_batch_end_to_end_a_bad_file_fails_its_row_and_a_rerun_skips(run_cli, inputs):
    out = inputs["dir"] / "out"
    args = ["batch", inputs["photos"], inputs["bad"], "--style", inputs["paintings"] / "starry.png",
            inputs["paintings"] / "turned.png", "-o", out, "--size", "32", "--steps", "2",
            "--seed", "4", "--tile", "48"]
    r = run_cli(*args)
    assert r.returncode == 1, r.stderr          # something failed: said by the exit status
    good = [f"{c}__{s}" for c in ("a", "b") for s in ("starry", "turned")]
    for stem in good:
        rec = json.loads((out / f"{stem}.json").read_text())
        assert rec["task"] == "transfer" and rec["seed"] == 4 and rec["output"] == f"{stem}.png"
        with Image.open(out / f"{stem}.png") as im:
            assert max(im.size) == 32
    assert not list(out.glob("broken__*.png")) and not list(out.glob(".*.part"))
    rows = _csv(out / "results.csv")
    assert [r_["file"] for r_ in rows] == [f"{s}.png" for s in good] + \
        ["broken__starry.png", "broken__turned.png"]
    assert all(r_["status"] == "ran" and float(r_["loss"]) > 0 and r_["seed"] == "4"
               and float(r_["seconds"]) > 0 for r_ in rows[:4])
    assert Path(rows[0]["content_image"]).name == "a.png" and \
        Path(rows[1]["style_image"]).name == "turned.png"
    assert rows[4]["status"] == "failed" and "broken.jpg" in rows[4]["error"]
    assert "2 failed" in r.stderr and "failed: broken__starry: content image" in r.stderr
    with Image.open(out / "contact_sheet.png") as sheet:
        # the style row and three content rows; a column of contents and two of results
        assert sheet.size[0] >= 3 * 48 and sheet.size[1] >= 3 * 36
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png") if "__" in p.name}
    again = run_cli(*args)
    assert again.returncode == 1
    assert again.stderr.count("done earlier, skipped") == 4, again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png") if "__" in p.name} == before


def test_the_sheet_has_contents_as_rows_and_styles_as_columns(run_cli, inputs, tmp_path):
    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    Image.new("RGB", (32, 24), (250, 0, 0)).save(red)
    Image.new("RGB", (32, 24), (0, 0, 250)).save(blue)
    out = tmp_path / "sheet"
    r = run_cli("batch", red, inputs["photos"] / "a.png", "--style", blue,
                inputs["paintings"] / "starry.png", "-o", out, "--size", "32", "--steps", "1",
                "--tile", "32", "--quiet")
    assert r.returncode == 0, r.stderr
    arr = np.asarray(Image.open(out / "contact_sheet.png").convert("RGB")).astype(int)
    ys, xs = np.nonzero(np.all(np.abs(arr - [250, 0, 0]) <= 3, axis=-1))
    yb, xb = np.nonzero(np.all(np.abs(arr - [0, 0, 250]) <= 3, axis=-1))
    assert len(ys) >= 32 * 24 - 40 and len(yb) >= 32 * 24 - 40
    # the content thumbnail heads the first column, the style thumbnail the first row
    assert xs.min() < xb.min() and yb.min() < ys.min()


@pytest.mark.parametrize("args, message", [
    (["{p}/a.png", "-o", "{t}/o"], "give --style STYLE"),
    (["--style", "{s}", "-o", "{t}/o"], "give CONTENT images"),
    (["{p}/a.png", "--style", "{s}", "-o", "{t}/o", "--lr", "-1"], "must be positive"),
    (["{p}/a.png", "--style", "{s}", "-o", "{p}/a.png"], "is a file"),
    (["{p}/*.gif", "--style", "{s}", "-o", "{t}/o"], "matches no files"),
    (["{p}/a.png", "--style", "{s}", "-o", "{t}/o", "--executor", "local",
      "--ray-address", "auto"], "is for --executor ray"),
    (["{p}/a.png", "--style", "{s}", "-o", "{t}/o", "--threads", "0"], "--threads: must be"),
    (["{p}/a.png", "--style", "{s}", "-o", "{t}/o", "--executor", "ray", "--ray-address",
      "127.0.0.1:1"], "no Ray head answers at 127.0.0.1:1"),
])
def test_a_bad_option_stops_the_batch_before_anything_is_made(run_cli, inputs, args, message):
    t, p = inputs["dir"], inputs["photos"]
    s = inputs["paintings"] / "starry.png"
    r = run_cli("batch", *[a.format(p=p, s=s, t=t) for a in args])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not (t / "o").exists()


def test_executor_ray_without_ray_is_one_line_up_front(run_cli, inputs, tmp_path, cli_env):
    """A 'ray' that cannot be imported (what a machine without the extra has) on the path."""
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    cli_env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), cli_env.get("PYTHONPATH", "")])
    for cmd in (["batch", inputs["photos"], "--style", inputs["paintings"]],
                ["sweep", inputs["photos"] / "a.png", inputs["paintings"] / "starry.png",
                 "--vary", "lr=1,2"],
                ["explore", inputs["photos"] / "a.png", inputs["paintings"] / "starry.png"]):
        r = run_cli(*cmd, "-o", tmp_path / "o", "--executor", "ray", "--size", "32")
        assert r.returncode == 2
        assert r.stderr.strip() == ("impasto: error: --executor ray needs Ray: pip install "
                                    "'impasto[ray]'"), r.stderr
        assert not (tmp_path / "o").exists()
    with pytest.raises(UserError, match=r"pip install 'impasto\[ray\]'"):
        import builtins
        real = builtins.__import__

        def no_ray(name, *a, **k):
            if name == "ray" or name.startswith("ray."):
                raise ImportError(name)
            return real(name, *a, **k)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(builtins, "__import__", no_ray)
            executors.make("ray", start=False)


def test_local_executor_runs_jobs_with_its_thread_count(inputs):
    import torch

    from impasto import api
    req = api.Request("transfer", {"size": 32, "steps": 1, "seed": 1},
                      content=str(inputs["photos"] / "a.png"),
                      styles=[str(inputs["paintings"] / "starry.png")])
    seen = []
    job = api.prepare(req)
    before = torch.get_num_threads()
    ex = executors.make("local", threads=2)
    [fin] = list(ex.run([executors.Work("k", req, job)],
                        events=lambda w: (lambda e: seen.append(torch.get_num_threads()))))
    assert fin.status == "ran" and fin.threads == 2 and fin.work.key == "k"
    assert set(seen) == {2} and torch.get_num_threads() == before
