"""The one typed Config: help texts, types, ranges, per-task defaults, round trips, and the
API turning a wrong value into a UserError before any network is built."""
from __future__ import annotations

import dataclasses
import math

import pytest

import impasto
from impasto import config
from impasto.config import (EXPLORE_DEFAULTS, MAX_SIZE, MAX_STYLE_SCALE, TASK_DEFAULTS, TASKS,
                            Config)
from impasto.errors import UserError

FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def lines(task="transfer", **values):
    return config.problems(task, values)


def only_problem(task="transfer", **values):
    found = lines(task, **values)
    assert len(found) == 1, found
    return found[0]


# ----------------------------------------------------------------------------- help
def test_every_field_has_a_help_text_and_tasks():
    for name, f in FIELDS.items():
        assert f.metadata["help"].strip(), name
        assert f.metadata["help"] == f.metadata["help"].strip()
        assert set(f.metadata["tasks"]) <= set(TASKS) and f.metadata["tasks"], name
        config.field_type(name)                       # every annotation is understood


def test_field_types_come_from_the_annotations():
    assert config.field_type("size") == (int, False)
    assert config.field_type("seed") == (int, True)
    assert config.field_type("lr") == (float, True)
    assert config.field_type("line_search") == (bool, False)
    assert config.field_type("weights") == (str, True)
    assert config.field_type("style_layers") == (list[str], True)
    assert config.field_type("style_blend") == (list[float], True)


# ----------------------------------------------------------------------------- types
# (option, bad value, words the line must say)
BAD_TYPES = [
    ("size", "abc", "'abc' is not a whole number"),
    ("size", "512", "'512' is a string; give a whole number without quotes"),
    ("size", 512.5, "512.5 is not a whole number"),
    ("size", 512.0, "512.0 is a decimal number; give a whole number (512)"),
    ("size", True, "True is not a whole number"),
    ("size", None, "None is not allowed; give a whole number"),
    ("size", [512], "[512] is not a whole number"),
    ("steps", False, "False is not a whole number"),
    ("seed", "7", "'7' is a string"),
    ("seed", 1.5, "1.5 is not a whole number"),
    ("scales", True, "True is not a whole number"),
    ("style_weight", "1e3", "'1e3' is a string; give a number without quotes"),
    ("style_weight", "lots", "'lots' is not a number"),
    ("style_weight", True, "True is not a number"),
    ("style_weight", None, "None is not allowed; give a number"),
    ("style_weight", math.nan, "nan is not a finite number"),
    ("tv_weight", math.inf, "inf is not a finite number"),
    ("content_weight", -math.inf, "-inf is not a finite number"),
    ("lr", "0.5", "'0.5' is a string"),
    ("lr", math.nan, "nan is not a finite number"),
    ("style_scale", 10**400, "is too large"),
    ("init", 5, "5 is not a string; give one of content, style, gaussian, uniform or an image"),
    ("device", 0, "0 is not a string"),
    ("weights", ["a.pth"], "['a.pth'] is not a string"),
    ("style_loss", 2, "2 is not a string; give one of gram, w2"),
    ("line_search", 1, "1 is not true or false"),
    ("line_search", "yes", "'yes' is not true or false"),
    ("line_search", None, "None is not allowed; give true or false"),
    ("style_layers", "relu1_1", "'relu1_1' is a string; give a list of layer names"),
    ("style_layers", "relu1_1,relu2_1", "is a string; give a list of layer names"),
    ("content_layers", ("relu4_2",), "('relu4_2',) is not a list; give a list of layer names"),
    ("style_layers", ["relu1_1", 3], "['relu1_1', 3] has 3 at position 2; give a list of layer"),
    ("style_layers", ["relu1_1", None], "has None at position 2"),
    ("style_layer_weights", "1,2", "'1,2' is a string; give a list of numbers"),
    ("style_layer_weights", 1.0, "1.0 is not a list; give a list of numbers"),
    ("content_layer_weights", ["1"], "['1'] has '1' at position 1; give a list of numbers"),
    ("style_blend", [0.5, True], "has True at position 2"),
    ("style_blend", [0.5, math.nan], "has nan at position 2"),
    ("style_blend", [0.5, math.inf], "has inf at position 2"),
]


