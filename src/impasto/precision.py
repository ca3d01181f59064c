"""Choosing the arithmetic precision inside the network for a device."""
from __future__ import annotations

import functools

import torch

from .errors import UserError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


CPUINFO = "/proc/cpuinfo"


def parse_cpu_flags(text: str) -> frozenset:
    """The flags of the first ``flags : ...`` line of /proc/cpuinfo text (empty if none)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_flags(path=None) -> frozenset:
    """The CPU feature flags the kernel reports in ``path`` (default /proc/cpuinfo, read
    once); empty where the file does not exist or has no flags line."""
    return _this_cpu() if path is None else _read_flags(path)


@functools.lru_cache(maxsize=1)
def _this_cpu() -> frozenset:
    return _read_flags(CPUINFO)


def _read_flags(path) -> frozenset:
    try:
        with open(path, errors="replace") as fh:
            return parse_cpu_flags(fh.read())
    except OSError:
        return frozenset()


def cpu_has_fast_bf16(flags=None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return bool({"amx_bf16", "avx512_bf16"} & set(flags))


def resolve(precision: str, device: torch.device, flags=None) -> str:
    """'auto' becomes bf16 where the hardware does bf16 fast, fp32 elsewhere; explicit
    choices are checked against the device."""
    if precision == "auto":
        if device.type == "cpu":
            return "bf16" if cpu_has_fast_bf16(flags) else "fp32"
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise UserError("option --precision: fp16 is not supported on the CPU (use bf16 or fp32)")
    if precision not in DTYPES:
        raise UserError(f"option --precision: unknown precision '{precision}' (auto, fp32, bf16, fp16)")
    return precision
