"""ONNX export of an `AlphaNet`: an inference graph with BatchNorm folded, a dynamic batch axis,
input ``input`` (N, 3, R, R), output ``logits``, and the model's metadata in ``metadata_props``.

Exporter choice: torch's TorchScript-based exporter (``dynamo=False``). It needs no extra
dependency, folds BatchNorm into the convolutions for an eval model and gives a plain graph of
standard ops (Conv, Sigmoid, Mul, Add, ReduceMean, HardSigmoid, AveragePool, Gemm) that ONNX
Runtime fuses well. The dynamo exporter (torch's default since 2.9) would add the ``onnxscript``
dependency and keep BatchNormalization nodes for the runtime to fold. Both the exporter call and
its graph clean-up live in `onnx_model`, the one place to change if the legacy exporter goes away.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alphanet_zoo._io import atomic_path
from alphanet_zoo.errors import InputError

from .metadata import INPUT_NAME, OUTPUT_NAME, export_metadata, to_string_props
from .verify import DEFAULT_TOLERANCE, VERIFY_BATCH_SIZES, ExportResult, eval_mode, reported_as_not_written, verify_onnx

DEFAULT_OPSET = 18
MIN_OPSET = 13  # ReduceMean/Squeeze semantics and HardSigmoid as used here; older runtimes lack them
MAX_OPSET = 20  # the highest opset torch's TorchScript-based exporter writes
BATCH_AXIS = "batch"
TRACE_BATCH = 2  # dummy batch traced for a dynamic-batch export (verification then uses other sizes)


def check_opset(opset: int) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise InputError(f"ONNX opset must be an integer from {MIN_OPSET} to {MAX_OPSET}, got {opset!r}")
    return opset


def check_batch(batch: int | str) -> int | str:
    """``"dynamic"`` or a positive integer (a fixed batch size)."""
    if batch == "dynamic":
        return batch
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
    return batch


def _strip_identities(graph) -> None:
    """Drop Identity nodes (the exporter emits them for weights it de-duplicated) by wiring their
    consumers to the Identity's input."""
    outputs = {o.name for o in graph.output}
    rename = {}
    for node in list(graph.node):
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[0]
            graph.node.remove(node)
    for node in graph.node:
        for i, name in enumerate(node.input):
            while name in rename:
                name = rename[name]
            node.input[i] = name


def onnx_model(model: nn.Module, *, opset: int = DEFAULT_OPSET, batch: int | str = "dynamic",
               metadata: dict[str, Any] | None = None):
    """The ``onnx.ModelProto`` of an AlphaNet in eval mode (the model's own mode is left as it was)."""
    import onnx

    opset, batch = check_opset(opset), check_batch(batch)
    resolution = model.arch.resolution
    param = next(model.parameters())
    dummy = torch.zeros(TRACE_BATCH if batch == "dynamic" else batch, 3, resolution, resolution,
                        dtype=param.dtype, device=param.device)
    axes = {INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}} if batch == "dynamic" else None
    buffer = io.BytesIO()
    with eval_mode(model), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter, chosen on purpose
        torch.onnx.export(model, (dummy,), buffer, dynamo=False, export_params=True, opset_version=opset,
                          do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes)
    proto = onnx.load_from_string(buffer.getvalue())
    _strip_identities(proto.graph)
    meta = metadata if metadata is not None else export_metadata(model)
    onnx.helper.set_model_props(proto, to_string_props(meta))
    proto.doc_string = (f"AlphaNet {meta.get('name') or 'custom'}: input '{INPUT_NAME}' float32 (N, 3, {resolution}, "
                        f"{resolution}), preprocessed as the metadata 'config' says; output '{OUTPUT_NAME}' "
                        f"(N, {model.num_classes}). License of the weights: {meta.get('license')}.")
    return proto


def to_onnx(model: nn.Module, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
            batch: int | str = "dynamic", metadata: dict[str, Any] | None = None, verify: bool = True,
            tolerance: float = DEFAULT_TOLERANCE) -> ExportResult:
    """Export ``model`` (an `AlphaNet`) to an ONNX file at ``path`` and, by default, verify it.

    The file is written under a temporary name beside ``path``, checked there (``onnx.checker``
    full check, then ONNX Runtime against ``model`` at batch sizes other than the traced one) and
    only then renamed onto ``path``: a failed check (`ExportVerificationError`) or an interruption
    leaves nothing behind. ``metadata`` defaults to `export_metadata(model)`.
    """
    import onnx

    meta = metadata if metadata is not None else export_metadata(model)
    proto = onnx_model(model, opset=opset, batch=batch, metadata=meta)
    verification = None
    with reported_as_not_written(path), atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
        del proto
        if verify:
            sizes = VERIFY_BATCH_SIZES if batch == "dynamic" else (batch,)
            verification = verify_onnx(tmp, model, batch_sizes=sizes, tolerance=tolerance, label=Path(path).name)
    return ExportResult(Path(path), "onnx", meta, verification)
