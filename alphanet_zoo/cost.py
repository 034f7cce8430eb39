"""The analytic cost of an architecture: MFLOPs in the paper's convention (multiply-adds of conv and
linear layers) and parameters of the standalone subnet, from the layout alone (no model is built),
cached. `alphanet_zoo.flops` is the public face (it also takes model names); the registry's
`ModelInfo` reads its numbers from here instead of storing them.
"""
from __future__ import annotations

import functools

from .config import SEARCH_SPACE, ArchConfig
from .layout import head_channels, stage_args, stage_blocks, subnet_layout


def _halve(side: int, stride: int) -> int:
    return -(-side // stride)  # ceil: what a padded stride-s conv gives


@functools.lru_cache(maxsize=1 << 16)
def _stage_macs(args: tuple, side: int) -> tuple[int, int]:
    """Multiply-adds of one MB stage (`stage_blocks` arguments) entered at ``side`` pixels, and the side it leaves at."""
    macs = 0
    for b in stage_blocks(*args):
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
    return macs, side


@functools.lru_cache(maxsize=1 << 18)
def mflops(arch: ArchConfig, num_classes: int = 1000) -> float:
    """MFLOPs of ``arch`` at its own resolution (a validated `ArchConfig`), summed stage by stage."""
    side = _halve(arch.resolution, 2)
    stem = arch.width[0]
    macs = 3 * stem * 9 * side * side
    for args in stage_args(arch, SEARCH_SPACE):
        stage, side = _stage_macs(args, side)
        macs += stage
    head_in, head_mid, head_out = head_channels(arch, SEARCH_SPACE)
    macs += head_in * head_mid * side * side
    macs += head_mid * head_out + head_out * num_classes
    return macs / 1e6


@functools.lru_cache(maxsize=4096)
def params(arch: ArchConfig, num_classes: int = 1000) -> int:
    """Parameters of the standalone subnet ``arch`` (every one of them runs; no dead shortcut weights)."""
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