@pytest.mark.parametrize("name, value, says", BAD_TYPES)
def test_a_wrong_type_is_one_line_naming_the_option(name, value, says):
    line = only_problem(**{name: value})
    assert line.startswith(f"{name}: ") and says in line
    assert config.type_problem(name, value) == line.split(": ", 1)[1]
    with pytest.raises(UserError) as e:
        Config.for_task("transfer", **{name: value})
    assert str(e.value) == f"option --{name.replace('_', '-')}: " + line.split(": ", 1)[1]
    # a Config made directly is checked by validate the same way
    with pytest.raises(UserError, match=f"--{name.replace('_', '-')}"):
        Config(**{name: value}).validate("transfer")


@pytest.mark.parametrize("name, value", [
    ("size", 64), ("style_weight", 3), ("style_weight", 2.5), ("lr", 1), ("seed", None),
    ("seed", 0), ("scales", None), ("weights", None), ("weights", "my.pth"), ("fps", 12),
    ("line_search", True), ("style_layers", None), ("style_layers", ["relu1_1"]),
    ("style_layer_weights", [1, 2.5, 0, 1, 1]), ("style_blend", None), ("init", "photo.jpg"),
])
def test_right_types_pass(name, value):
    assert lines(**{name: value}) == []
    assert config.type_problem(name, value) is None


def test_every_type_problem_at_once_and_no_range_check_on_wrong_types():
    found = lines(size="abc", style_layers="relu1_1", line_search=1, stpes=3, steps=-5)
    assert found[0] == "stpes: unknown option (did you mean 'steps'?)"
    assert set(found[1:]) == {"size: 'abc' is not a whole number",
                              "style_layers: 'relu1_1' is a string; give a list of layer names",
                              "line_search: 1 is not true or false"}
    with pytest.raises(UserError) as e:
        Config.for_task("transfer", size="abc", line_search=1)
    assert str(e.value) == ("2 problems with the options:\n"
                            "  option --size: 'abc' is not a whole number\n"
                            "  option --line-search: 1 is not true or false")


def test_a_long_value_is_cut_in_the_message():
    line = only_problem(size="x" * 500)
    value = line.split(": ", 1)[1].split(" is not")[0]
    assert len(value) <= 60 and value.endswith("...") and value.startswith("'xxx")


def test_an_unknown_option_suggests_the_nearest():
    with pytest.raises(UserError, match="option --stpes: unknown option \\(did you mean 'steps'"):
        Config.for_task("transfer", stpes=5)
    with pytest.raises(UserError, match="unknown task 'paint'"):
        Config.for_task("paint")


def test_the_api_refuses_a_wrong_type_before_building_a_network(monkeypatch, content_image,
                                                                 style_image):
    from impasto import backbones, tasks

    def no_network(*a, **k):
        raise AssertionError("a network was built")
    monkeypatch.setattr(backbones, "build", no_network)
    monkeypatch.setattr(tasks, "get_backbone", no_network, raising=False)
    monkeypatch.setattr(tasks, "run", no_network)
    for bad, says in [({"size": "abc"}, "option --size: 'abc' is not a whole number"),
                      ({"style_layers": "relu1_1"}, "option --style-layers: 'relu1_1' is a "
                                                    "string; give a list of layer names"),
                      ({"steps": 2.5}, "option --steps: 2.5 is not a whole number"),
                      ({"style_weight": math.nan}, "option --style-weight: nan is not a finite "
                                                   "number")]:
        with pytest.raises(UserError) as e:
            impasto.run("transfer", content_image, style_image, **bad)
        assert str(e.value) == says
        assert not isinstance(e.value, TypeError)
    with pytest.raises(UserError, match="--size"):
        impasto.transfer(content_image, style_image, size="abc")
    with pytest.raises(UserError, match="--size"):
        impasto.texture(style_image, size="abc")


