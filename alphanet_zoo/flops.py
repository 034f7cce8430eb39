"""FLOPs in the paper's convention (multiply-adds of conv and linear layers, in millions) and parameters.

`count_flops` and `count_params` are analytic (from the layout, no model is built) and cached, for
search loops and model records. `count_flops_fvcore` traces a built model with fvcore, to cross-check.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from . import cost
from .config import ArchConfig
from .registry import resolve_arch


def count_params(arch: ArchConfig | str | Mapping, num_classes: int = 1000) -> int:
    """Parameters of the standalone subnet (every one of them runs; no dead shortcut weights)."""
    return cost.params(resolve_arch(arch).validate(standalone=True), num_classes)


def count_flops(arch: ArchConfig | str | Mapping, num_classes: int = 1000) -> float:
    """MFLOPs of a subnet at its own resolution, as the paper counts them (conv and linear multiply-adds)."""
    return cost.mflops(resolve_arch(arch).validate(standalone=True), num_classes)


def count_flops_fvcore(model: nn.Module, resolution: int | None = None) -> dict[str, float]:
    """fvcore's count of one image through ``model``, in MFLOPs per operator, plus ``total``
    and ``conv_linear`` (the paper's convention; equal to `count_flops`)."""
    from fvcore.nn import FlopCountAnalysis

    if resolution is None:
        resolution = model.arch.resolution
    param = next(model.parameters())
    x = torch.zeros(1, 3, resolution, resolution, dtype=param.dtype, device=param.device)
    was_training = model.training
    model.eval()
    try:
        analysis = FlopCountAnalysis(model, x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        by_op = {op: n / 1e6 for op, n in analysis.by_operator().items()}
        total = analysis.total() / 1e6
    finally:
        model.train(was_training)
    by_op["total"] = total
    by_op["conv_linear"] = sum(v for op, v in by_op.items() if op in ("conv", "linear", "addmm", "matmul"))
    return by_op
