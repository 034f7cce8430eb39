"""Training precision, resolved in one place for the trainer and the fine-tuner; the training memory layout.

`TrainConfig.precision` (and ``alphanet-finetune --precision``) is one of `PRECISIONS`: ``fp32``;
``bf16`` (bfloat16 autocast of the forward passes); ``fp16`` (float16 autocast with loss scaling, on
CUDA only: on a CPU float16 arithmetic is emulated, so it is refused); ``auto``, which picks bfloat16
only where it is faster than float32:

- on a GPU, bf16 where it supports it, else fp32 (fp16 only when asked for);
- on a CPU with AMX, bf16;
- on a CPU with bfloat16 instructions but no AMX (AVX512-BF16, as on AMD Zen 4; Arm's BF16), the
  model's own training step is timed in both precisions, in turns (`time_precisions`), and bf16 is
  chosen only when its slowest step beats float32's fastest by `AUTO_MARGIN`: on a machine busy with
  other work the turns scatter and ``auto`` keeps fp32, the choice that is never wrong, only maybe
  slower. On a Zen 4 bf16 was slower (a0 at 96 px: a fine-tuning step 1.08x, a sandwich step 1.27x
  float32's), so ``auto`` trains in fp32 there;
- on any other CPU bfloat16 is emulated: fp32.

`resolve_precision` gives the decision as a `Precision` (the dtype, the loss scaler, the reason). In
every case the weights, gradients and optimizer stay float32 and the losses are computed in float64
from the logits (`alphanet_zoo.train.losses`).

These are training precisions. Export's ``alphanet_zoo.export.PRECISIONS`` (fp32, bf16, int8, auto)
are the number formats of a written inference file, whose ``auto`` verifies and times each file:
another question, answered in ``export/deploy.py``.
"""
from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..device import parse_device
from ..errors import InputError
from ..export.timing import flat, time_in_turns

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: bf16 must take at most 1 / (1 + AUTO_MARGIN) of fp32's step time to be chosen by a measurement
AUTO_MARGIN = 0.05
PROBE_ROUNDS = 4  # timed steps of each precision, in turns, after one untimed step each
PROBE_BATCH = 8  # images per timed step at most
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 flags, Arm's ``Features``


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    return frozenset(next((line.split(":", 1)[1].split() for line in text.splitlines()
                           if line.startswith(("flags", "Features"))), []))


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles for bfloat16 (PyTorch's dispatch level, or ``amx_bf16`` in /proc/cpuinfo)."""
    return "AMX" in torch.backends.cpu.get_cpu_capability().upper() or "amx_bf16" in _cpu_flags()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX, AVX512-BF16 or Arm's BF16); natively is not
    necessarily faster than float32 (see the module's docstring)."""
    return cpu_has_amx() or "BF16" in torch.backends.cpu.get_cpu_capability().upper() \
        or any(flag in _cpu_flags() for flag in _BF16_CPU_FLAGS)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of `PRECISIONS`, else `InputError`."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


@dataclass(frozen=True)
class Precision:
    """What a run trains in: ``name`` (fp32, bf16 or fp16), what was ``requested``, and why."""

    name: str
    requested: str
    reason: str
    timings: dict[str, list[float]] = field(default_factory=dict)  # seconds of each timed step, when measured

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of the forward passes; None: float32."""
        return DTYPES[self.name]

    def grad_scaler(self, device: "str | torch.device") -> "torch.amp.GradScaler | None":
        """A loss scaler for float16 (its gradients underflow without one); None otherwise."""
        return torch.amp.GradScaler(parse_device(device).type) if self.name == "fp16" else None

    def describe(self) -> str:
        return f"{self.name} ({self.reason})"


def time_precisions(step_for: Callable[[torch.dtype | None], Callable[[], Any]],
                    rounds: int = PROBE_ROUNDS) -> dict[str, list[float]]:
    """Seconds of each timed ``step_for(None)()`` (float32) and ``step_for(torch.bfloat16)()``, in
    turns (`time_in_turns`: one untimed step each first, then ``rounds`` rounds of one step each).
    Under torchrun every process runs the same number of steps, so a step's collectives pair up."""
    names = ("fp32", "bf16")
    turns = time_in_turns([step_for(DTYPES[n]) for n in names], rounds=rounds, calls=1, warmup=0, first_warmup=1)
    return {n: flat(t) for n, t in zip(names, turns)}


def resolve_precision(precision: str, device: "str | torch.device",
                      measure: Callable[[], dict[str, list[float]]] | None = None) -> Precision:
    """The precision a run on ``device`` trains in when ``precision`` is asked for (see the module's docstring).

    ``measure`` times the run's own step in float32 and bfloat16 (`time_precisions`); ``auto`` calls
    it only on a CPU with bfloat16 instructions but no AMX. Without it, ``auto`` is fp32 there."""
    check_precision(precision)
    kind = parse_device(device).type
    if precision == "fp16" and kind != "cuda":
        raise InputError(f"precision fp16 needs a CUDA device, not {kind}: float16 arithmetic is emulated on a "
                         f"CPU; use fp32, bf16 or auto")
    if precision != "auto":
        return Precision(precision, precision, "as asked")
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", "auto", "this GPU computes bfloat16")
        return Precision("fp32", "auto", "this GPU has no bfloat16 (fp16 with loss scaling if asked: precision fp16)")
    if kind != "cpu":
        return Precision("fp32", "auto", f"bfloat16 is not chosen automatically on {kind}")
    if cpu_has_amx():
        return Precision("bf16", "auto", "this CPU has AMX")
    if not cpu_has_native_bf16():
        return Precision("fp32", "auto", "this CPU emulates bfloat16")
    if measure is None:
        return Precision("fp32", "auto", "bfloat16 without AMX, and no step to time")
    timings = measure()
    faster = max(timings["bf16"]) * (1 + AUTO_MARGIN) <= min(timings["fp32"])
    said = ", ".join(f"{n} {statistics.median(t):.3f} s ({min(t):.3f}..{max(t):.3f})" for n, t in timings.items())
    return Precision("bf16" if faster else "fp32", "auto",
                     f"timed on this model's step, bfloat16 without AMX: {said}", timings)


def autocast_dtype(precision: str, device: "str | torch.device") -> torch.dtype | None:
    """The autocast dtype `resolve_precision` gives without a measurement (None: float32)."""
    return resolve_precision(precision, device).autocast_dtype


def use_training_layout(model: nn.Module, device: "str | torch.device") -> nn.Module:
    """On a CPU, put ``model`` (an `AlphaNet` or `Supernet`) in channels-last, oneDNN's layout (the
    sandwich step 1.5x faster with 2 threads, benchmarks/bench_train.py), all but its stem. The stem's 3-channel
    conv gains nothing from it, and kept as it is its weight gradient, a sum over every pixel of the
    batch, rounds as the official step's does (tests/test_train.py). In place; returns ``model``."""
    if parse_device(device).type == "cpu":
        model.to(memory_format=torch.channels_last)
        model.stem.to(memory_format=torch.contiguous_format)
    return model


__all__ = ["AUTO_MARGIN", "PRECISIONS", "Precision", "autocast_dtype", "check_precision", "cpu_has_amx",
           "cpu_has_native_bf16", "resolve_precision", "time_precisions", "use_training_layout"]
