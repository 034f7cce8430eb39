"""Exporters: ONNX and TorchScript, every file verified against PyTorch (installed as ``alphanet_zoo.export``).

    >>> from alphanet_zoo.export import to_onnx, to_torchscript, read_metadata
    >>> result = to_onnx(model, "alphanet_a0.onnx")      # checked, run with ONNX Runtime, then renamed
    >>> result.verification.max_abs_diff                 # largest |ONNX Runtime - PyTorch| of the logits
    >>> read_metadata("alphanet_a0.onnx")["preprocessing"]

The command-line tools are ``alphanet-export`` (`cli`) and ``alphanet-bench`` (`bench`).
"""
from .metadata import export_metadata, read_metadata
from .onnx_export import DEFAULT_OPSET, onnx_model, to_onnx
from .runtime import load_torchscript, onnxruntime_session
from .torchscript_export import to_torchscript, torchscript_module
from .verify import ExportResult, ExportVerificationError, Verification, verify_onnx, verify_torchscript

__all__ = [
    "DEFAULT_OPSET", "ExportResult", "ExportVerificationError", "Verification", "export_metadata",
    "load_torchscript", "onnx_model", "onnxruntime_session", "read_metadata", "to_onnx", "to_torchscript",
    "torchscript_module", "verify_onnx", "verify_torchscript",
]
