"""An independent, functional AlphaNet forward over the official checkpoint's own keys.

Written from the architecture facts in docs/design.md alone (not from the package's modules), so that
parity can be checked on any weights, inputs and architectures, not only those of the reference
file: slicing, block order, SE, shortcuts and head are all re-derived here.
"""
import math

import torch.nn.functional as F

STRIDES = [1, 2, 2, 2, 1, 2, 1]
HAS_SE = [False, False, True, False, True, True, True]
MAX_DEPTHS = [2, 5, 6, 6, 8, 8, 2]


def make_divisible(v, divisor=8):
    new = max(1, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def official_forward(sd, arch, x, train):
    """Logits of subnet ``arch`` (a dict) on ``x`` with official-layout tensors ``sd`` (no 'module.')."""

    def bn(h, prefix, c):
        return F.batch_norm(h, sd[prefix + ".running_mean"][:c].clone(), sd[prefix + ".running_var"][:c].clone(),
                            sd[prefix + ".weight"][:c], sd[prefix + ".bias"][:c], training=train, momentum=0.0,
                            eps=1e-5)

    def kernel(w, out, inp, k):
        off = (w.shape[-1] - k) // 2
        return w[:out, :inp, off:off + k, off:off + k]

    width, depth, ks, er = arch["width"], arch["depth"], arch["kernel_size"], arch["expand_ratio"]
    h = F.conv2d(x, kernel(sd["first_conv.conv.conv.weight"], width[0], 3, 3), stride=2, padding=1)
    h = F.silu(bn(h, "first_conv.bn.bn", width[0]))
    in_c, g = width[0], 0
    for s in range(7):
        for j in range(MAX_DEPTHS[s]):
            if j < depth[s]:
                h = _block(sd, f"blocks.{g}.", h, in_c, width[s + 1], ks[s], er[s],
                           STRIDES[s] if j == 0 else 1, HAS_SE[s], bn, kernel)
                in_c = width[s + 1]
            g += 1
    c7, c8 = width[7], width[8]
    h = F.silu(bn(F.conv2d(h, sd["last_conv.final_expand_layer.conv.conv.weight"][:6 * c7, :c7]),
                  "last_conv.final_expand_layer.bn.bn", 6 * c7))
    h = h.mean((2, 3), keepdim=True)
    h = F.silu(F.conv2d(h, sd["last_conv.feature_mix_layer.conv.conv.weight"][:c8, :6 * c7])).flatten(1)
    return F.linear(h, sd["classifier.linear.linear.weight"][:, :c8], sd["classifier.linear.linear.bias"])


def _block(sd, p, x, in_c, out_c, k, e, stride, se, bn, kernel):
    m = p + "mobile_inverted_conv."
    h = x
    if m + "inverted_bottleneck.conv.conv.weight" in sd:
        mid = make_divisible(round(in_c * e), 8)
        h = F.silu(bn(F.conv2d(h, sd[m + "inverted_bottleneck.conv.conv.weight"][:mid, :in_c]),
                      m + "inverted_bottleneck.bn.bn", mid))
    else:
        mid = in_c
    h = F.conv2d(h, kernel(sd[m + "depth_conv.conv.conv.weight"], mid, 1, k), stride=stride, padding=k // 2,
                 groups=mid)
    h = F.silu(bn(h, m + "depth_conv.bn.bn", mid))
    if se:
        r = make_divisible(mid // 4, 8)
        q = h.mean((2, 3), keepdim=True)
        q = F.relu(F.conv2d(q, sd[m + "depth_conv.se.fc.reduce.weight"][:r, :mid],
                            sd[m + "depth_conv.se.fc.reduce.bias"][:r]))
        q = F.conv2d(q, sd[m + "depth_conv.se.fc.expand.weight"][:mid, :r],
                     sd[m + "depth_conv.se.fc.expand.bias"][:mid])
        h = h * (F.relu6(q + 3) / 6)
    h = bn(F.conv2d(h, sd[m + "point_linear.conv.conv.weight"][:out_c, :mid]), m + "point_linear.bn.bn", out_c)
    shortcut = x
    if not (in_c == out_c and stride == 1):
        if stride > 1:
            shortcut = F.avg_pool2d(shortcut, stride, padding=0 if x.shape[-1] % 2 == 0 else 1)
        if in_c != out_c:
            shortcut = F.conv2d(shortcut, sd[p + "shortcut.conv.conv.weight"][:out_c, :in_c])
    return h + shortcut


def official_flops(arch):
    """MFLOPs in the paper's convention, counted from the docs/design.md rules by walking the network."""
    width, depth, ks, er, res = (arch["width"], arch["depth"], arch["kernel_size"], arch["expand_ratio"],
                                 arch["resolution"])
    side = math.ceil(res / 2)
    total = 3 * width[0] * 9 * side ** 2
    in_c = width[0]
    for s in range(7):
        for j in range(depth[s]):
            stride = STRIDES[s] if j == 0 else 1
            out_side = math.ceil(side / stride)
            mid = make_divisible(round(in_c * er[s]), 8) if er[s] != 1 else in_c
            if er[s] != 1:
                total += in_c * mid * side ** 2
            total += mid * ks[s] ** 2 * out_side ** 2 + mid * width[s + 1] * out_side ** 2
            if HAS_SE[s]:
                total += 2 * mid * make_divisible(mid // 4, 8)
            if in_c != width[s + 1]:
                total += in_c * width[s + 1] * out_side ** 2
            in_c, side = width[s + 1], out_side
    total += width[7] * 6 * width[7] * side ** 2 + 6 * width[7] * width[8] + width[8] * 1000
    return total / 1e6
