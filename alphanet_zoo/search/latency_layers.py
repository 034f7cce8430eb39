"""The layers a latency table times: stem, MB blocks in context, head; and each one alone as a graph.

A block's latency depends on its context, not only on its own choices: the input side (from the
resolution and the strides before it), input/middle/output widths, kernel, stride, squeeze-excite
and the shortcut. `Layer` is that context; `arch_layers(arch)` lists the layers of a subnet,
`space_layers(space)` every layer any subnet of the space (at the given resolutions) can have —
identical contexts (the later blocks of a stage at the same width, a block that appears in two
stages) are one entry. Channel counts come from `alphanet_zoo.layout`, the one place they are computed.

`onnx_graph(layer, batch)` is the layer alone as an ONNX model with the very nodes the exporter
writes for it inside a whole network (BatchNorm folded into the convolutions, swish as Sigmoid and
Mul, squeeze-excite as ReduceMean, Conv, Relu, Conv, HardSigmoid, Mul): built directly, it costs a
millisecond instead of a trace. `torch_module(layer)` is the layer as PyTorch modules.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Iterable

import numpy as np
import torch
from torch import nn

from ..config import SEARCH_SPACE, ArchConfig, SearchSpace
from ..layers import ConvBNAct, MBBlock
from ..layout import BlockLayout, subnet_layout

OPSET = 18  # the exporter's default (alphanet_zoo.export.DEFAULT_OPSET)


def _halve(side: int, stride: int) -> int:
    return -(-side // stride)


@dataclass(frozen=True, order=True)
class Layer:
    """One timed unit: ``kind`` is ``stem``, ``mb`` or ``head``; ``side`` its input's height and width."""

    kind: str
    side: int
    in_channels: int
    mid_channels: int
    out_channels: int
    kernel_size: int = 1
    stride: int = 1
    has_expand: bool = False
    se_channels: int = 0
    shortcut_conv: bool = False
    num_classes: int = 0

    @property
    def key(self) -> str:
        if self.kind == "stem":
            return f"stem:r{self.side}:o{self.out_channels}"
        if self.kind == "head":
            return (f"head:s{self.side}:i{self.in_channels}:m{self.mid_channels}:o{self.out_channels}"
                    f":c{self.num_classes}")
        return (f"mb:s{self.side}:i{self.in_channels}:m{self.mid_channels}:o{self.out_channels}:k{self.kernel_size}"
                f":st{self.stride}:e{int(self.has_expand)}:se{self.se_channels}:sc{int(self.shortcut_conv)}")

    @property
    def block(self) -> BlockLayout:
        return BlockLayout(self.in_channels, self.mid_channels, self.out_channels, self.kernel_size, self.stride,
                           self.has_expand, self.se_channels, self.shortcut_conv)


def _stem(resolution: int, width: int) -> Layer:
    return Layer("stem", resolution, 3, width, width, 3, 2)


def _block(side: int, b: BlockLayout) -> Layer:
    return Layer("mb", side, b.in_channels, b.mid_channels, b.out_channels, b.kernel_size, b.stride, b.has_expand,
                 b.se_channels, b.shortcut_conv)


@functools.lru_cache(maxsize=65536)
def arch_layers(arch: ArchConfig, num_classes: int = 1000, space: SearchSpace = SEARCH_SPACE) -> tuple[Layer, ...]:
    """The layers of subnet ``arch``, in order: stem, every block of every stage, head."""
    layout = subnet_layout(arch, space, num_classes)
    out = [_stem(arch.resolution, layout.stem_channels)]
    side = _halve(arch.resolution, 2)
    for stage in layout.stages:
        for b in stage:
            out.append(_block(side, b))
            side = _halve(side, b.stride)
    out.append(Layer("head", side, layout.head_in, layout.head_mid, layout.head_out, num_classes=num_classes))
    return tuple(out)


def space_layers(space: SearchSpace = SEARCH_SPACE, num_classes: int = 1000,
                 resolutions: Iterable[int] | None = None) -> list[Layer]:
    """Every distinct layer a subnet of ``space`` can have at ``resolutions`` (default: all), sorted."""
    found: set[Layer] = set()
    stages = space.mb_stages
    for resolution in (space.resolutions if resolutions is None else resolutions):
        base = space.smallest()
        for s, stage in enumerate(stages):
            # vary the stage's own choices and its input width (the previous stage's output); the
            # layout of a subnet with the stage at full depth gives its first and later blocks
            for w_in in space.stages[s].widths:
                for w_out in stage.widths:
                    for k in stage.kernel_sizes:
                        for e in stage.expand_ratios:
                            width = list(base.width)
                            width[s], width[s + 1] = w_in, w_out
                            arch = replace(base, resolution=resolution, width=tuple(width),
                                           depth=_set(base.depth, s, max(stage.depths)),
                                           kernel_size=_set(base.kernel_size, s, k),
                                           expand_ratio=_set(base.expand_ratio, s, e))
                            layers = arch_layers(arch, num_classes, space)
                            offset = 1 + sum(arch.depth[:s])
                            found.update(layers[offset:offset + arch.depth[s]])
        for w in space.stages[0].widths:
            found.add(_stem(resolution, w))
        for w7 in space.stages[-2].widths:
            for w8 in space.stages[-1].widths:
                width = list(base.width)
                width[-2], width[-1] = w7, w8
                found.add(arch_layers(replace(base, resolution=resolution, width=tuple(width)), num_classes,
                                      space)[-1])
    return sorted(found)


