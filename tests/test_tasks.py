"""The tasks and the Python API: start images, seeds, what comes back, and size checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import impasto
from conftest import pil_to_tensor, synthetic
from impasto import image as io
from impasto import tasks
from impasto.config import Config
from impasto.errors import UserError

SHAPE = (1, 3, 24, 32)


# ----------------------------------------------------------------------------- start images
def test_init_content_is_a_copy_of_the_content():
    content = torch.rand(SHAPE)
    x = tasks.initial_image("content", SHAPE, 0, content=content)
    assert torch.equal(x, content) and x.data_ptr() != content.data_ptr()


def test_init_style_is_the_style_resized_to_the_output():
    style = torch.rand(1, 3, 40, 64)
    x = tasks.initial_image("style", SHAPE, 0, style=style)
    assert x.shape == SHAPE
    assert torch.allclose(x, io.resize(style, SHAPE[-2:]))


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_noise_inits_have_the_right_shape_and_range(kind):
    x = tasks.initial_image(kind, (1, 3, 64, 64), 5)
    assert x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    assert abs(x.mean().item() - 0.5) < 0.02
    if kind == "gaussian":                       # 0.5 + 0.15·N(0,1), few values clipped
        assert abs(x.std().item() - 0.15) < 0.01
    else:                                        # U(0,1): std 1/√12
        assert abs(x.std().item() - 12 ** -0.5) < 0.01


def test_noise_is_repeatable_by_seed():
    for kind in ("gaussian", "uniform"):
        a = tasks.initial_image(kind, SHAPE, 7)
        assert torch.equal(a, tasks.initial_image(kind, SHAPE, 7))
        assert not torch.equal(a, tasks.initial_image(kind, SHAPE, 8))
    # the seed, not the global RNG state, decides
    torch.manual_seed(123)
    a = tasks.initial_image("gaussian", SHAPE, 7)
    torch.rand(100)
    assert torch.equal(a, tasks.initial_image("gaussian", SHAPE, 7))


def test_init_from_an_image():
    t = torch.rand(3, 12, 16)
    x = tasks.initial_image(t, SHAPE, 0)
    assert x.shape == SHAPE and torch.allclose(x, io.resize(t.unsqueeze(0), SHAPE[-2:]))
    pil = synthetic(64, 48)
    x = tasks.initial_image(pil, SHAPE, 0)
    assert x.shape == SHAPE
    assert torch.allclose(x, io.resize(pil_to_tensor(pil), SHAPE[-2:]))


def test_bad_inits_are_user_errors():
    with pytest.raises(UserError, match="content"):
        tasks.initial_image("content", SHAPE, 0)
    with pytest.raises(UserError, match="style"):
        tasks.initial_image("style", SHAPE, 0)
    with pytest.raises(UserError, match="'perlin'"):
        tasks.initial_image("perlin", SHAPE, 0)


# ----------------------------------------------------------------------------- runs
def test_content_init_starts_from_the_resized_content(content_image, style_image):
    r = impasto.run("transfer", content_image, style_image, size=32, steps=0, init="content",
                    precision="fp32", seed=0)
    expected = io.resize(pil_to_tensor(content_image), (24, 32))
    assert r.tensor.shape == (1, 3, 24, 32)
    assert torch.allclose(r.tensor, expected, atol=1e-6)


def test_gaussian_init_in_a_run_depends_only_on_the_seed(content_image, style_image):
    def start(seed):
        return impasto.run("reconstruct", content_image, size=32, steps=0, seed=seed,
                           precision="fp32").tensor
    a = start(11)
    assert torch.equal(a, start(11))
    assert not torch.equal(a, start(12))
    assert torch.equal(a, tasks.initial_image("gaussian", (1, 3, 24, 32), 11))


def test_init_image_argument(content_image, style_image):
    init = torch.rand(3, 10, 10)
    r = impasto.run("transfer", content_image, style_image, init_image=init, size=32, steps=0,
                    seed=0, precision="fp32")
    assert torch.allclose(r.tensor, io.resize(init.unsqueeze(0), (24, 32)))
    r = impasto.run("transfer", content_image, style_image, init_image=style_image, size=32,
                    steps=0, seed=0, precision="fp32")
    assert torch.allclose(r.tensor, io.resize(pil_to_tensor(style_image), (24, 32)))


def test_texture_is_bit_for_bit_repeatable_by_seed(style_image):
    a = impasto.texture(style_image, seed=1, steps=5, size=32)
    b = impasto.texture(style_image, seed=1, steps=5, size=32)
    c = impasto.texture(style_image, seed=2, steps=5, size=32)
    assert isinstance(a, Image.Image) and a.size == (32, 20)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_transfer_returns_the_kind_it_was_given(content_image, style_image):
    out = impasto.transfer(content_image, style_image, size=32, steps=2, seed=0)
    assert isinstance(out, Image.Image) and out.size == (32, 24) and out.mode == "RGB"
    t = pil_to_tensor(content_image)[0]                     # (3, H, W)
    out_t = impasto.transfer(t, pil_to_tensor(style_image), size=32, steps=2, seed=0)
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (1, 3, 24, 32)
    assert out_t.min() >= 0 and out_t.max() <= 1 and not out_t.requires_grad
    # the same run from a PIL image or a tensor of it gives the same picture
    assert np.array_equal(np.asarray(out), np.asarray(io.to_pil(out_t)))


def test_reconstruct_at_a_layer(content_image):
    seen = []
    r = impasto.run("reconstruct", content_image, content_layers=["relu2_2"], size=32,
                    steps=8, seed=0, precision="fp32", callback=seen.append)
    assert r.config.content_layers == ["relu2_2"]
    assert len(seen) == r.outcome.steps == 8 == len(r.history)
    assert r.outcome.loss < r.history[0]["loss"]
    assert r.history[0]["style"] == 0.0 and r.history[0]["tv"] == 0.0
    out = impasto.reconstruct(content_image, "relu1_1", size=32, steps=1, seed=0)
    assert isinstance(out, Image.Image) and out.size == (32, 24)


def test_result_carries_the_options_and_a_seed(content_image, style_image):
    r = impasto.run("transfer", content_image, style_image, size=32, steps=3,
                    precision="fp32", tv_weight=0.5)
    assert isinstance(r.config, Config)
    assert isinstance(r.config.seed, int) and 0 <= r.config.seed < 2 ** 63
    assert r.config.tv_weight == 0.5 and r.config.size == 32
    assert r.task == "transfer" and r.precision == "fp32" and r.device == "cpu"
    assert r.weights_id.startswith("vgg19-caffe")
    assert set(r.timings) >= {"setup_s", "optimise_s", "total_s"}
    # the seed written down repeats the run
    again = impasto.run("transfer", content_image, style_image, size=32, steps=3,
                        precision="fp32", tv_weight=0.5, seed=r.config.seed)
    assert torch.equal(r.tensor, again.tensor)


def test_deep_style_layers_read_a_larger_copy_of_the_painting(monkeypatch, content_image,
                                                              style_image):
    seen = []

    class Recording(tasks.Objective):       # the real objective, its regions written down
        def __init__(self, net, **kw):
            seen.append(kw["regions"])
            super().__init__(net, **kw)
    monkeypatch.setattr(tasks, "Objective", Recording)

    def deep_sides(**kw):
        seen.clear()
        impasto.run("transfer", content_image, style_image, size=48, steps=1, precision="fp32",
                    **kw)
        return [(max(r.styles[0].shape[-2:]), r.deep_styles and max(r.deep_styles[0].shape[-2:]),
                 r.deep_layers) for r, in seen]
    deep = ("relu4_1", "relu5_1")
    assert deep_sides(scales=1) == [(48, 144, deep)]
    assert deep_sides(scales=1, deep_style_scale=1) == [(48, None, deep)]
    assert deep_sides(scales=1, style_layers=["relu1_1", "relu3_1"]) == [(48, None, ())]
    assert Config(size=768).style_sides(768) == (768, 1536)      # enlarged up to 1536 px
    assert Config(size=1024).style_sides(1024) == (1024, 1536)
    assert Config(size=512).style_sides(512) == (512, 1536)      # 3x, the default
    assert Config(size=512, deep_style_scale=2).style_sides(512) == (512, 1024)
    assert Config(size=2048).style_sides(2048) == (2048, 2048)   # and never made smaller
    assert Config(size=512, style_scale=0.5).style_sides(512) == (256, 768)


def test_image_too_small_for_the_deepest_layer(style_image):
    thin = Image.new("RGB", (40, 8), (120, 60, 30))     # 64x13 at --size 64; relu5_1 needs 16
    with pytest.raises(UserError) as e:
        impasto.transfer(thin, style_image, size=64, steps=1, seed=0)
    assert "relu5_1" in str(e.value) and "16" in str(e.value)
    # shallower layers are fine at the same size
    out = impasto.transfer(thin, style_image, size=64, steps=1, seed=0, precision="fp32",
                           content_layers=["relu2_2"], style_layers=["relu1_1", "relu2_1"])
    assert out.size == (64, 13)
    with pytest.raises(UserError, match="style image"):
        impasto.transfer(synthetic(64, 48), style_image, size=64, style_scale=0.25, steps=1)


def test_api_user_errors(content_image, style_image):
    with pytest.raises(UserError, match="did you mean 'steps'"):
        impasto.transfer(content_image, style_image, stpes=5)
    with pytest.raises(UserError, match="give a STYLE image"):
        impasto.run("transfer", content_image, None, size=32, steps=1)
    with pytest.raises(UserError, match="did you mean 'relu3_1'"):
        impasto.transfer(content_image, style_image, size=32, steps=1,
                         style_layers=["relu1_1", "relu3_l1"])
    with pytest.raises(UserError, match="--init"):
        impasto.texture(style_image, init="content", size=32, steps=1)
    with pytest.raises(UserError, match="--size"):
        impasto.transfer(content_image, style_image, size=8)
    with pytest.raises(UserError, match="shape"):
        impasto.transfer(torch.rand(4, 16, 16), style_image, size=32, steps=1)


# ------------------------------------------------------------------ coarse-to-fine schedule
from impasto.tasks import schedule  # noqa: E402


@pytest.mark.parametrize("size,sides", [
    (64, [64]), (128, [128]), (256, [128, 256]), (512, [128, 256, 512]),
    (1024, [128, 256, 512, 1024]), (2048, [128, 256, 512, 1024, 2048]),
])
def test_auto_schedule_doubles_from_about_128_px(size, sides):
    plan = schedule(size, 500)
    assert [s for s, _ in plan] == sides
    assert sum(n for _, n in plan) == 500                  # the budget is split, not multiplied
    counts = [n for _, n in plan]
    assert counts == sorted(counts, reverse=True)         # coarse scales get more steps


def test_schedule_split_is_1_5x_per_scale_and_scales_1_is_single_scale():
    assert schedule(512, 500, 1) == [(512, 500)]
    (s0, n0), (s1, n1), (s2, n2) = schedule(512, 500)
    assert (s0, s1, s2) == (128, 256, 512)
    assert abs(n0 / n2 - 2.25) < 0.05 and abs(n1 / n2 - 1.5) < 0.05
    assert schedule(300, 10, 2) == [(150, 6), (300, 4)]


def test_coarse_to_fine_run_reports_every_scale(content_image, style_image):
    result = impasto.run("transfer", content_image, style_image, size=64, scales=2, steps=6,
                         seed=0, precision="fp32")
    assert result.schedule == [[32, 3], [64, 3]]
    assert [h["side"] for h in result.history] == [32, 32, 32, 64, 64, 64]
    assert [h["step"] for h in result.history] == [1, 2, 3, 4, 5, 6]
    assert result.tensor.shape[-1] == 64
    times = [h["time"] for h in result.history]
    assert times == sorted(times)                          # one clock across the scales


def test_texture_runs_single_scale_and_transfer_coarse_to_fine_by_default(style_image,
                                                                          content_image):
    """Coarse scales make a texture copy the painting's layout (see config.TASK_DEFAULTS)."""
    tex = impasto.run("texture", None, style_image, size=256, steps=2, seed=0)
    assert tex.schedule == [[256, 2]]
    tr = impasto.run("transfer", content_image, style_image, size=256, steps=4, seed=0)
    assert [side for side, _ in tr.schedule] == [128, 256]
