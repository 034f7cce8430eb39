"""A depthwise convolution whose weight gradient, in CPU training, avoids oneDNN's slow path.

oneDNN computes the weight gradient of a channels-last depthwise convolution with a kernel of 5
about six times as slowly as the convolution itself (3x3 kernels take a fast path), and that was the
largest single cost of a sandwich step (``benchmarks/bench_train_official.py``). The same gradient,
a correlation of each input channel with its output gradient summed over the batch, is one grouped
convolution with ``batch * channels`` groups: the input as one image of ``N*C`` channels, each
sample's output gradient as that channel's kernel (dilated by the stride). It is 1.3-2.4x faster
here, equal to rounding (relative 1e-5). The forward pass and the input gradient stay oneDNN's.

Only channels-last inputs (the training layout of `alphanet_zoo.train.use_training_layout`) take it,
so a model as given computes exactly what the official implementation does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

MIN_KERNEL = 5  # 3x3 depthwise weight gradients are on oneDNN's fast path already
# torch.fx's tracing flag (without the warning newer releases attach to ``is_fx_tracing``)
_fx_tracing = getattr(torch.fx._symbolic_trace, "is_fx_symbolic_tracing", torch.fx._symbolic_trace.is_fx_tracing)


def depthwise_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, kernel: tuple[int, int],
                          stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """The gradient of a depthwise convolution's ``(C, 1, kh, kw)`` weight, given its input ``x``
    ``(N, C, H, W)`` and output gradient ``grad_out``, as one grouped convolution of ``N*C`` groups."""
    n, c, h, w = x.shape
    per_sample = F.conv2d(x.contiguous().view(1, n * c, h, w),
                          grad_out.contiguous().view(n * c, 1, grad_out.shape[2], grad_out.shape[3]),
                          None, 1, padding, stride, n * c)
    # a stride that does not divide the padded side leaves extra rows/columns past the kernel
    kh, kw = kernel
    return per_sample.view(n, c, per_sample.shape[2], per_sample.shape[3])[:, :, :kh, :kw].sum(0).unsqueeze(1)


class _DepthwiseConv(torch.autograd.Function):
    """Depthwise conv2d (no bias, no dilation): oneDNN's forward and input gradient, the weight
    gradient of `depthwise_weight_grad`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
                padding: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, list(ctx.stride), list(ctx.padding), [1, 1], False, [0, 0],
                weight.shape[0], [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad(x, grad_out, tuple(weight.shape[2:]), ctx.stride, ctx.padding)
        return grad_x, grad_w, None, None


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` with ``groups == in_channels == out_channels`` (same parameters, same names);
    in CPU training on a channels-last input with a kernel of 5 or more, its weight gradient is
    `depthwise_weight_grad`'s. Everything else (inference, export, tracing, autocast, CUDA) is
    ``nn.Conv2d``'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._conv_forward(x, self.weight, self.bias)
        return self._eager_forward(x)

    @torch.jit.unused
    def _eager_forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.bias is None and self.kernel_size[0] >= MIN_KERNEL and self.dilation == (1, 1)
                and self.padding_mode == "zeros" and isinstance(self.padding, tuple)
                and not torch.jit.is_tracing() and not _fx_tracing()
                and not torch.compiler.is_compiling() and not torch.is_autocast_enabled("cpu")
                and torch.is_grad_enabled() and self.weight.requires_grad
                and x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)):
            return _DepthwiseConv.apply(x, self.weight, self.stride, self.padding)
        return self._conv_forward(x, self.weight, self.bias)


__all__ = ["DepthwiseConv2d", "depthwise_weight_grad"]
