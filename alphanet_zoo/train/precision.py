"""Training precision: float32, or bfloat16 autocast where the hardware computes it natively.

``precision="auto"`` picks bfloat16 autocast on a GPU that supports it and on a CPU with native
bfloat16 arithmetic (AVX512-BF16 or AMX: `cpu_has_native_bf16`), float32 elsewhere: on other CPUs
bfloat16 is emulated and slower than float32. ``bf16`` asks for it anyway; ``fp32`` never uses it.
The losses are computed in float64 from the logits whatever their dtype (`alphanet_zoo.losses`).
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

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


__all__ = ["PRECISIONS", "autocast_dtype", "cpu_has_native_bf16"]