# ----------------------------------------------------------------------------- ranges
RANGES = [
    # (task, values, line)
    ("transfer", {"size": 15}, "size: must be at least 16 pixels, got 15"),
    ("transfer", {"size": MAX_SIZE + 1}, f"size: must be at most {MAX_SIZE} pixels"),
    ("transfer", {"style_scale": 0}, "style_scale: must be positive, got 0"),
    ("transfer", {"style_scale": -1.0}, "style_scale: must be positive"),
    ("transfer", {"style_scale": MAX_STYLE_SCALE + 0.5},
     f"style_scale: must be at most {MAX_STYLE_SCALE:g}, got {MAX_STYLE_SCALE + 0.5:g}"),
    ("transfer", {"deep_style_scale": 0.5},
     f"deep_style_scale: must be between 1 (off) and {MAX_STYLE_SCALE:g}, got 0.5"),
    ("transfer", {"size": 4096, "style_scale": 4.5},
     f"style_scale: gives a 18432 px style image at --size 4096; --size x --style-scale must "
     f"be at most {MAX_SIZE}"),
    ("texture", {"size": 4096, "style_scale": 4.5}, "style_scale: gives a 18432 px"),
    ("video", {"size": 4096, "style_scale": 4.5}, "style_scale: gives a 18432 px"),
    ("transfer", {"scales": 0}, "scales: must be between 1 and 8, got 0"),
    ("transfer", {"scales": 9}, "scales: must be between 1 and 8, got 9"),
    ("transfer", {"steps": -1}, "steps: must be zero or more, got -1"),
    ("transfer", {"content_weight": -0.5}, "content_weight: must be zero or more"),
    ("transfer", {"style_weight": -1}, "style_weight: must be zero or more"),
    ("transfer", {"tv_weight": -1}, "tv_weight: must be zero or more"),
    ("transfer", {"tol": -0.1}, "tol: must be zero or more"),
    ("transfer", {"lr": 0}, "lr: must be positive, got 0"),
    ("transfer", {"lr": -1.0}, "lr: must be positive"),
    ("transfer", {"history_size": 0}, "history_size: must be at least 1, got 0"),
    ("transfer", {"tol_window": 0}, "tol_window: must be at least 1"),
    ("transfer", {"patience": 0}, "patience: must be at least 1"),
    ("transfer", {"seed": -1}, "seed: must be between 0 and 2**63-1, got -1"),
    ("transfer", {"seed": 2**63}, "seed: must be between 0 and 2**63-1"),
    ("transfer", {"style_layers": []}, "style_layers: needs at least one layer"),
    ("transfer", {"content_layers": []}, "content_layers: needs at least one layer"),
    ("transfer", {"style_layers": ["relu1_1", "relu2_1"], "style_layer_weights": [1.0]},
     "style_layer_weights: gives 1 weights for 2 layers (relu1_1, relu2_1): give one weight "
     "per layer"),
    ("transfer", {"content_layers": ["relu4_2"], "content_layer_weights": [1, 2]},
     "content_layer_weights: gives 2 weights for 1 layers"),
    ("transfer", {"style_layer_weights": [1, -1]}, "style_layer_weights: weights must be zero "
     "or more"),
    ("transfer", {"style_blend": [0.5, -0.5]}, "style_blend: weights must be zero or more"),
    ("transfer", {"style_blend": [0, 0]}, "style_blend: at least one weight must be positive"),
    ("transfer", {"preserve_color": "luminance", "color_from": "style"},
     "color_from: cannot be combined with --preserve-color"),
    ("transfer", {"style_loss": "w3"}, "style_loss: 'w3' is not one of gram, w2"),
    ("transfer", {"model": "vgg20"}, "model: 'vgg20' is not one of vgg19, vgg19-torchvision"),
    ("transfer", {"precision": "fp8"}, "precision: 'fp8' is not one of auto, fp32, bf16, fp16"),
    ("transfer", {"init": ""}, "init: is empty"),
    ("transfer", {"weights": " "}, "weights: is empty"),
    ("texture", {"init": "content"}, "init: texture synthesis has no content image"),
    ("reconstruct", {"init": "style"}, "init: reconstruction has no style image"),
    ("video", {"frame_steps": -1}, "frame_steps: must be zero or more, got -1"),
    ("video", {"temporal_weight": -1.0}, "temporal_weight: must be zero or more"),
    ("video", {"fps": 0}, "fps: must be positive, got 0"),
    ("video", {"start": -1.0}, "start: must be zero or more"),
    ("video", {"duration": 0.0}, "duration: must be positive"),
]


@pytest.mark.parametrize("task, values, line", RANGES)
def test_every_bound(task, values, line):
    found = lines(task, **values)
    assert len(found) == 1 and found[0].startswith(line), found
    name, why = found[0].split(": ", 1)
    with pytest.raises(UserError) as e:
        Config.for_task(task, **values)
    assert str(e.value) == f"option --{name.replace('_', '-')}: {why}"


