"""Choosing the arithmetic precision, and bf16 agreeing with fp32."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from conftest import pil_to_tensor, synthetic
from impasto import precision
from impasto.errors import UserError
from impasto.losses import Objective

CPU = torch.device("cpu")


@pytest.mark.parametrize("flags, expected", [
    ({"fpu", "avx2", "avx512f", "avx512_bf16"}, "bf16"),
    (["sse2", "amx_bf16", "amx_tile"], "bf16"),
    ({"fpu", "avx2", "avx512f", "avx512bw"}, "fp32"),
    (set(), "fp32"),
])
def test_auto_on_the_cpu_follows_the_flags(flags, expected):
    assert precision.resolve("auto", CPU, flags=flags) == expected


def test_auto_without_flags_reads_this_machine():
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        line = next(l for l in cpuinfo.read_text().splitlines() if l.startswith("flags"))
        assert flags == frozenset(line.split(":", 1)[1].split())
    fast = bool({"avx512_bf16", "amx_bf16"} & flags)
    assert precision.resolve("auto", CPU) == ("bf16" if fast else "fp32")


def test_auto_elsewhere_is_fp32():
    assert precision.resolve("auto", torch.device("meta")) == "fp32"


def test_explicit_choices():
    assert precision.resolve("fp32", CPU) == "fp32"
    assert precision.resolve("bf16", CPU, flags=set()) == "bf16"   # slow but allowed
    with pytest.raises(UserError, match="fp16 is not supported on the CPU"):
        precision.resolve("fp16", CPU)
    with pytest.raises(UserError, match="fp8"):
        precision.resolve("fp8", CPU)


def test_bf16_and_fp32_losses_agree(vgg19, content_image, style_image):
    fp32 = vgg19
    bf16 = copy.deepcopy(vgg19).set_precision(torch.bfloat16)
    c, s = pil_to_tensor(content_image), pil_to_tensor(style_image)
    x = pil_to_tensor(synthetic(64, 48, seed=3))
    kwargs = dict(content=c, styles=[s], content_layers=["relu4_2"],
                  style_layers=["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"],
                  content_weight=1.0, style_weight=10.0, tv_weight=1.0, tv_norm="squared",
                  style_stat="gram")
    # the bf16 network really computes in bf16
    with torch.no_grad():
        assert bf16.features(x, ["relu3_1"])["relu3_1"].dtype == torch.bfloat16
        assert fp32.features(x, ["relu3_1"])["relu3_1"].dtype == torch.float32
    with torch.no_grad():
        total32, terms32 = Objective(fp32, **kwargs)(x)
        total16, terms16 = Objective(bf16, **kwargs)(x)
    assert total16.dtype == torch.float32 and terms16.dtype == torch.float32
    assert terms32[0] > 0.05 and terms32[1] > 0.05          # nothing trivially zero
    assert total16.item() == pytest.approx(total32.item(), rel=0.03)
    for a, b in zip(terms16.tolist(), terms32.tolist()):
        assert a == pytest.approx(b, rel=0.05)
    assert total16.item() != total32.item()                  # not the same arithmetic
