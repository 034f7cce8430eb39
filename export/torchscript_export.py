"""TorchScript export of an `AlphaNet`: a frozen inference module (``torch.jit.freeze`` of the
scripted eval model, BatchNorm folded into the convolutions) with its metadata as ``config.json`` (and ``export.json``).

TorchScript is deprecated upstream in favour of ``torch.export`` (`pt2_export`); it stays for the
C++ and mobile deployments that load it today.

Scripting rather than tracing keeps the forward's input check and its shape-dependent shortcut
padding, so the module runs any batch size (and any input size the network accepts). Weights are
stored channels-last by default: PyTorch's CPU convolutions then run in NHWC for contiguous
(NCHW) inputs too, about 1.5x faster on this network; outputs are the same.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .deploy import Builder, Candidate, ExportJob
from .metadata import EXPORT_METADATA_FILE, TORCHSCRIPT_METADATA_FILE
from .verify import DEFAULT_TOLERANCE, VERIFY_BATCH_SIZES, ExportResult, verify_torchscript


def torchscript_module(model: nn.Module, *, channels_last: bool = True) -> torch.jit.ScriptModule:
    """A frozen TorchScript inference module of ``model`` (built from a copy; ``model`` is not changed)."""
    net = copy.deepcopy(model).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream; it is still what C++ and mobile deployments load
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        return torch.jit.freeze(torch.jit.script(net))


def to_torchscript(model: nn.Module, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None,
                   channels_last: bool = True, verify: bool = True, tolerance: float = DEFAULT_TOLERANCE,
                   **options: Any) -> ExportResult:
    """Export ``model`` (an `AlphaNet`) as a frozen TorchScript file at ``path``; by default verify it.

    Loaded back with ``torch.jit.load`` and run against ``model`` (batches of 1 and 3) before it is
    written under its name: a failed check (`ExportVerificationError`) or an interruption leaves
    nothing behind. ``metadata`` (default `export_metadata(model)`) is stored as the extra file
    ``config.json``: ``torch.jit.load(path, _extra_files={"config.json": ""})``; how the file was
    made as ``export.json``. ``options`` go to `export.deploy.export_model`.

    TorchScript is deprecated upstream (``torch.jit`` warns to move to ``torch.export``); it stays
    for C++ and mobile users who load it today. New deployments: ``--format pt2`` or ``openvino``.
    """
    from .deploy import export_model

    return export_model(model, path, "torchscript", metadata=metadata, verify=verify, tolerance=tolerance,
                        builder_options={"channels_last": channels_last}, **options)


def save_module(module: torch.jit.ScriptModule, path, metadata: dict[str, Any],
                export_info: dict[str, Any] | None) -> None:
    """``torch.jit.save`` with our metadata as extra files, through a file object (so the archive's
    root name does not depend on a temporary file name)."""
    extra = {TORCHSCRIPT_METADATA_FILE: json.dumps(metadata)}
    if export_info is not None:
        extra[EXPORT_METADATA_FILE] = json.dumps(export_info)
    with warnings.catch_warnings(), open(path, "wb") as f:
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.jit.save(module, f, _extra_files=extra)


class TorchScriptBuilder(Builder):
    """Frozen TorchScript modules (fp32 only)."""

    format = "torchscript"

    def build(self, job: ExportJob, precision: str) -> Candidate:
        module = torchscript_module(job.model, channels_last=job.options.get("channels_last", True))
        path = job.staging / "fp32.pt"
        save_module(module, path, job.metadata, None)
        verification = None
        if job.verify:
            verification = verify_torchscript(path, job.model, batch_sizes=VERIFY_BATCH_SIZES,
                                              tolerance=job.tolerance, label=job.label)
        return Candidate("fp32", [path], verification, obj=module)

    def write(self, job: ExportJob, candidate: Candidate, export_info: dict[str, Any], folder: Path) -> list[Path]:
        out = folder / "model.pt"
        save_module(candidate.obj, out, job.metadata, export_info)
        return [out]

    def open(self, job: ExportJob, candidate: Candidate, files=None):
        from .runtime import TorchScriptModel, load_torchscript

        path = Path((files or candidate.files)[0])
        return TorchScriptModel(path, job.metadata, None, job.threads, "cpu", load_torchscript(path))
