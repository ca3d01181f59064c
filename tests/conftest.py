"""Shared fixtures: tiny test images made at test time, the real VGG19 built once per session,
an isolated weights cache and torch.hub folder, and a helper that runs the real CLI.

Threads: the suite runs torch with one thread (and the CLI subprocesses with OMP_NUM_THREADS=1)
unless IMPASTO_TEST_THREADS says otherwise. The images here are tiny, so more threads buy
nothing, and on a small machine that is busy with other work, two torch processes each
spinning two OpenMP threads on two cores run some 20x slower than with one thread each.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

THREADS = int(os.environ.get("IMPASTO_TEST_THREADS", "1"))
torch.set_num_threads(THREADS)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


# ----------------------------------------------------------------------------- environment
@pytest.fixture(scope="session", autouse=True)
def isolated_caches(tmp_path_factory):
    """No test reads or writes the user's ~/.cache/impasto or torch.hub folder."""
    cache = tmp_path_factory.mktemp("impasto-cache")
    torch_home = tmp_path_factory.mktemp("torch-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMPASTO_CACHE", str(cache))
        mp.setenv("TORCH_HOME", str(torch_home))
        yield {"cache": cache, "torch_home": torch_home}


@pytest.fixture
def cli_env():
    """The environment for a CLI subprocess (the session's caches, one OpenMP thread)."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(THREADS)
    env.pop("PYTHONWARNINGS", None)
    return env


@pytest.fixture
def run_cli(cli_env):
    """Run ``python -m impasto ARGS`` and return the CompletedProcess (text mode)."""
    def run(*args, cwd=None, timeout=300):
        return subprocess.run([sys.executable, "-m", "impasto", *map(str, args)], cwd=cwd,
                              env=cli_env, capture_output=True, text=True, timeout=timeout)
    return run


# ----------------------------------------------------------------------------- images
def synthetic(width: int, height: int, seed: int = 0) -> Image.Image:
    """A gradient with a few shapes: texture and edges at every scale, made in memory."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    arr = np.stack([x / max(1, width - 1), y / max(1, height - 1),
                    0.5 + 0.5 * np.sin((x + y) / 3.0)], axis=-1)
    im = Image.fromarray((arr * 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, width - 4)), int(rng.integers(0, height - 4))
        x1, y1 = x0 + int(rng.integers(3, width // 2)), y0 + int(rng.integers(3, height // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
    return im


def example(name: str, size) -> Image.Image:
    """One of the bundled example pictures, resized tiny."""
    with Image.open(EXAMPLES / name) as im:
        return im.convert("RGB").resize(size, Image.Resampling.LANCZOS)


@pytest.fixture(scope="session")
def content_image():
    """The Tubingen photo at 64x48."""
    return example("tubingen.jpg", (64, 48))


@pytest.fixture(scope="session")
def style_image():
    """Starry Night at 64x40."""
    return example("starry_night.jpg", (64, 40))


@pytest.fixture(scope="session")
def synthetic_image():
    return synthetic(48, 32)


@pytest.fixture
def image_files(tmp_path, content_image, style_image):
    """content.png and style.png in a fresh folder, and an empty out/ folder beside them."""
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    content_image.save(content)
    style_image.save(style)
    out = tmp_path / "out"
    out.mkdir()
    return {"content": content, "style": style, "out": out, "dir": tmp_path}


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """Independent of impasto.image: (1,3,H,W) float32 in [0,1]."""
    arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0)


# ----------------------------------------------------------------------------- network
@pytest.fixture(scope="session")
def vgg19():
    """The real Caffe VGG19 (bundled weights), all layers up to pool5, float32."""
    from impasto import backbones
    net, _ = backbones.build("vgg19", ["pool5"])
    return net


@pytest.fixture(scope="session")
def bundled_state():
    """The bundled VGG19 state dict (conv1_1.weight ...)."""
    from impasto.backbones import weights
    sd, weights_id = weights.load_bundled()
    return sd, weights_id


# ----------------------------------------------------------------------------- weights files
CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}   # output channels of each VGG block


def torchvision_state_dict(blocks, seed=0, dtype=torch.float32):
    """A randomly initialised torchvision-layout VGG ``features`` state dict, written out by
    hand: conv layers at features.0, .2, (pool) .5, ... with (out, in, 3, 3) weights."""
    gen = torch.Generator().manual_seed(seed)
    sd, idx, channels, by_conv = {}, 0, 3, {}
    for b, n in enumerate(blocks, start=1):
        out = CHANNELS[b]
        for i in range(1, n + 1):
            w = (torch.randn(out, channels, 3, 3, generator=gen) * (2 / (9 * channels)) ** 0.5)
            bias = torch.randn(out, generator=gen) * 0.01
            sd[f"features.{idx}.weight"], sd[f"features.{idx}.bias"] = w.to(dtype), bias.to(dtype)
            by_conv[f"conv{b}_{i}"] = idx
            channels = out
            idx += 2          # conv, relu
        idx += 1              # pool
    # a classifier, as in a full torchvision checkpoint (ignored)
    sd["classifier.0.weight"] = torch.zeros(2, 3)
    return sd, by_conv
