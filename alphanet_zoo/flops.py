"""FLOPs in the paper's convention (multiply-adds of conv and linear layers, in millions) and parameters.

`count_flops` and `count_params` are analytic (from the layout, no model is built) and cached, for
search loops and model records. `count_flops_fvcore` traces a built model with fvcore, to cross-check.
"""
from __future__ import annotations

import functools
from typing import Mapping

import torch
from torch import nn

from .config import SEARCH_SPACE, ArchConfig
from .layout import subnet_layout
from .registry import resolve_arch


def _halve(side: int, stride: int) -> int:
    return -(-side // stride)  # ceil: what a padded stride-s conv gives


@functools.lru_cache(maxsize=65536)
def _count(arch: ArchConfig, num_classes: int) -> float:
    layout = subnet_layout(arch, SEARCH_SPACE, num_classes)
    side = _halve(arch.resolution, 2)
    macs = 3 * layout.stem_channels * 9 * side * side
    for stage in layout.stages:
        for b in stage:
            area_in = side * side
            side = _halve(side, b.stride)
            area = side * side
            if b.has_expand:
                macs += b.in_channels * b.mid_channels * area_in
            macs += b.mid_channels * b.kernel_size ** 2 * area  # depthwise
            macs += 2 * b.mid_channels * b.se_channels
            macs += b.mid_channels * b.out_channels * area
            if b.shortcut_conv:
                macs += b.in_channels * b.out_channels * area
    macs += layout.head_in * layout.head_mid * side * side
    macs += layout.head_mid * layout.head_out + layout.head_out * layout.num_classes
    return macs / 1e6


@functools.lru_cache(maxsize=4096)
def _params(arch: ArchConfig, num_classes: int) -> int:
    layout = subnet_layout(arch, SEARCH_SPACE, num_classes)

    def conv_bn(c_in: int, c_out: int, k: int = 1, groups: int = 1) -> int:
        return c_in // groups * c_out * k * k + 2 * c_out  # weight, BN weight and bias

    total = conv_bn(3, layout.stem_channels, 3)
    for stage in layout.stages:
        for b in stage:
            if b.has_expand:
                total += conv_bn(b.in_channels, b.mid_channels)
            total += conv_bn(b.mid_channels, b.mid_channels, b.kernel_size, b.mid_channels)
            if b.se_channels:
                total += 2 * b.mid_channels * b.se_channels + b.se_channels + b.mid_channels
            total += conv_bn(b.mid_channels, b.out_channels)
            if b.shortcut_conv:
                total += b.in_channels * b.out_channels
    total += conv_bn(layout.head_in, layout.head_mid)
    total += layout.head_mid * layout.head_out + layout.head_out * layout.num_classes + layout.num_classes
    return total


def count_params(arch: ArchConfig | str | Mapping, num_classes: int = 1000) -> int:
    """Parameters of the standalone subnet (every one of them runs; no dead shortcut weights)."""
    return _params(resolve_arch(arch).validate(), num_classes)


def count_flops(arch: ArchConfig | str | Mapping, num_classes: int = 1000) -> float:
    """MFLOPs of a subnet at its own resolution, as the paper counts them (conv and linear multiply-adds)."""
    return _count(resolve_arch(arch).validate(), num_classes)


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
