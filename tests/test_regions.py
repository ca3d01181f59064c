"""Colour-coded region masks, and a region run through the real CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from impasto import regions
from impasto.errors import UserError


def two_colour_mask(w=40, h=30, split=15):
    m = Image.new("RGB", (w, h), (255, 0, 0))
    m.paste((0, 255, 0), (0, split, w, h))
    return m


@pytest.mark.parametrize("text,rgb", [("ff0000", (255, 0, 0)), ("#00ff00", (0, 255, 0)),
                                      ("00f", (0, 0, 255)), ("red", (255, 0, 0)),
                                      ("White", (255, 255, 255))])
def test_parse_color(text, rgb):
    assert regions.parse_color(text) == rgb


def test_parse_color_rejects_nonsense():
    with pytest.raises(UserError, match="not a colour"):
        regions.parse_color("zz12")


def test_masks_are_one_hot_without_softening_and_sum_to_one_with_it():
    m = two_colour_mask(400, 300, 150)                   # edge blur: sigma 1% of 400 px
    hard = regions.masks_from_image(m, [(255, 0, 0), (0, 255, 0)], soften=False)
    assert hard[0][:150].min() == 1 and hard[0][150:].max() == 0
    assert hard[1][150:].min() == 1 and hard[1][:150].max() == 0
    soft = regions.masks_from_image(m, [(255, 0, 0), (0, 255, 0)])
    total = soft[0] + soft[1]
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    assert 0.05 < soft[0][149, 200] < 0.95            # a soft edge at the boundary
    assert soft[0][0, 200] > 0.99 and soft[0][299, 200] < 0.01


def test_anti_aliased_pixels_go_to_the_nearest_colour():
    m = two_colour_mask()
    m.putpixel((5, 5), (240, 20, 10))                   # nearly red
    hard = regions.masks_from_image(m, [(255, 0, 0), (0, 255, 0)], soften=False)
    assert hard[0][5, 5] == 1


def test_unknown_colour_is_an_error_naming_it():
    m = two_colour_mask()
    with pytest.raises(UserError, match="#00ff00 .* matches no --region-style"):
        regions.masks_from_image(m, [(255, 0, 0)], name="m.png")


def test_aspect_check():
    regions.check_aspect((64, 48), (640, 480))
    with pytest.raises(UserError, match="content image is 640x480"):
        regions.check_aspect((48, 64), (640, 480), "m.png")


def test_blur_keeps_constant_maps_constant():
    maps = torch.ones(2, 10, 12)
    assert torch.allclose(regions.blur(maps, 2.0), maps, atol=1e-6)


def test_two_region_run_through_the_cli(run_cli, image_files):
    d = image_files["dir"]
    mask = Image.new("RGB", (64, 48), "red")
    mask.paste((0, 0, 255), (0, 24, 64, 48))
    mask.save(d / "mask.png")
    out = image_files["out"] / "regions.png"
    proc = run_cli("transfer", image_files["content"], "-o", out, "--mask", d / "mask.png",
                   "--region-style", f"red={image_files['style']}", "--region-style",
                   "0000ff=none", "--size", "64", "--steps", "20", "--seed", "0",
                   "--precision", "fp32", "--style-weight", "100", "--quiet")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["inputs"]["mask"] == "../mask.png"
    assert rec["inputs"]["region_styles"] == [["red", "../style.png"], ["0000ff", None]]
    result = np.asarray(Image.open(out), dtype=np.float32)
    content = np.asarray(Image.open(image_files["content"]).convert("RGB"), dtype=np.float32)
    change = np.abs(result - content).mean(axis=2)
    # the stylised top changed much more than the content-only bottom
    assert change[:20].mean() > 2 * change[28:].mean()
    again = image_files["out"] / "again.png"
    proc = run_cli("transfer", "--from-record", out.with_suffix(".json"), "-o", again, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(out)))
