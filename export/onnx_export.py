"""ONNX export of an `AlphaNet`: an inference graph with BatchNorm folded, a dynamic batch axis,
input ``input`` (N, 3, R, R), output ``logits``, and the model's metadata in ``metadata_props``.
An `AlphaNetFeatures` has one output per feature map instead: ``stride4``, ``stride8``, ...

Exporter choice: torch's TorchScript-based exporter (``dynamo=False``). It needs no extra
dependency, folds BatchNorm into the convolutions for an eval model and gives a plain graph of
standard ops (Conv, Sigmoid, Mul, Add, ReduceMean, HardSigmoid, AveragePool, Gemm) that ONNX
Runtime fuses well. The dynamo exporter (torch's default since 2.9) would add the ``onnxscript``
dependency and keep BatchNormalization nodes for the runtime to fold. Both the exporter call and
its graph clean-up live in `onnx_model`, the one place to change if the legacy exporter goes away.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alphanet_zoo.errors import InputError

from .builders import Builder, Candidate, ExportJob, register
from .metadata import INPUT_NAME, export_metadata, output_names, to_string_props
from .quantize import ONNXRUNTIME_OPS, quantize_onnx
from .runtime import OnnxRuntimeModel
from .verify import TRACE_BATCH_SIZE, Verification, check_onnx_graph, eval_mode, verify_onnx

DEFAULT_OPSET = 18
MIN_OPSET = 13  # ReduceMean/Squeeze semantics and HardSigmoid as used here; older runtimes lack them
MAX_OPSET = 20  # the highest opset torch's TorchScript-based exporter writes
BATCH_AXIS = "batch"


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
               metadata: dict[str, Any] | None = None, export_info: dict[str, Any] | None = None):
    """The ``onnx.ModelProto`` of an AlphaNet in eval mode (the model's own mode is left as it was)."""
    import onnx  # imported when used: it takes most of a second

    opset, batch = check_opset(opset), check_batch(batch)
    resolution = model.arch.resolution
    param = next(model.parameters())
    dummy = torch.zeros(TRACE_BATCH_SIZE if batch == "dynamic" else batch, 3, resolution, resolution,
                        dtype=param.dtype, device=param.device)
    outputs = output_names(model)
    axes = {name: {0: BATCH_AXIS} for name in (INPUT_NAME, *outputs)} if batch == "dynamic" else None
    buffer = io.BytesIO()
    with eval_mode(model), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter, chosen on purpose
        torch.onnx.export(model, (dummy,), buffer, dynamo=False, export_params=True, opset_version=opset,
                          do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL,
                          input_names=[INPUT_NAME], output_names=outputs, dynamic_axes=axes)
    proto = onnx.load_from_string(buffer.getvalue())
    _strip_identities(proto.graph)
    meta = metadata if metadata is not None else export_metadata(model)
    onnx.helper.set_model_props(proto, to_string_props(meta, export_info))
    if len(outputs) > 1:
        channels = model.feature_info.channels()
        said = "feature maps " + ", ".join(f"'{n}' (N, {c}, ...)" for n, c in zip(outputs, channels))
    else:
        said = f"output '{outputs[0]}' (N, {model.num_classes})"
    proto.doc_string = (f"AlphaNet {meta.get('name') or 'custom'}: input '{INPUT_NAME}' float32 (N, 3, {resolution}, "
                        f"{resolution}), preprocessed as the metadata 'config' says; {said}. License of the "
                        f"weights: {meta.get('license')}.")
    return proto


@register
class OnnxBuilder(Builder):
    """ONNX files: fp32 as exported (BatchNorm folded), int8 quantized from it (`quantize`)."""

    format = "onnx"
    suffixes = (".onnx",)
    description = "ONNX"
    options = ("opset", "batch")
    precisions = ("fp32", "int8")
    precision_hints = {"bf16": "ONNX Runtime's CPU provider has no bf16 kernels; --format openvino runs bf16"}
    feature_maps = True

    def check(self, job: ExportJob) -> None:
        """The opset (default `DEFAULT_OPSET`) and the batch axis."""
        job.opset = check_opset(DEFAULT_OPSET if job.opset is None else job.opset)
        job.batch = check_batch(job.batch)

    def build(self, job: ExportJob, precision: str) -> Candidate:
        return self.fp32(job) if precision == "fp32" else self.int8(job, ONNXRUNTIME_OPS)

    def int8(self, job: ExportJob, op_types) -> Candidate:
        """The int8 QDQ file quantizing ``op_types`` (None: every op), built once per export and op set."""
        key = f"int8_onnx_{'-'.join(op_types) if op_types else 'all'}"
        if key not in job.cache:
            fp32 = self.fp32(job)
            path = job.staging / f"{key}.onnx"
            recipe = quantize_onnx(fp32.files[0], path, job.images.calibration, job.images.calibration_source,
                                   op_types)
            checks = check_onnx_graph(path, job.label, output_names(job.model)) if job.verify else ()
            job.cache[key] = Candidate("int8", [path], details={"quantization": recipe},
                                       verification=Verification("onnx", _ort_version(), (), 0.0, None, checks,
                                                                 "int8"))
        return job.cache[key]

    def fp32(self, job: ExportJob) -> Candidate:
        """The fp32 file, built (and verified, with ``job.verify``) once per export."""
        import onnx

        if "fp32_onnx" not in job.cache:
            path = job.staging / "fp32.onnx"
            proto = onnx_model(job.model, opset=job.opset, batch=job.batch, metadata=job.metadata)
            onnx.save(proto, str(path))
            verification = None
            if job.verify:
                verification = verify_onnx(path, job.model, batch_sizes=job.verify_batch_sizes,
                                           tolerance=job.tolerance, label=job.label)
            job.cache["fp32_onnx"] = Candidate("fp32", [path], verification, obj=proto)
        return job.cache["fp32_onnx"]

    def write(self, job: ExportJob, candidate: Candidate, export_info: dict[str, Any], folder: Path) -> list[Path]:
        import onnx

        proto = candidate.obj if candidate.obj is not None else onnx.load(str(candidate.files[0]))
        onnx.helper.set_model_props(proto, to_string_props(job.metadata, export_info))
        out = folder / "model.onnx"
        onnx.save(proto, str(out))
        return [out]

    def open(self, job: ExportJob, candidate: Candidate, files=None) -> OnnxRuntimeModel:
        path = Path((files or candidate.files)[0])
        return OnnxRuntimeModel(path, job.metadata, None, job.threads, "cpu")


def _ort_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"
