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


def test_non_finite_loss_is_written_and_read_back(tmp_path):
    rec = record.build(make_result(loss=math.inf, history=[]), tmp_path / "o.png",
                       {"content": None, "styles": []})
    assert rec["result"]["terms"] == {} and rec["inputs"]["content"] is None
    record.write(rec, tmp_path / "o.json")
    assert math.isinf(record.read(tmp_path / "o.json")["result"]["loss"])


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
