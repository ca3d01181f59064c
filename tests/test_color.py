"""Colour spaces and colour transfer, and the colour options end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import impasto
from conftest import pil_to_tensor
from impasto import color


def rand_image(seed=0, h=16, w=12):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g)


def test_yiq_round_trip_is_exact():
    x = rand_image()
    assert torch.allclose(color.yiq_to_rgb(color.rgb_to_yiq(x)), x, atol=1e-5)


def test_yiq_of_gray_has_no_chroma_and_white_has_luminance_one():
    gray = torch.full((1, 3, 2, 2), 0.25)
    yiq = color.rgb_to_yiq(gray)
    assert torch.allclose(yiq[:, 0], torch.full((1, 2, 2), 0.25), atol=1e-6)
    assert yiq[:, 1:].abs().max() < 1e-6
    assert color.rgb_to_yiq(torch.ones(1, 3, 1, 1))[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-6)


def test_luminance_matches_the_rec601_weights():
    x = rand_image(1)
    y = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    lum = color.luminance(x)
    assert lum.shape == x.shape
    for c in range(3):
        assert torch.allclose(lum[:, c], y, atol=1e-6)


def test_combine_luminance_keeps_chroma_of_the_colour_source():
    y_src, c_src = rand_image(2) * 0.5 + 0.25, rand_image(3) * 0.5 + 0.25
    out = color.combine_luminance(y_src, c_src)
    yo, yy, yc = (color.rgb_to_yiq(t) for t in (out, y_src, c_src))
    assert torch.allclose(yo[:, 0], yy[:, 0], atol=1e-5)
    assert torch.allclose(yo[:, 1:], yc[:, 1:], atol=1e-5)


def test_match_statistics_gives_the_target_mean_and_covariance():
    src = rand_image(4, 32, 32) * 0.4 + 0.3                   # inside the gamut after mapping
    tgt = rand_image(5, 32, 32) * 0.3 + 0.35
    tgt[:, 2] = 0.5 * tgt[:, 0] + 0.25                          # correlated channels
    out = color.match_statistics(src, tgt)

    def stats(t):
        a = t.double().reshape(3, -1).numpy()
        return a.mean(axis=1), np.cov(a, bias=True)
    mo, co = stats(out)
    mt, ct = stats(tgt)
    assert np.allclose(mo, mt, atol=1e-4)
    assert np.allclose(co, ct, atol=1e-4)


def test_match_statistics_of_an_image_onto_itself_is_the_identity():
    x = rand_image(6)
    assert torch.allclose(color.match_statistics(x, x), x, atol=1e-5)


@pytest.mark.parametrize("mode", ["luminance"])
def test_luminance_only_run_keeps_the_contents_chroma(content_image, style_image, mode):
    out = impasto.transfer(pil_to_tensor(content_image), pil_to_tensor(style_image), size=64,
                           steps=10, seed=0, preserve_color=mode, precision="fp32")
    content = pil_to_tensor(content_image)
    yo, yc = color.rgb_to_yiq(out), color.rgb_to_yiq(content)
    inside = ((out > 0.002) & (out < 0.998)).all(dim=1)      # not clamped to the gamut
    assert inside.float().mean() > 0.9
    chroma_diff = (yo[:, 1:] - yc[:, 1:]).abs().amax(dim=1)[inside]
    assert chroma_diff.max() < 1e-4
    assert (yo[:, 0] - yc[:, 0]).abs().mean() > 1e-3          # the luminance was stylised


def test_histogram_and_color_from_change_the_palette_the_right_way(content_image, style_image):
    c, s = pil_to_tensor(content_image), pil_to_tensor(style_image)
    common = dict(size=64, steps=15, seed=0, precision="fp32", init="content")
    keep = impasto.transfer(c, s, preserve_color="histogram", **common)
    take = impasto.transfer(c, s, color_from="style", **common)
    mean = lambda t: t.mean(dim=(0, 2, 3))
    # keeping the content's colours stays nearer the content's mean colour than taking the style's
    assert (mean(keep) - mean(c)).norm() < (mean(take) - mean(c)).norm()
    assert (mean(take) - mean(s)).norm() < (mean(keep) - mean(s)).norm()
