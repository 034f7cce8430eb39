"""Training precision and memory layout: float32, or bfloat16 autocast where the hardware computes it
natively; channels-last on the CPU.

``precision="auto"`` picks bfloat16 autocast on a GPU that supports it and on a CPU with native
bfloat16 arithmetic (AVX512-BF16 or AMX: `cpu_has_native_bf16`), float32 elsewhere: on other CPUs
bfloat16 is emulated and slower than float32. ``bf16`` asks for it anyway; ``fp32`` never uses it.
The losses are computed in float64 from the logits whatever their dtype (`alphanet_zoo.losses`).
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from ..device import parse_device
from ..errors import InputError

PRECISIONS = ("auto", "fp32", "bf16")
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively: PyTorch's dispatch level (AMX), or the kernel's
    flags (``avx512_bf16``, ``amx_bf16`` in /proc/cpuinfo)."""
    capability = torch.backends.cpu.get_cpu_capability().upper()
    if "AMX" in capability or "BF16" in capability:
        return True
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in _BF16_CPU_FLAGS)


def autocast_dtype(precision: str, device: "str | torch.device") -> torch.dtype | None:
    """The autocast dtype of ``precision`` (auto | fp32 | bf16) on ``device``; None: float32."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    kind = parse_device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if kind == "cpu" and cpu_has_native_bf16() else None


def use_training_layout(model: nn.Module, device: "str | torch.device") -> nn.Module:
    """On a CPU, put ``model`` (an `AlphaNet` or `Supernet`) in channels-last, oneDNN's layout (the
    sandwich step 1.5x faster with 2 threads, benchmarks/bench_train.py), all but its stem. The stem's 3-channel
    conv gains nothing from it, and kept as it is its weight gradient, a sum over every pixel of the
    batch, rounds as the official step's does (tests/test_train.py). In place; returns ``model``."""
    if parse_device(device).type == "cpu":
        model.to(memory_format=torch.channels_last)
        model.stem.to(memory_format=torch.contiguous_format)
    return model


__all__ = ["PRECISIONS", "autocast_dtype", "cpu_has_native_bf16", "use_training_layout"]
