"""ONNX graph passes that let OpenVINO run AlphaNet faster without changing what it computes.

Applied to a copy of the verified fp32 ONNX before OpenVINO converts it (`openvino_export`); the IR
is then verified against PyTorch like any fp32 file (to 1e-4), so a pass that changed the function
could not ship. The ONNX export itself is left as torch wrote it. Figures: ``benchmarks/README_deploy.md``.

- `fold_hard_sigmoid`: squeeze-excite's gate is ``HardSigmoid(conv(s))``, ``max(0, min(1, conv(s) / 6
  + 1/2))``. OpenVINO runs the ONNX HardSigmoid with a reference (non-JIT) kernel, between layout
  reorders; scaling the 1x1 conv's weights by 1/6 and its bias to ``b / 6 + 1/2`` leaves a
  ``Clip(0, 1)``, which OpenVINO fuses into the conv as a post-op.

Tried and left out (``benchmarks/bench_deploy_levers.py`` keeps it): folding a stride-2 shortcut's
2x2 average pool and 1x1 conv into one 2x2 stride-2 conv saves a pass over the activations but
does four times the multiply-adds of the 1x1 conv; OpenVINO ran it no faster (a6, batch 16: the
shortcut convs went from 2.7 to 5.9 ms per batch against the 1.1 ms the pools took).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from onnx import ModelProto


def _attributes(node) -> dict:
    from onnx import helper  # onnx is imported when a pass runs: it takes most of a second

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def fold_hard_sigmoid(model: ModelProto) -> int:
    """``HardSigmoid(Conv(x))`` -> ``Clip(Conv'(x), 0, 1)``, Conv' = alpha * Conv + beta; returns the count."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    users: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    count = 0
    for node in list(graph.node):
        if node.op_type != "HardSigmoid":
            continue
        attrs = _attributes(node)
        alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
        conv = producer.get(node.input[0])
        if conv is None or conv.op_type != "Conv" or len(conv.input) < 3 or users.get(node.input[0]) != 1 \
                or conv.input[1] not in inits or conv.input[2] not in inits:
            continue
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
        # new initializers: the exporter shares identical tensors between layers
        names = (f"{conv.name}/hardsigmoid_w", f"{conv.name}/hardsigmoid_b", f"{node.name}/min", f"{node.name}/max")
        graph.initializer.extend([numpy_helper.from_array((w * alpha).astype(np.float32), names[0]),
                                  numpy_helper.from_array((b * alpha + beta).astype(np.float32), names[1]),
                                  numpy_helper.from_array(np.array(0, np.float32), names[2]),
                                  numpy_helper.from_array(np.array(1, np.float32), names[3])])
        conv.input[1], conv.input[2] = names[0], names[1]
        index = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(index, helper.make_node("Clip", [node.input[0], names[2], names[3]], list(node.output),
                                                  name=f"{node.name}/clip"))
        count += 1
    return count


def drop_unused_initializers(model: ModelProto) -> int:
    """Remove initializers no node reads any more (the passes leave the originals behind)."""
    used = {i for n in model.graph.node for i in n.input}
    unused = [i for i in model.graph.initializer if i.name not in used]
    for init in unused:
        model.graph.initializer.remove(init)
    return len(unused)


PASSES = {"hard_sigmoid_into_conv": fold_hard_sigmoid}


def optimise_for_openvino(model: ModelProto) -> dict[str, int]:
    """Apply every pass of `PASSES` to ``model`` in place; returns how often each applied."""
    done = {name: run(model) for name, run in PASSES.items()}
    drop_unused_initializers(model)
    return done
