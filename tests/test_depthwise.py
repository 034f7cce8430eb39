"""The depthwise convolution's own weight gradient (alphanet_zoo.depthwise) against PyTorch's."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alphanet_zoo import AlphaNet
from alphanet_zoo.depthwise import DepthwiseConv2d, depthwise_weight_grad
from alphanet_zoo.train import use_training_layout

CL = torch.channels_last


@pytest.mark.parametrize("kernel,stride,side", [(5, 1, 12), (5, 2, 12), (5, 2, 11), (7, 2, 9), (3, 1, 8)])
def test_weight_grad_equals_pytorchs(kernel, stride, side):
    torch.manual_seed(0)
    x = torch.randn(3, 6, side, side + 1)
    weight = torch.randn(6, 1, kernel, kernel)
    padding = (kernel // 2, kernel // 2)
    out = F.conv2d(x, weight, None, stride, padding, 1, 6)
    grad = torch.randn_like(out)
    expected = torch.ops.aten.convolution_backward(grad, x, weight, None, [stride] * 2, list(padding), [1, 1], False,
                                                   [0, 0], 6, [False, True, False])[1]
    got = depthwise_weight_grad(x.to(memory_format=CL), grad.to(memory_format=CL), (kernel, kernel),
                                (stride, stride), padding)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def _pair(stride):
    torch.manual_seed(1)
    ours = DepthwiseConv2d(8, 8, 5, stride, 2, groups=8, bias=False)
    plain = nn.Conv2d(8, 8, 5, stride, 2, groups=8, bias=False)
    plain.load_state_dict(ours.state_dict())
    return ours, plain


@pytest.mark.parametrize("stride", [1, 2])
def test_channels_last_training_takes_the_grouped_gradient_and_agrees(stride):
    ours, plain = _pair(stride)
    x = torch.randn(4, 8, 15, 15).to(memory_format=CL).requires_grad_()
    x_plain = x.detach().clone().requires_grad_()
    y, y_plain = ours(x), plain(x_plain)
    assert "DepthwiseConv" in y.grad_fn.name()
    torch.testing.assert_close(y, y_plain)
    g = torch.randn_like(y)
    y.backward(g)
    y_plain.backward(g)
    torch.testing.assert_close(x.grad, x_plain.grad)
    # sums of 900 products of magnitude ~30, in another order: rounding, relative to the largest
    largest = plain.weight.grad.abs().max().item()
    torch.testing.assert_close(ours.weight.grad, plain.weight.grad, rtol=1e-5, atol=1e-6 * largest)


def test_other_cases_are_plain_conv2d():
    ours, plain = _pair(1)
    x = torch.randn(2, 8, 10, 10)
    assert type(ours(x.requires_grad_()).grad_fn) is type(plain(x).grad_fn)  # contiguous: exact, as given
    with torch.no_grad():
        assert ours(x.to(memory_format=CL)).grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's casts are conv2d's own
        y = ours(x.to(memory_format=CL))
    assert "DepthwiseConv" not in y.grad_fn.name() and y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert ours.weight.grad.dtype == torch.float32
    k3 = DepthwiseConv2d(8, 8, 3, 1, 1, groups=8, bias=False)  # 3x3 is on oneDNN's fast path
    assert "DepthwiseConv" not in k3(x.to(memory_format=CL)).grad_fn.name()


def test_model_keeps_names_scripts_and_traces():
    model = AlphaNet("a0", num_classes=10).eval()
    dw = [m for m in model.modules() if isinstance(m, DepthwiseConv2d)]
    assert dw and all(m.groups == m.in_channels == m.out_channels for m in dw)
    assert all(type(m) is nn.Conv2d for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == 1)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), expected)
    use_training_layout(model.train(), "cpu")
    traced = torch.fx.symbolic_trace(model)  # tracing in training, on a channels-last model: plain convs
    assert "DepthwiseConv" not in str(traced.graph)
