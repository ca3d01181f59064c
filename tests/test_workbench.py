"""The research workbench: sweep grid expansion and naming, skip-if-done, the contact sheet's
layout and labels, loss plots, and layer exploration, on 32 px images."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from impasto import figures, sweep
from impasto.errors import UserError


# ----------------------------------------------------------------------------- --vary
def test_vary_values_take_the_option_types():
    v = sweep.parse_vary("style_weight=1e2,1e3,1e4", "transfer")
    assert v.names == ("style_weight",)
    assert v.values == [(100.0,), (1000.0,), (10000.0,)]
    assert v.texts == [("1e2",), ("1e3",), ("1e4",)]
    assert sweep.parse_vary("steps=10,20", "transfer").values == [(10,), (20,)]
    assert sweep.parse_vary("line-search=true,false", "transfer").values == [(True,), (False,)]
    layers = sweep.parse_vary("style_layers=relu1_1,relu1_1+relu2_1", "transfer")
    assert layers.values == [(["relu1_1"],), (["relu1_1", "relu2_1"],)]
    w = sweep.parse_vary("style_layer_weights=1+2", "transfer")
    assert w.values == [([1.0, 2.0],)]
    assert sweep.parse_vary("scales=none,1", "transfer").values == [(None,), (1,)]


def test_linked_options_vary_together():
    v = sweep.parse_vary("optimizer:lr=lbfgs:1,adam:0.02", "transfer")
    assert v.names == ("optimizer", "lr")
    assert v.values == [("lbfgs", 1.0), ("adam", 0.02)]
    assert v.slug(1) == "opt-adam_lr-0.02"
    assert v.label(1) == "opt adam, lr 0.02"


@pytest.mark.parametrize("spec, message", [
    ("style_wieght=1,2", "did you mean 'style_weight'"),
    ("style_weight", "is not NAME=VALUE"),
    ("style_weight=1,abc", "'abc' is not a number"),
    ("steps=1.5", "not a whole number"),
    ("optimizer=lbfgs,sgd", "'sgd' is not one of lbfgs, adam"),
    ("optimizer:lr=adam", "gives 1 values for the 2 linked options"),
    ("style_weight=1,1", "repeats a value"),
])
def test_bad_vary_specs_say_what_is_wrong(spec, message):
    with pytest.raises(UserError, match=message):
        sweep.parse_vary(spec, "transfer")


def test_vary_refuses_options_of_other_tasks():
    with pytest.raises(UserError, match="does not apply to impasto texture"):
        sweep.parse_vary("content_weight=1,2", "texture")


def test_an_option_cannot_be_varied_twice():
    varies = [sweep.parse_vary("lr=1,2", "transfer"), sweep.parse_vary("optimizer:lr=adam:1", "transfer")]
    with pytest.raises(UserError, match="'lr' is varied twice"):
        sweep.check_axes(varies)
    with pytest.raises(UserError, match="at least one --vary"):
        sweep.check_axes([])


def test_grid_expansion_names_rows_and_columns():
    varies = [sweep.parse_vary("init=content,gaussian", "transfer"),
              sweep.parse_vary("style_weight=1e2,1e3,1e4", "transfer")]
    cells = sweep.sweep_cells("transfer", {"seed": 7, "size": 32}, varies, "tubingen_starry")
    assert len(cells) == 6
    assert [c.stem for c in cells[:3]] == ["tubingen_starry_init-content_sw-1e2",
                                           "tubingen_starry_init-content_sw-1e3",
                                           "tubingen_starry_init-content_sw-1e4"]
    assert cells[4].stem == "tubingen_starry_init-gaussian_sw-1e3"
    assert [(c.row, c.col) for c in cells] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert cells[4].options == {"seed": 7, "size": 32, "init": "gaussian", "style_weight": 1000.0}
    assert all(c.options["seed"] == 7 for c in cells)
    assert len({c.stem for c in cells}) == 6
    # a file value is named by its stem; list values keep their items
    v = sweep.parse_vary("init=content,/some/where/photo.jpg", "transfer")
    assert v.slug(1) == "init-photo"
    lay = sweep.parse_vary("style_layers=relu1_1+relu2_1", "transfer")
    assert lay.slug(0) == "sl-relu1_1+relu2_1"


def test_every_cell_is_checked_before_anything_runs(image_files):
    varies = [sweep.parse_vary("lr=1,-2", "transfer")]
    cells = sweep.sweep_cells("transfer", {}, varies, "x")
    sources = {"transfer": (str(image_files["content"]), [str(image_files["style"])])}
    with pytest.raises(UserError, match="x_lr--2: option --lr: must be positive"):
        sweep.prepare(cells, sources, image_files["out"])


# ----------------------------------------------------------------------------- contact sheet
COLOURS = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def _solid(colour, size=(32, 24)):
    return Image.new("RGB", size, colour)


def _find(sheet, colour):
    arr = np.asarray(sheet).astype(int)
    hit = np.all(np.abs(arr - np.array(colour)) <= 2, axis=-1)
    ys, xs = np.nonzero(hit)
    return hit.sum(), (xs.min(), ys.min(), xs.max(), ys.max()) if len(xs) else None


def test_contact_sheet_places_every_tile_in_its_row_and_column():
    rows = [[figures.Tile(_solid(COLOURS[r * 3 + c]), (f"r{r}c{c}",)) for c in range(3)]
            for r in range(2)]
    sheet = figures.contact_sheet(rows, tile=32, row_labels=["a", "b"],
                                  col_labels=["x", "y", "z"], title="t")
    boxes = {}
    for i, colour in enumerate(COLOURS):
        count, box = _find(sheet, colour)
        assert count == 32 * 24, f"tile {i} is not pasted whole"
        boxes[i] = box
    # same row: same top; same column: same left; columns left to right, rows top to bottom
    for r in range(2):
        assert len({boxes[r * 3 + c][1] for c in range(3)}) == 1
        assert boxes[r * 3][0] < boxes[r * 3 + 1][0] < boxes[r * 3 + 2][0]
    for c in range(3):
        assert boxes[c][0] == boxes[3 + c][0]
        assert boxes[c][1] < boxes[3 + c][1]


def _ink_below(sheet, box, depth=30):
    x0, _, x1, y1 = box
    strip = np.asarray(sheet.convert("L"))[y1 + 2: y1 + depth, x0: x1 + 1]
    return int((strip < 128).sum())


def test_contact_sheet_prints_labels_under_tiles_and_marks_missing_ones():
    rows = [[figures.Tile(_solid(COLOURS[0]), ("sw 1e3", "loss 0.5")),
             figures.Tile(None, ("sw 1e4",))]]
    with_labels = figures.contact_sheet(rows, tile=32)
    without = figures.contact_sheet([[figures.Tile(_solid(COLOURS[0]), ()),
                                      figures.Tile(None, ())]], tile=32)
    box = _find(with_labels, COLOURS[0])[1]
    assert _ink_below(with_labels, box) > 20          # text under the tile
    assert _ink_below(without, _find(without, COLOURS[0])[1]) == 0
    assert with_labels.size[1] > without.size[1]      # room for the caption lines
    # the missing tile is a grey box, not a picture
    assert _find(with_labels, figures.EMPTY)[0] > 0


def test_long_labels_wrap_to_the_tile_width():
    label = "sl relu1_1+relu2_1+relu3_1+relu4_1+relu5_1 and more words here"
    one = figures.contact_sheet([[figures.Tile(_solid(COLOURS[1]), (label,))]], tile=64)
    two = figures.contact_sheet([[figures.Tile(_solid(COLOURS[1]), (label,)),
                                  figures.Tile(_solid(COLOURS[2]), (label,))]], tile=64,
                                col_labels=["style_layers = " + label.split()[1]] * 2)
    assert one.size[0] < 64 + 3 * 10 + 1
    # no text runs past its tile into the next column: the gap between the tiles stays blank
    gray = np.asarray(two.convert("L"))
    left, right = _find(two, COLOURS[1])[1], _find(two, COLOURS[2])[1]
    gap = gray[:, left[2] + 2: right[0] - 1]
    assert gap.size and (gap < 200).sum() == 0


# ----------------------------------------------------------------------------- loss plots
HISTORY = [{"step": i, "time": 0.1 * i, "loss": 10.0 / i, "content": 1.0 / i, "style": 0.5 / i,
            "tv": 0.01, "side": 64 if i < 5 else 128} for i in range(1, 11)]


def test_plots_are_written_as_png(tmp_path):
    pytest.importorskip("matplotlib")
    figures.plot_history(HISTORY, {"content": 1.0, "style": 10.0, "tv": 1.0}, tmp_path / "a.png",
                         title="run")
    figures.plot_overlay([("one", HISTORY), ("two", HISTORY[:5])], tmp_path / "b.png")
    for name in ("a.png", "b.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size[0] > 400
    assert figures.weighted_terms(HISTORY[0], {"content": 2.0, "style": 10.0, "tv": 0.0}) == \
        {"content": 2.0, "style": 5.0}


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_mpl(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_mpl)
    with pytest.raises(UserError, match=r"pip install 'impasto\[plot\]'"):
        figures.require_plotting()


# ----------------------------------------------------------------------------- the CLI
@pytest.fixture
def tiny_files(tmp_path, content_image, style_image):
    c, s = tmp_path / "photo.png", tmp_path / "paint.png"
    content_image.resize((32, 24)).save(c)
    style_image.resize((32, 20)).save(s)
    return c, s, tmp_path


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")}


def test_sweep_end_to_end_then_skips_finished_cells(run_cli, tiny_files):
    c, s, tmp = tiny_files
    out = tmp / "sweep"
    args = ["sweep", c, s, "-o", out, "--vary", "style_weight=1,1e2",
            "--vary", "init=content,gaussian", "--size", "32", "--steps", "3", "--seed", "5",
            "--plot"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    stems = [f"photo_paint_sw-{w}_init-{i}" for w in ("1", "1e2") for i in ("content", "gaussian")]
    for stem in stems:
        assert (out / f"{stem}.png").is_file() and (out / f"{stem}_loss.png").is_file()
        rec = json.loads((out / f"{stem}.json").read_text())
        assert rec["seed"] == 5 and rec["options"]["size"] == 32
    rec = json.loads((out / "photo_paint_sw-1e2_init-gaussian.json").read_text())
    assert rec["options"]["style_weight"] == 100.0 and rec["options"]["init"] == "gaussian"
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r_["file"] for r_ in rows] == [f"{s_}.png" for s_ in stems]
    assert {"style_weight", "init", "loss", "content", "style", "tv", "steps", "seconds"} <= set(rows[0])
    assert all(float(r_["loss"]) > 0 and int(r_["steps"]) == 3 for r_ in rows)
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.size[0] > 2 * 256 and sheet.size[1] > 2 * 24
    assert (out / "losses.png").is_file()

    # a record from an impasto that had fewer options (here: no tol_window) still counts
    old = out / f"{stems[0]}.json"
    rec = json.loads(old.read_text())
    del rec["options"]["tol_window"]
    old.write_text(json.dumps(rec))
    before = _mtimes(out)
    again = run_cli(*args[:-1])   # same options (no --plot): nothing to run
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("done earlier, skipped") == 4
    after = _mtimes(out)
    assert all(after[f"{s_}.png"] == before[f"{s_}.png"] for s_ in stems)
    # the seed is remembered, so leaving it out still finds the finished cells
    third = run_cli(*[a for a in args[:-1] if a not in ("--seed", "5")])
    assert third.stderr.count("done earlier, skipped") == 4, third.stderr
    # another value of a fixed option makes every cell stale
    changed = run_cli(*args[:-1], "--tv-weight", "0.5")
    assert changed.returncode == 0 and "skipped" not in changed.stderr.split("impasto sweep: 4 run")[0]
    assert "4 run, 0 skipped" in changed.stderr


def test_sweep_texture_task_and_a_seed_per_sample(run_cli, tiny_files):
    c, s, tmp = tiny_files
    out = tmp / "tex"
    r = run_cli("sweep", "--task", "texture", s, "-o", out, "--vary", "seed=1,2", "--size", "32",
                "--steps", "2")
    assert r.returncode == 0, r.stderr
    a, b = (np.asarray(Image.open(out / f"paint_seed-{k}.png")) for k in (1, 2))
    assert a.shape == b.shape and not np.array_equal(a, b)


@pytest.mark.parametrize("args, message", [
    (["sweep", "{c}", "{s}", "-o", "{t}/o"], "the following arguments are required: --vary"),
    (["sweep", "{c}", "{s}", "-o", "{t}/o", "--vary", "stlye_weight=1"], "did you mean 'style_weight'"),
    (["sweep", "{c}", "-o", "{t}/o", "--vary", "style_weight=1"], "give CONTENT STYLE"),
    (["sweep", "{c}", "{s}", "-o", "{c}", "--vary", "style_weight=1"], "is a file"),
    (["sweep", "{c}", "{s}", "-o", "{t}/no/such", "--vary", "style_weight=1"], "does not exist"),
    (["sweep", "{c}", "{t}/missing.png", "-o", "{t}/o", "--vary", "style_weight=1"], "no such file"),
    (["sweep", "{c}", "{s}", "-o", "{t}/o", "--vary", "lr=-1"], "must be positive"),
    (["sweep", "{c}", "{s}", "-o", "{t}/o", "--vary", "init=content,{t}/nope.png"], "no such file"),
    (["explore", "{c}", "{s}", "-o", "{t}/o", "--layers", "relu9_1"], "did you mean"),
])
def test_workbench_bad_input_is_one_line(run_cli, tiny_files, args, message):
    c, s, tmp = tiny_files
    r = run_cli(*[a.format(c=c, s=s, t=tmp) for a in args])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not list((tmp / "o").glob("*.png")) if (tmp / "o").is_dir() else True


def test_explore_makes_both_figures(run_cli, tiny_files):
    c, s, tmp = tiny_files
    out = tmp / "explore"
    r = run_cli("explore", c, s, "-o", out, "--size", "32", "--steps", "2", "--seed", "3",
                "--layers", "relu1_1", "relu2_1", "relu3_1", "--thumb", "48", "--quiet")
    assert r.returncode == 0, r.stderr
    for layer in ("relu1_1", "relu2_1", "relu3_1"):
        rec = json.loads((out / f"reconstruct_{layer}.json").read_text())
        assert rec["task"] == "reconstruct" and rec["options"]["content_layers"] == [layer]
    sets = [json.loads((out / f"texture_{k}_{l}.json").read_text())["options"]["style_layers"]
            for k, l in ((1, "relu1_1"), (2, "relu2_1"), (3, "relu3_1"))]
    assert sets == [["relu1_1"], ["relu1_1", "relu2_1"], ["relu1_1", "relu2_1", "relu3_1"]]
    for name in ("reconstructions.png", "textures.png"):
        with Image.open(out / name) as fig:
            # the source and three runs, each 48 px wide plus padding, in one row
            assert 4 * 48 <= fig.size[0] <= 4 * (48 + 10) + 10
    with open(out / "results.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 6
