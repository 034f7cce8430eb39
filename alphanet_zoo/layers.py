"""Building blocks of AlphaNet: conv-BN-activation, squeeze-excite, the MB block, the head.

Plain ``torch.nn`` layers at fixed sizes. The supernet is made of the very same modules at
their largest sizes (see ``supernet.py``), so both share parameter names.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .depthwise import DepthwiseConv2d
from .layout import BlockLayout

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> optional swish; ``padding = kernel // 2``; a depthwise conv
    (``groups == in_channels == out_channels > 1``) is a `DepthwiseConv2d`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, act: bool = True) -> None:
        super().__init__()
        conv = DepthwiseConv2d if 1 < groups == in_channels == out_channels else nn.Conv2d
        self.conv = conv(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        if act:
            self.act = nn.SiLU()


class SqueezeExcite(nn.Module):
    """Channel attention: mean over H, W -> 1x1 conv -> ReLU -> 1x1 conv -> hard sigmoid -> scale."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = F.relu(self.reduce(s))
        return x * F.hardsigmoid(self.expand(s))


class Shortcut(nn.Module):
    """The residual path of a block: identity, or average pooling and/or a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, conv: bool) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False) if conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            # an odd side is padded so the pooled side is ceil(side / 2), as the depthwise conv gives
            x = F.avg_pool2d(x, self.stride, padding=x.shape[-1] % 2)
        if self.conv is not None:
            x = self.conv(x)
        return x


class MBBlock(nn.Module):
    """Inverted residual block: [1x1 expand] -> depthwise kxk -> [SE] -> 1x1 project, plus shortcut."""

    def __init__(self, layout: BlockLayout, drop_connect_rate: float = 0.0) -> None:
        super().__init__()
        mid = layout.mid_channels
        self.expand = ConvBNAct(layout.in_channels, mid) if layout.has_expand else None
        self.dw = ConvBNAct(mid, mid, layout.kernel_size, layout.stride, groups=mid)
        self.se = SqueezeExcite(mid, layout.se_channels) if layout.se_channels else None
        self.project = ConvBNAct(mid, layout.out_channels, act=False)
        needs_shortcut = (layout.stride > 1 or layout.in_channels != layout.out_channels
                          or layout.shortcut_conv)
        self.shortcut = Shortcut(layout.in_channels, layout.out_channels, layout.stride,
                                 layout.shortcut_conv) if needs_shortcut else nn.Identity()
        self.drop_connect_rate = drop_connect_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.dw(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        if self.training and self.drop_connect_rate > 0:
            y = drop_connect(y, self.drop_connect_rate)
        return y + self.shortcut(x)

    def extra_repr(self) -> str:
        return f"drop_connect_rate={self.drop_connect_rate}" if self.drop_connect_rate else ""


def drop_connect(x: torch.Tensor, rate: float) -> torch.Tensor:
    """Zero whole samples of a residual branch with probability ``rate``, rescaling the others."""
    keep = 1.0 - rate
    mask = torch.floor(keep + torch.rand((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device))
    return x / keep * mask