@pytest.mark.parametrize("task, values", [
    ("transfer", {"size": 16}), ("transfer", {"size": MAX_SIZE}),
    ("transfer", {"style_scale": MAX_STYLE_SCALE, "size": MAX_SIZE // 8}),
    ("transfer", {"size": 4096, "style_scale": 4.0}),     # exactly MAX_SIZE
    ("reconstruct", {"size": 4096, "style_scale": 4.5}),  # no style image: no bound
    ("transfer", {"scales": 1}), ("transfer", {"scales": 8}), ("transfer", {"steps": 0}),
    ("transfer", {"seed": 2**63 - 1}), ("transfer", {"style_blend": [0, 1]}),
    ("reconstruct", {"style_layers": []}),                # no style: an empty list is no matter
    ("texture", {"init": "style"}), ("reconstruct", {"init": "content"}),
    ("video", {"fps": 0.5, "start": 0.0, "duration": 1}),
])
def test_values_on_the_bounds_pass(task, values):
    assert lines(task, **values) == []
    Config.for_task(task, **values)


def test_every_range_problem_at_once():
    found = lines("transfer", size=8, steps=-1, lr=0, patience=0)
    assert [f.split(":")[0] for f in found] == ["size", "steps", "lr", "patience"]
    with pytest.raises(UserError) as e:
        Config.for_task("transfer", size=8, steps=-1)
    assert str(e.value) == ("2 problems with the options:\n"
                            "  option --size: must be at least 16 pixels, got 8\n"
                            "  option --steps: must be zero or more, got -1")


# ----------------------------------------------------------------------------- defaults
def test_task_defaults_are_applied_by_for_task():
    base = Config()
    transfer = Config.for_task("transfer")
    assert transfer == base and transfer.init == "content" and transfer.scales is None
    rec = Config.for_task("reconstruct")
    assert rec.init == "gaussian" and rec.style_weight == 0.0 and rec.tv_weight == 0.0
    tex = Config.for_task("texture")
    assert tex.init == "gaussian" and tex.content_weight == 0.0 and tex.tv_weight == 0.0
    assert tex.scales == 1
    assert Config.for_task("video").size == 384
    for task in TASKS:       # nothing else differs from the field defaults
        cfg = Config.for_task(task).to_dict()
        assert {k: v for k, v in cfg.items() if v != getattr(base, k)} == TASK_DEFAULTS[task]
        assert config.defaults(task) == cfg
    # an override wins over the task's default
    assert Config.for_task("texture", scales=3, init="uniform").scales == 3
    assert Config.for_task("reconstruct", style_weight=2.0).style_weight == 2.0


def test_explore_defaults():
    assert EXPLORE_DEFAULTS == {"size": 256, "steps": 300}
    for task in ("reconstruct", "texture"):
        cfg = Config.for_task(task, **EXPLORE_DEFAULTS)
        assert cfg.size == 256 and cfg.steps == 300
        assert cfg.init == "gaussian"


def test_task_defaults_are_not_shared():
    cfg = Config.for_task("texture")
    d = cfg.to_dict()
    d["scales"] = 5
    assert TASK_DEFAULTS["texture"]["scales"] == 1 and Config.for_task("texture").scales == 1


def test_learning_rate_default_per_optimizer():
    assert Config.for_task("transfer").learning_rate == 1.0
    assert Config.for_task("transfer", optimizer="lbfgs").learning_rate == 1.0
    assert Config.for_task("transfer", optimizer="adam").learning_rate == 0.02
    assert Config.for_task("transfer", optimizer="adam", lr=0.1).learning_rate == 0.1
    assert Config.for_task("transfer", optimizer="lbfgs", lr=0.5).learning_rate == 0.5


# ----------------------------------------------------------------------------- round trip
def test_a_config_round_trips_through_a_dict():
    cfg = Config.for_task("transfer", size=300, style_scale=1.5, seed=9, lr=0.3,
                          style_layers=["relu1_1", "relu3_1"], style_layer_weights=[1.0, 2.0],
                          style_blend=[0.7, 0.3], line_search=True, weights="w.pth",
                          init="start.png", optimizer="adam", preserve_color="luminance")
    d = cfg.to_dict()
    assert set(d) == set(FIELDS)
    back = Config.from_dict(d)
    assert back == cfg and back.to_dict() == d
    assert config.problems("transfer", d) == []
    d["style_layers"].append("relu5_1")             # a copy: the config is unchanged
    assert cfg.style_layers == ["relu1_1", "relu3_1"]
    # unknown keys (a newer record's) are ignored by from_dict
    assert Config.from_dict({**cfg.to_dict(), "from_the_future": 1}) == cfg
    # through JSON, as a record stores it
    import json
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert Config.for_task("transfer", **json.loads(json.dumps(cfg.to_dict()))) == cfg
