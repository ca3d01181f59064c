"""The run record: what is written, paths relative to the output, and reading it back."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from impasto import image as io
from impasto import record
from impasto.config import Config
from impasto.errors import UserError
from impasto.optimize import Outcome
from impasto.tasks import Result


def make_result(loss=0.25, history=None, stop="budget"):
    history = history if history is not None else [
        {"step": 1, "time": 0.1, "loss": 2.0, "content": 0.0, "style": 0.19, "tv": 0.1},
        {"step": 2, "time": 0.2, "loss": 0.5, "content": 0.1, "style": 0.03, "tv": 0.1},
    ]
    cfg = Config.for_task("transfer", size=32, steps=2, seed=42, style_weight=7.0)
    terms = {k: v for k, v in history[-1].items() if k in ("content", "style", "tv")} if history else {}
    out = Outcome(torch.zeros(1, 3, 4, 4), loss, len(history), len(history) + 1, stop, history,
                  terms)
    return Result(torch.zeros(1, 3, 4, 4), cfg, "transfer", out, "weights-id", "cpu",
                  {"setup_s": 0.1, "optimise_s": 0.2, "total_s": 0.3}, "fp32")


@pytest.fixture
def layout(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "runs").mkdir()
    for name in ("c.png", "s.png"):
        (tmp_path / "in" / name).write_bytes(b"x")
    return tmp_path


def test_record_path():
    assert record.record_path("out/a.png") == Path("out/a.json")
    assert record.record_path("b.jpg") == Path("b.json")


def test_build_has_every_field(layout):
    output = layout / "runs" / "out.png"
    inputs = {"content": str(layout / "in" / "c.png"), "styles": [str(layout / "in" / "s.png")]}
    rec = record.build(make_result(), output, inputs, argv=["impasto", "transfer", "x"])
    assert rec["format"] == 1 and rec["task"] == "transfer"
    assert rec["output"] == "out.png"
    assert rec["inputs"] == {"content": os.path.join("..", "in", "c.png"),
                             "styles": [os.path.join("..", "in", "s.png")]}
    assert rec["options"] == make_result().config.to_dict()
    assert rec["options"]["style_weight"] == 7.0 and rec["seed"] == 42
    assert rec["weights"] == "weights-id" and rec["device"] == "cpu"
    assert rec["precision"] == "fp32"
    assert rec["command"] == ["impasto", "transfer", "x"]
    assert rec["timings"]["total_s"] == 0.3
    assert set(rec["versions"]) >= {"impasto", "python", "torch", "numpy", "pillow", "platform"}
    assert rec["versions"]["torch"] == torch.__version__
    assert rec["result"] == {"loss": 0.25, "steps": 2, "evaluations": 3, "stop_reason": "budget",
                             "terms": {"content": 0.1, "style": 0.03, "tv": 0.1}}
    assert rec["history"] == make_result().outcome.history


def test_write_and_read_round_trip_with_absolute_inputs(layout):
    output = layout / "runs" / "out.png"
    inputs = {"content": str(layout / "in" / "c.png"), "styles": [str(layout / "in" / "s.png")],
              "init": None}
    rec = record.build(make_result(), output, inputs)
    path = record.record_path(output)
    record.write(rec, path)
    assert sorted(os.listdir(layout / "runs")) == ["out.json"]    # no temp file left
    assert json.loads(path.read_text())["seed"] == 42
    back = record.read(path)
    assert back["task"] == "transfer" and back["options"] == rec["options"]
    assert Path(back["inputs"]["content"]).resolve() == (layout / "in" / "c.png").resolve()
    assert [Path(p).resolve() for p in back["inputs"]["styles"]] == \
        [(layout / "in" / "s.png").resolve()]
    assert "init" not in back["inputs"]


def test_the_record_survives_moving_the_folder(layout, tmp_path_factory):
    """Paths are relative to the record, so moving inputs and outputs together keeps it valid."""
    output = layout / "runs" / "out.png"
    inputs = {"content": str(layout / "in" / "c.png"), "styles": [str(layout / "in" / "s.png")]}
    record.write(record.build(make_result(), output, inputs), record.record_path(output))
    moved = tmp_path_factory.mktemp("elsewhere") / "project"
    os.rename(layout, moved)
    back = record.read(moved / "runs" / "out.json")
    assert Path(back["inputs"]["content"]).resolve() == (moved / "in" / "c.png").resolve()
    assert Path(back["inputs"]["content"]).is_file()


def test_non_finite_numbers_are_written_as_null(tmp_path):
    """A run can end 'non-finite': the record stays standard JSON, the number becomes null."""
    history = [{"step": 1, "time": 0.1, "loss": math.nan, "content": math.inf, "style": 0.5,
                "tv": -math.inf}]
    rec = record.build(make_result(loss=math.inf, history=history, stop="non-finite"),
                       tmp_path / "o.png", {"content": None, "styles": []})
    assert rec["inputs"]["content"] is None
    record.write(rec, tmp_path / "o.json")
    text = (tmp_path / "o.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} written"))
    assert strict["result"]["loss"] is None and strict["result"]["stop_reason"] == "non-finite"
    assert strict["history"] == [{"step": 1, "time": 0.1, "loss": None, "content": None,
                                  "style": 0.5, "tv": None}]
    assert strict["result"]["terms"] == {"content": None, "style": 0.5, "tv": None}
    back = record.read(tmp_path / "o.json")
    assert back["result"]["loss"] is None and back["options"] == rec["options"]
    # the record built in memory is not changed by writing it
    assert math.isinf(rec["result"]["loss"])


def test_sanitise():
    assert record.sanitise(1.5) == 1.5 and record.sanitise(3) == 3
    assert record.sanitise("nan") == "nan"
    assert record.sanitise(math.nan) is None and record.sanitise(-math.inf) is None
    assert record.sanitise(True) is True and record.sanitise(None) is None
    nested = {"a": [1.0, math.nan, {"b": (math.inf, 2)}], "c": {"d": -math.inf, "e": "x"}}
    assert record.sanitise(nested) == {"a": [1.0, None, {"b": [None, 2]}],
                                       "c": {"d": None, "e": "x"}}
    assert math.isnan(nested["a"][1])           # the input is left alone
    json.dumps(record.sanitise(nested), allow_nan=False)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_a_record_with_a_non_standard_number_is_refused(tmp_path, literal):
    rec = good_record()
    text = json.dumps(rec).replace('"loss": 0.25', f'"loss": {literal}')
    assert literal in text
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        record.read(path)
    assert str(e.value) == (f"--from-record {path}: not standard JSON: {literal} is not "
                            "allowed (write null for a missing number)")


def test_png_metadata_can_be_read_back_as_a_record(tmp_path):
    rec = record.build(make_result(), tmp_path / "o.png", {"content": None, "styles": []})
    meta = record.png_metadata(rec)
    assert meta["Software"].startswith("impasto")
    short = json.loads(meta["impasto"])
    assert short["task"] == "transfer" and short["seed"] == 42
    assert short["options"] == rec["options"] and short["precision"] == "fp32"
    io.save(torch.zeros(1, 3, 4, 4), tmp_path / "o.png", metadata=meta)
    back = record.read(tmp_path / "o.png")
    assert back["task"] == "transfer" and back["options"]["style_weight"] == 7.0
    assert back["inputs"] == {}


@pytest.mark.parametrize("content", [None, "not json {", "[1, 2]", '{"task": "transfer"}',
                                     "png-without-text"])
def test_reading_something_else_is_a_user_error(tmp_path, content):
    if content is None:
        path = tmp_path / "missing.json"
    elif content == "png-without-text":
        path = tmp_path / "plain.png"
        Image.new("RGB", (4, 4)).save(path)
    else:
        path = tmp_path / "bad.json"
        path.write_text(content)
    with pytest.raises(UserError) as e:
        record.read(path)
    assert path.name in str(e.value) and "--from-record" in str(e.value)


# ============================================================================= a record is input
def good_record(**changes):
    """A record as ``build`` writes it (JSON types), with top-level ``changes``."""
    rec = json.loads(json.dumps(record.sanitise(record.build(
        make_result(), Path("runs/out.png"), {"content": "in/c.png", "styles": ["in/s.png"]}))))
    rec["inputs"] = {"content": "../in/c.png", "styles": ["../in/s.png"]}
    rec.update(changes)
    return rec


def read_problems(tmp_path, rec, name="r.json"):
    """The problem lines of the UserError reading ``rec`` (written as JSON) gives."""
    path = tmp_path / name
    path.write_text(json.dumps(rec) if not isinstance(rec, str) else rec)
    with pytest.raises(UserError) as e:
        record.read(path)
    head, *lines = str(e.value).split("\n")
    if not lines:      # a single problem is one line: "--from-record PATH: field: why"
        prefix = f"--from-record {path}: "
        assert head.startswith(prefix)
        return [head[len(prefix):]]
    assert head == f"--from-record {path}: {len(lines)} problems:"
    assert len(lines) > 1 and all(line.startswith("  ") for line in lines)
    return [line[2:] for line in lines]


def with_options(**changes):
    rec = good_record()
    rec["options"].update(changes)
    return rec


def test_a_good_record_has_no_problems():
    assert record.problems(good_record()) == []
    for task in ("reconstruct", "texture", "video"):
        from impasto.config import Config
        options = Config.for_task(task).to_dict()
        assert record.problems(good_record(task=task, options=options)) == []
    # an option the record lacks (added after it was written) takes its default
    rec = good_record()
    del rec["options"]["flow"], rec["options"]["tv_norm"]
    assert record.problems(rec) == []


@pytest.mark.parametrize("changes, line", [
    ({"format": "1"}, "format: '1' is not a whole number"),
    ({"format": True}, "format: True is not a whole number"),
    ({"format": 2}, "format: 2 is newer than this impasto reads (up to 1): upgrade impasto"),
    ({"format": 0}, "format: 0 is not a record format (1 to 1)"),
    ({"task": "paint"}, "task: 'paint' is not one of transfer, reconstruct, texture, video"),
    ({"task": ["transfer"]}, "task: ['transfer'] is not one of transfer"),
    ({"options": "size=512"}, "options: 'size=512' is not an object"),
    ({"options": None}, "options: None is not an object"),
    ({"inputs": ["c.png"]}, "inputs: ['c.png'] is not an object"),
])
def test_each_top_level_field_is_checked(tmp_path, changes, line):
    found = read_problems(tmp_path, good_record(**changes))
    assert len(found) == 1 and found[0].startswith(line), found


def test_missing_fields(tmp_path):
    rec = good_record()
    for key in ("format", "task", "options"):
        del rec[key]
    assert read_problems(tmp_path, rec) == [
        "format: missing (is this an impasto run record?)",
        "task: missing; give one of transfer, reconstruct, texture, video",
        "options: missing (an object of option names and values)"]
    rec = good_record()
    del rec["inputs"]                      # may be left out: the command line gives them
    assert record.problems(rec) == []


@pytest.mark.parametrize("changes, line", [
    ({"size": "512"}, "options.size: '512' is a string; give a whole number without quotes"),
    ({"size": "abc"}, "options.size: 'abc' is not a whole number"),
    ({"size": 8}, "options.size: must be at least 16 pixels, got 8"),
    ({"size": None}, "options.size: None is not allowed; give a whole number"),
    ({"seed": None}, None),                           # Optional: null is fine
    ({"lr": None, "scales": None, "weights": None, "fps": None}, None),
    ({"steps": 3.5}, "options.steps: 3.5 is not a whole number"),
    ({"style_weight": "10"}, "options.style_weight: '10' is a string; give a number"),
    ({"line_search": "false"}, "options.line_search: 'false' is not true or false"),
    ({"line_search": 0}, "options.line_search: 0 is not true or false"),
    ({"style_layers": "relu1_1"}, "options.style_layers: 'relu1_1' is a string; give a list of "
                                  "layer names"),
    ({"style_layer_weights": [1, "2"]}, "options.style_layer_weights: [1, '2'] has '2' at "
                                        "position 2"),
    ({"optimizer": "sgd"}, "options.optimizer: 'sgd' is not one of lbfgs, adam"),
    ({"init": 3}, "options.init: 3 is not a string"),
    ({"stpes": 3}, "options.stpes: unknown option (did you mean 'steps'?)"),
    ({"style_scale": 9.0}, "options.style_scale: must be at most 8, got 9"),
])
def test_options_are_checked_for_type_and_range(tmp_path, changes, line):
    rec = with_options(**changes)
    if line is None:
        assert record.problems(rec) == []
        return
    found = read_problems(tmp_path, rec)
    assert len(found) == 1 and found[0].startswith(line), found


def test_ranges_are_those_of_the_records_task():
    assert record.problems(with_options(init="content")) == []
    assert record.problems(good_record(task="texture", options={"init": "content"})) == [
        "options.init: texture synthesis has no content image: use gaussian, uniform, style or "
        "an image file"]


@pytest.mark.parametrize("inputs, line", [
    ({"content": 3}, "inputs.content: 3 is not a file path (a string)"),
    ({"content": ""}, "inputs.content: '' is empty; give a file path"),
    ({"styles": "s.png"}, "inputs.styles: 's.png' is not a list of file paths"),
    ({"styles": ["s.png", None]}, "inputs.styles[1]: null is not allowed; give a file path"),
    ({"styles": [["s.png"]]}, "inputs.styles[0]: ['s.png'] is not a file path"),
    ({"init": 1.5}, "inputs.init: 1.5 is not a file path"),
    ({"mask": ["m.png"]}, "inputs.mask: ['m.png'] is not a file path"),
    ({"input": {}}, "inputs.input: {} is not a file path"),
    ({"first_mask": 0}, "inputs.first_mask: 0 is not a file path"),
    ({"mask_video": True}, "inputs.mask_video: True is not a file path"),
    ({"region_styles": {"ff0000": "s.png"}}, "inputs.region_styles: {'ff0000': 's.png'} is not "
                                              "a list of [colour, path or null] pairs"),
    ({"region_styles": [["ff0000"]]}, "inputs.region_styles[0]: ['ff0000'] is not a [colour, "
                                      "path or null] pair"),
    ({"region_styles": [[255, "s.png"]]}, "inputs.region_styles[0]: the colour 255 is not a "
                                          "colour"),
    ({"region_styles": [["red", 5]]}, "inputs.region_styles[0]: 5 is not a file path"),
    ({"contnet": "c.png"}, "inputs.contnet: unknown input (did you mean 'content'?)"),
])
def test_inputs_are_checked(tmp_path, inputs, line):
    found = read_problems(tmp_path, good_record(inputs=inputs))
    assert len(found) == 1 and found[0].startswith(line), found


def test_good_inputs_of_every_kind_pass():
    inputs = {"content": None, "styles": [], "init": None, "mask": "m.png", "input": "clip.mp4",
              "first_mask": "f.png", "mask_video": "mv.mp4",
              "region_styles": [["ff0000", "s.png"], ["blue", None]]}
    assert record.problems(good_record(inputs=inputs)) == []


def test_every_problem_is_reported_at_once(tmp_path):
    rec = good_record(format=7, inputs={"content": 1, "styls": []})
    rec["options"].update(size="abc", style_layers="relu1_1", bogus=1)
    from impasto.config import field_names
    from impasto.errors import closest
    assert read_problems(tmp_path, rec) == [
        "format: 7 is newer than this impasto reads (up to 1): upgrade impasto",
        f"options.bogus: unknown option (did you mean '{closest('bogus', field_names())}'?)",
        "options.size: 'abc' is not a whole number",
        "options.style_layers: 'relu1_1' is a string; give a list of layer names",
        "inputs.content: 1 is not a file path (a string)",
        "inputs.styls: unknown input (did you mean 'styles'?)"]


def test_a_long_value_is_cut(tmp_path):
    found = read_problems(tmp_path, with_options(device=["x" * 200]))
    assert len(found) == 1 and len(found[0]) < 120 and "..." in found[0]


@pytest.mark.parametrize("text, says", [
    ("[1, 2]", "record: [1, 2] is not a JSON object"),
    ('"transfer"', "record: 'transfer' is not a JSON object"),
    ("null", "record: None is not a JSON object"),
])
def test_a_record_that_is_not_an_object(tmp_path, text, says):
    assert read_problems(tmp_path, text) == [says]


def test_broken_json_says_where(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"format": 1,\n "task": }')
    with pytest.raises(UserError) as e:
        record.read(path)
    assert str(e.value).startswith(f"--from-record {path}: not an impasto run record: not "
                                   "valid JSON (Expecting value at line 2 column")
    path.write_bytes(b'{"task": "\xff"}')
    with pytest.raises(UserError, match="not UTF-8 text"):
        record.read(path)


# ----------------------------------------------------------------------------- what a file is
def test_a_folder_is_refused(tmp_path):
    (tmp_path / "r.json").mkdir()
    with pytest.raises(UserError) as e:
        record.read(tmp_path / "r.json")
    assert str(e.value) == f"--from-record {tmp_path / 'r.json'}: is a folder, not a record file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_opening_it(tmp_path, monkeypatch):
    fifo = tmp_path / "r.json"
    os.mkfifo(fifo)
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: opened.append(p) or real_open(p, *a, **k))
    with pytest.raises(UserError) as e:
        record.read(fifo)      # opening a FIFO with no writer would block
    assert str(e.value) == f"--from-record {fifo}: is a FIFO, not a record file"
    assert opened == []


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null here")
def test_a_device_is_refused():
    with pytest.raises(UserError, match="/dev/null: is a device, not a record file"):
        record.read("/dev/null")


def test_a_record_over_64_mb_is_refused_without_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "big.json"
    with open(path, "wb") as fh:          # sparse: no 64 MB written
        fh.truncate(record.MAX_RECORD_BYTES + 1)
    monkeypatch.setattr(os, "open", lambda *a, **k: pytest.fail("the file was opened"))
    with pytest.raises(UserError) as e:
        record.read(path)
    assert str(e.value) == f"--from-record {path}: is 64 MB; a run record is at most 64 MB"


def test_a_record_of_exactly_the_limit_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(record, "MAX_RECORD_BYTES", 2000)
    text = json.dumps(good_record())
    path = tmp_path / "r.json"
    path.write_text(text + " " * (2000 - len(text)))
    assert path.stat().st_size == 2000
    assert record.read(path)["task"] == "transfer"
    path.write_text(text + " " * (2001 - len(text)))
    with pytest.raises(UserError, match="a run record is at most 0 MB"):
        record.read(path)


# ----------------------------------------------------------------------------- paths
def test_paths_are_read_relative_to_the_record_not_the_working_directory(layout, monkeypatch,
                                                                         tmp_path_factory):
    rec = good_record()
    rec["options"].update(weights="../models/w.pth", init="../in/start.png")
    rec["inputs"].update(init="../in/start.png", mask="../in/m.png",
                         region_styles=[["ff0000", "../in/s.png"], ["0000ff", None]])
    (layout / "runs" / "r.json").write_text(json.dumps(rec))
    elsewhere = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(elsewhere)
    for path in (layout / "runs" / "r.json", os.path.relpath(layout / "runs" / "r.json")):
        back = record.read(path)
        ins = back["inputs"]
        root = layout.resolve()
        assert ins["content"] == str(root / "in" / "c.png")
        assert ins["styles"] == [str(root / "in" / "s.png")]
        assert ins["init"] == ins["mask"].replace("m.png", "start.png") == \
            str(root / "in" / "start.png")
        assert ins["region_styles"] == [["ff0000", str(root / "in" / "s.png")], ["0000ff", None]]
        assert back["options"]["weights"] == str(root / "models" / "w.pth")
        assert back["options"]["init"] == str(root / "in" / "start.png")
        assert all(os.path.isabs(p) for _, p in record.files_read(back))


@pytest.mark.parametrize("init", ["content", "style", "gaussian", "uniform"])
def test_a_named_init_is_not_a_path(tmp_path, init):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(with_options(init=init) if init != "style" else
                               good_record(task="texture", options={"init": "style"})))
    assert record.read(path)["options"]["init"] == init


def test_build_stores_the_weights_and_an_init_file_relative_to_the_output(layout):
    result = make_result()
    result.config = result.config.replace(weights=str(layout / "models" / "w.pth"),
                                          init=str(layout / "in" / "start.png"))
    output = layout / "runs" / "out.png"
    rec = record.build(result, output, {"content": str(layout / "in" / "c.png"), "styles": [],
                                        "init": str(layout / "in" / "start.png")})
    assert rec["options"]["weights"] == os.path.join("..", "models", "w.pth")
    assert rec["options"]["init"] == os.path.join("..", "in", "start.png")
    assert rec["inputs"]["init"] == os.path.join("..", "in", "start.png")
    assert result.config.weights == str(layout / "models" / "w.pth")    # the config is not changed
    record.write(rec, record.record_path(output))
    back = record.read(record.record_path(output))
    assert back["options"]["weights"] == str((layout / "models" / "w.pth").resolve())
    assert back["options"]["init"] == str((layout / "in" / "start.png").resolve())
    # a named init and no weights are left as they are
    plain = record.build(make_result(), output, {"content": None, "styles": []})
    assert plain["options"]["init"] == "content" and plain["options"]["weights"] is None


def test_relative_options():
    opts = {"weights": "/a/b/w.pth", "init": "/a/c/i.png", "size": 3}
    assert record.relative_options(opts, Path("/a/b")) == {
        "weights": "w.pth", "init": os.path.join("..", "c", "i.png"), "size": 3}
    assert opts["weights"] == "/a/b/w.pth"
    assert record.relative_options({"weights": None, "init": "uniform"}, Path("/a")) == \
        {"weights": None, "init": "uniform"}


def test_files_read_lists_every_file_with_its_role(layout):
    rec = good_record()
    rec["options"].update(weights="../models/w.pth", init="../in/start.png")
    rec["inputs"] = {"content": "../in/c.png", "styles": ["../in/s.png", "../in/t.png"],
                     "init": "../in/start.png", "mask": "../in/m.png",
                     "region_styles": [["ff0000", "../in/s.png"], ["0000ff", None]]}
    (layout / "runs" / "r.json").write_text(json.dumps(rec))
    r = str(layout.resolve() / "in")
    assert record.files_read(record.read(layout / "runs" / "r.json")) == [
        ("content", f"{r}/c.png".replace("/", os.sep)),
        ("style", os.path.join(r, "s.png")), ("style", os.path.join(r, "t.png")),
        ("init", os.path.join(r, "start.png")), ("mask", os.path.join(r, "m.png")),
        ("region ff0000 style", os.path.join(r, "s.png")),
        ("weights", str(layout.resolve() / "models" / "w.pth"))]
    # a video record
    video = good_record(task="video", options={"size": 64},
                        inputs={"input": "../in/clip.mp4", "styles": ["../in/s.png"],
                                "first_mask": "../in/f.png", "region_styles": [["red", None]]})
    (layout / "runs" / "v.json").write_text(json.dumps(video))
    assert record.files_read(record.read(layout / "runs" / "v.json")) == [
        ("style", os.path.join(r, "s.png")), ("input", os.path.join(r, "clip.mp4")),
        ("first mask", os.path.join(r, "f.png"))]
    # an init file only in the options (a PNG's record): still listed; a named init is not
    opts_only = {"task": "transfer", "options": {"init": "/x/start.png"}, "inputs": {}}
    assert record.files_read(opts_only) == [("init", "/x/start.png")]
    assert record.files_read({"options": {"init": "gaussian"}, "inputs": {}}) == []


def test_a_png_record_is_checked_the_same_way(tmp_path):
    rec = record.build(make_result(), tmp_path / "o.png", {"content": None, "styles": []})
    meta = record.png_metadata(rec)
    assert json.loads(meta["impasto"])["format"] == record.FORMAT
    short = json.loads(meta["impasto"])
    short["options"]["size"] = "abc"
    short["options"]["weights"] = "w.pth"
    io.save(torch.zeros(1, 3, 4, 4), tmp_path / "bad.png",
            metadata={**meta, "impasto": json.dumps(short)})
    with pytest.raises(UserError) as e:
        record.read(tmp_path / "bad.png")
    assert str(e.value) == (f"--from-record {tmp_path / 'bad.png'}: "
                            "options.size: 'abc' is not a whole number")
    # an older PNG without a format is read; its weights path is relative to the PNG
    del short["format"]
    short["options"]["size"] = 64
    io.save(torch.zeros(1, 3, 4, 4), tmp_path / "old.png",
            metadata={**meta, "impasto": json.dumps(short)})
    back = record.read(tmp_path / "old.png")
    assert back["options"]["weights"] == str((tmp_path / "w.pth").resolve())
    # non-standard JSON in a PNG is refused too
    io.save(torch.zeros(1, 3, 4, 4), tmp_path / "nan.png",
            metadata={**meta, "impasto": json.dumps(short).replace('"tol": 0.0', '"tol": NaN')})
    with pytest.raises(UserError, match="NaN is not allowed"):
        record.read(tmp_path / "nan.png")


def test_a_png_record_is_read_without_decoding_the_pixels(tmp_path, monkeypatch):
    from PIL import ImageFile
    rec = record.build(make_result(), tmp_path / "o.png", {"content": None, "styles": []})
    io.save(torch.zeros(1, 3, 64, 64), tmp_path / "o.png", metadata=record.png_metadata(rec))
    monkeypatch.setattr(ImageFile.ImageFile, "load",
                        lambda self: pytest.fail("the pixels were decoded"))
    assert record.read(tmp_path / "o.png")["task"] == "transfer"