def _set(values: tuple[int, ...], index: int, value: int) -> tuple[int, ...]:
    out = list(values)
    out[index] = value
    return tuple(out)


def input_shape(layer: Layer, batch: int) -> tuple[int, int, int, int]:
    return (batch, layer.in_channels, layer.side, layer.side)


def output_shape(layer: Layer, batch: int) -> tuple[int, ...]:
    if layer.kind == "head":
        return (batch, layer.num_classes)
    side = _halve(layer.side, layer.stride)
    return (batch, layer.out_channels, side, side)


# ---- the layer as an ONNX graph ----------------------------------------------------------------

class _Graph:
    """A tiny ONNX graph builder with seeded random weights (timings do not depend on their values)."""

    def __init__(self, seed: int = 0) -> None:
        self.nodes, self.inits, self.rng, self.n = [], [], np.random.RandomState(seed), 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def weight(self, *shape: int) -> str:
        from onnx import numpy_helper

        name = self.name("w")
        self.inits.append(numpy_helper.from_array((self.rng.standard_normal(shape) * 0.1).astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        out = self.name(op)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, k: int = 1, stride: int = 1, groups: int = 1,
             bias: bool = True) -> str:
        inputs = [x, self.weight(c_out, c_in // groups, k, k)] + ([self.weight(c_out)] if bias else [])
        p = k // 2
        return self.node("Conv", inputs, dilations=[1, 1], group=groups, kernel_shape=[k, k], pads=[p, p, p, p],
                         strides=[stride, stride])

    def swish(self, x: str) -> str:
        return self.node("Mul", [x, self.node("Sigmoid", [x])])

    def constant(self, values: list[int]) -> str:
        from onnx import helper, numpy_helper

        out = self.name("Constant")
        self.nodes.append(helper.make_node("Constant", [], [out], name=out,
                                           value=numpy_helper.from_array(np.array(values, dtype=np.int64))))
        return out


def onnx_graph(layer: Layer, batch: int = 1):
    """``layer`` alone as an ``onnx.ModelProto``: input ``input`` (batch, C, side, side), output ``output``."""
    from onnx import TensorProto, helper

    g = _Graph()
    x = "input"
    if layer.kind == "stem":
        y = g.swish(g.conv(x, 3, layer.out_channels, 3, 2))
    elif layer.kind == "head":
        y = g.swish(g.conv(x, layer.in_channels, layer.mid_channels))
        y = g.node("GlobalAveragePool", [y])
        y = g.swish(g.conv(y, layer.mid_channels, layer.out_channels, bias=False))
        y = g.node("Flatten", [y], axis=1)
        y = g.node("Gemm", [y, g.weight(layer.num_classes, layer.out_channels), g.weight(layer.num_classes)],
                   alpha=1.0, beta=1.0, transB=1)
    else:
        mid = layer.mid_channels
        y = g.swish(g.conv(x, layer.in_channels, mid)) if layer.has_expand else x
        y = g.swish(g.conv(y, mid, mid, layer.kernel_size, layer.stride, groups=mid))
        if layer.se_channels:
            s = g.node("ReduceMean", [y, g.constant([2, 3])], keepdims=1)
            s = g.node("Relu", [g.conv(s, mid, layer.se_channels)])
            s = g.node("HardSigmoid", [g.conv(s, layer.se_channels, mid)], alpha=1.0 / 6)
            y = g.node("Mul", [y, s])
        y = g.conv(y, mid, layer.out_channels)
        shortcut = x
        if layer.stride > 1:
            pad = layer.side % 2
            shortcut = g.node("AveragePool", [shortcut], ceil_mode=0, count_include_pad=1, kernel_shape=[2, 2],
                              pads=[pad] * 4, strides=[2, 2])
        if layer.shortcut_conv:
            shortcut = g.conv(shortcut, layer.in_channels, layer.out_channels, bias=False)
        y = g.node("Add", [y, shortcut])
    g.nodes[-1].output[0] = "output"
    graph = helper.make_graph(g.nodes, f"alphanet_{layer.kind}", [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape(layer, batch)))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(output_shape(layer, batch)))], g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="alphanet_zoo")


# ---- the layer as PyTorch modules --------------------------------------------------------------

class _Head(nn.Module):
    def __init__(self, layer: Layer) -> None:
        super().__init__()
        self.final_expand = ConvBNAct(layer.in_channels, layer.mid_channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_mix = nn.Conv2d(layer.mid_channels, layer.out_channels, 1, bias=False)
        self.mix_act = nn.SiLU()
        self.classifier = nn.Linear(layer.out_channels, layer.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.final_expand(x))
        return self.classifier(self.mix_act(self.feature_mix(x)).flatten(1))


def torch_module(layer: Layer) -> nn.Module:
    """``layer`` as the PyTorch modules `AlphaNet` is made of, in eval mode."""
    if layer.kind == "stem":
        module: nn.Module = ConvBNAct(3, layer.out_channels, 3, stride=2)
    elif layer.kind == "head":
        module = _Head(layer)
    else:
        module = MBBlock(layer.block)
    return module.eval()
