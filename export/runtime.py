"""Running exported files: an ONNX Runtime session and a loaded TorchScript module, set up alike
for verification and benchmarks."""
from __future__ import annotations

import json
import os
import warnings
from typing import Any

import torch

from alphanet_zoo.errors import InputError

from .metadata import TORCHSCRIPT_METADATA_FILE


def onnxruntime_session(path: str | os.PathLike, threads: int | None = None, *,
                        optimization: str = "all"):
    """An ONNX Runtime CPU session on ``path``.

    ``threads`` sets the intra-op thread pool (None: ONNX Runtime's default, one per core); ops
    run one at a time (inter-op parallelism does not pay off on a chain-shaped CNN).
    ``optimization``: the graph optimization level, ``disable``, ``basic``, ``extended`` or ``all``.
    """
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if optimization not in levels:
        raise InputError(f"unknown graph optimization level {optimization!r}; choose from {', '.join(levels)}")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: ORT's warnings go to stderr, bypassing Python
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_torchscript(path: str | os.PathLike, *, with_metadata: bool = False) -> Any:
    """``torch.jit.load`` of an exported module (on CPU); with ``with_metadata``, also its parsed metadata."""
    extra = {TORCHSCRIPT_METADATA_FILE: ""}
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream in favour of torch.export, yet it is what C++/mobile
        # deployments load today; exporting it is this module's purpose.
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not with_metadata:
        return module
    text = extra[TORCHSCRIPT_METADATA_FILE]
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return module, json.loads(text) if text else {}
