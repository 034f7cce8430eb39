"""Channel layouts: the one place where an architecture becomes per-layer channel counts.

`subnet_layout(arch)` gives the layers of a standalone subnet, `supernet_layout(space)` the
(maximal) layers the supernet allocates. Models, the FLOPs counter and the extractor all read
these; nothing else computes a channel count.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from .config import SEARCH_SPACE, ArchConfig, SearchSpace, make_divisible

SE_REDUCTION = 4


@dataclass(frozen=True)
class BlockLayout:
    """Channels and shape of one inverted-residual (MB) block."""

    in_channels: int
    mid_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    has_expand: bool  # 1x1 expansion conv; absent where the expand ratio is fixed at 1
    se_channels: int  # 0: no squeeze-excite
    shortcut_conv: bool  # 1x1 conv on the shortcut (only where in != out is possible)


@dataclass(frozen=True)
class NetLayout:
    """Channels of a whole network: stem, blocks per MB stage, head."""

    stem_channels: int
    stages: tuple[tuple[BlockLayout, ...], ...]
    head_in: int  # width of the last MB stage
    head_mid: int  # channels of the final 1x1 expansion
    head_out: int  # channels of the feature-mix conv (the embedding size)
    num_classes: int


def se_channels(mid: int) -> int:
    return make_divisible(mid // SE_REDUCTION, 8)


@functools.lru_cache(maxsize=1 << 16)
def stage_blocks(in_ch: int, out_ch: int, ratio: int, kernel: int, depth: int, stride: int,
                 use_se: bool) -> tuple[BlockLayout, ...]:
    """The blocks of one MB stage of a standalone subnet, entered with ``in_ch`` channels (cached: a
    search lays out hundreds of thousands of subnets that share most of their stages)."""
    blocks = []
    for j in range(depth):
        mid = make_divisible(round(in_ch * ratio), 8) if ratio != 1 else in_ch
        blocks.append(BlockLayout(
            in_channels=in_ch, mid_channels=mid, out_channels=out_ch, kernel_size=kernel,
            stride=stride if j == 0 else 1, has_expand=ratio != 1,
            se_channels=se_channels(mid) if use_se else 0,
            shortcut_conv=in_ch != out_ch))
        in_ch = out_ch
    return tuple(blocks)


def stage_args(arch: ArchConfig, space: SearchSpace = SEARCH_SPACE) -> list[tuple]:
    """`stage_blocks`' arguments for each MB stage of ``arch``."""
    out, in_ch = [], arch.width[0]
    for s, stage in enumerate(space.mb_stages):
        out.append((in_ch, arch.width[s + 1], arch.expand_ratio[s], arch.kernel_size[s], arch.depth[s],
                    stage.stride, stage.use_se))
        in_ch = arch.width[s + 1]
    return out


def head_channels(arch: ArchConfig, space: SearchSpace = SEARCH_SPACE) -> tuple[int, int, int]:
    """The head's channels: in (the last MB stage's width), the final 1x1 expansion, out (the embedding)."""
    return arch.width[-2], space.head_expand * arch.width[-2], arch.width[-1]


def subnet_layout(arch: ArchConfig, space: SearchSpace = SEARCH_SPACE, num_classes: int | None = None) -> NetLayout:
    """The layers of the standalone subnet ``arch`` (strides and SE placement come from ``space``)."""
    stages = tuple(stage_blocks(*args) for args in stage_args(arch, space))
    head_in, head_mid, head_out = head_channels(arch, space)
    return NetLayout(stem_channels=arch.width[0], stages=stages, head_in=head_in, head_mid=head_mid,
                     head_out=head_out, num_classes=space.num_classes if num_classes is None else num_classes)


def supernet_layout(space: SearchSpace = SEARCH_SPACE, num_classes: int | None = None) -> NetLayout:
    """The layers the supernet allocates: every choice at its maximum, so each subnet is a slice."""
    stages = []
    prev_widths = space.stages[0].widths
    for stage in space.mb_stages:
        out_ch, ratio, kernel = max(stage.widths), max(stage.expand_ratios), max(stage.kernel_sizes)
        blocks = []
        for j in range(max(stage.depths)):
            in_choices = prev_widths if j == 0 else stage.widths
            in_ch = max(in_choices)
            mid = round(in_ch * ratio)
            blocks.append(BlockLayout(
                in_channels=in_ch, mid_channels=mid, out_channels=out_ch, kernel_size=kernel,
                stride=stage.stride if j == 0 else 1, has_expand=stage.expand_ratios != (1,),
                se_channels=se_channels(mid) if stage.use_se else 0,
                # later blocks of a stage always have in == out: their shortcut is the identity
                shortcut_conv=j == 0 and any(i != o for i in in_choices for o in stage.widths)))
        stages.append(tuple(blocks))
        prev_widths = stage.widths
    head_in = max(space.stages[-2].widths)
    return NetLayout(stem_channels=max(space.stages[0].widths), stages=tuple(stages), head_in=head_in,
                     head_mid=space.head_expand * head_in, head_out=max(space.stages[-1].widths),
                     num_classes=space.num_classes if num_classes is None else num_classes)
