"""Choosing the arithmetic precision, and bf16 agreeing with fp32."""
from __future__ import annotations

import copy

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


CPUINFO_HEAD = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Some CPU @ 2.10GHz
"""
CPUINFO_TAIL = """bugs\t\t: spectre_v1 spectre_v2
bogomips\t: 4200.00

"""


@pytest.mark.parametrize("flags_line, expected, fast", [
    ("flags\t\t: fpu vme sse2 avx2 avx512f avx512_bf16 arch_perfmon\n",
     {"fpu", "vme", "sse2", "avx2", "avx512f", "avx512_bf16", "arch_perfmon"}, True),
    ("flags\t\t: fpu sse2 amx_bf16 amx_tile amx_int8\n",
     {"fpu", "sse2", "amx_bf16", "amx_tile", "amx_int8"}, True),
    ("flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n",
     {"fpu", "sse2", "avx2", "avx512f", "avx512bw", "avx512_vnni"}, False),
    ("vmx flags\t: vnmi preemption_timer avx512_bf16\n", set(), False),   # not the CPU's flags
    ("", set(), False),                                                    # no flags line
])
def test_cpu_flags_parses_cpuinfo_text(tmp_path, flags_line, expected, fast):
    """The flags line, whatever comes before and after it."""
    text = CPUINFO_HEAD + flags_line + CPUINFO_TAIL
    assert precision.parse_cpu_flags(text) == frozenset(expected)
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    flags = precision.cpu_flags(path)
    assert flags == frozenset(expected) and isinstance(flags, frozenset)
    assert precision.cpu_has_fast_bf16(flags) is fast
    assert precision.resolve("auto", CPU, flags=flags) == ("bf16" if fast else "fp32")


def test_cpu_flags_are_the_first_processors():
    two = ("processor\t: 0\nflags\t\t: fpu sse2\n\nprocessor\t: 1\n"
           "flags\t\t: fpu sse2 avx512_bf16\n")
    assert precision.parse_cpu_flags(two) == {"fpu", "sse2"}


def test_cpu_flags_of_a_missing_or_odd_file_are_empty(tmp_path):
    assert precision.cpu_flags(tmp_path / "no-such-cpuinfo") == frozenset()
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")  # aarch64
    assert precision.cpu_flags(tmp_path / "arm") == frozenset()
    (tmp_path / "colonless").write_text("flags avx512_bf16\n")
    assert precision.cpu_flags(tmp_path / "colonless") == frozenset()
    assert precision.parse_cpu_flags("flags\t:\n") == frozenset()


def test_cpu_flags_of_this_machine_are_read_once(monkeypatch, tmp_path):
    """The default path is read once (cached); resolve('auto') uses it."""
    first = precision.cpu_flags()
    fake = tmp_path / "cpuinfo"
    fake.write_text("flags\t\t: avx512_bf16\n")
    monkeypatch.setattr(precision, "CPUINFO", str(fake))
    assert precision.cpu_flags() is first                       # cached, the file not read again
    precision._this_cpu.cache_clear()
    try:
        assert precision.cpu_flags() == {"avx512_bf16"}
        assert precision.resolve("auto", CPU) == "bf16"
    finally:
        precision._this_cpu.cache_clear()


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
