"""Exporters and the runtime of exported files (installed as ``alphanet_zoo.export``).

    >>> from alphanet_zoo.export import export_model, open_model, read_metadata
    >>> result = export_model(model, "alphanet_a0.xml", "openvino")   # auto precision: measured, verified
    >>> result.precision, result.verification.agreement["cosine_min"]
    >>> model = open_model("alphanet_a0.xml", threads=2)        # any exported file: .onnx .xml .pt .pt2 .pte .tflite
    >>> logits = model(model.preprocess(image)[None])
    >>> read_metadata("alphanet_a0.xml")["preprocessing"]            # the record, as config.json holds it

Formats: ONNX (`to_onnx`; fp32 or int8), OpenVINO IR (``export_model(..., "openvino")``; fp32,
bf16 or int8), ``torch.export`` (`to_pt2`), TorchScript (`to_torchscript`, deprecated upstream), and for
phones ExecuTorch ``.pte`` (XNNPACK) and TFLite/LiteRT ``.tflite`` (fp32 or int8; optional extras).
Every file is verified before it is written (`deploy`); each format is a module registering its
`Builder` in `BUILDERS`, imported here. `RUNTIMES` (`runtimes`) names every runtime, the format it opens
and the package it needs; models run through `ExportedModel` (`runtime`) and are timed by `timing`. The
command-line tools are ``alphanet-export`` (`cli`) and ``alphanet-bench`` (`bench`).
"""
# the formats: each module registers its builder in `builders.BUILDERS` when imported (a new format: one
# module and one line here)
from . import onnx_export, openvino_export, pt2_export, torchscript_export  # isort: skip
from . import executorch_export, tflite_export  # the phone formats, after the others  # isort: skip
from . import runtime
from .agreement import Agreement, Thresholds, measure_agreement
from .builders import BUILDERS, Builder, register
from .deploy import PRECISIONS, default_precision, export_model, to_onnx, to_pt2, to_torchscript
from .metadata import export_metadata, file_format, read_export_info, read_metadata
from .onnx_export import DEFAULT_OPSET, onnx_model
from .runtime import ExportedModel, TorchModel, load_torchscript, onnxruntime_session
from .runtimes import RUNTIMES, open_model
from .torchscript_export import torchscript_module
from .verify import (ExportResult, ExportVerificationError, Verification, verify_onnx, verify_openvino, verify_pt2,
                     verify_torchscript)

__all__ = [
    "Agreement", "BUILDERS", "Builder", "DEFAULT_OPSET", "ExportResult", "ExportVerificationError", "ExportedModel",
    "PRECISIONS", "RUNTIMES", "Thresholds", "TorchModel", "Verification", "default_precision", "export_metadata",
    "export_model", "file_format", "load_torchscript", "measure_agreement", "onnx_model", "onnxruntime_session",
    "open_model", "read_export_info", "read_metadata", "register", "to_onnx", "to_pt2", "to_torchscript",
    "torchscript_module", "verify_onnx", "verify_openvino", "verify_pt2", "verify_torchscript",
    "executorch_export", "onnx_export", "openvino_export", "pt2_export", "runtimes", "tflite_export",
    "torchscript_export",  # the format modules, and the table of runtimes
]

# `open_model`'s import path before the table of runtimes held it (runtimes imports runtime, not the reverse)
runtime.open_model = open_model

