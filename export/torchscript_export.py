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
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .builders import Builder, Candidate, ExportJob, register
from .metadata import EXPORT_METADATA_FILE, TORCHSCRIPT_METADATA_FILE
from .runtime import TorchScriptModel, load_torchscript
from .verify import VERIFY_BATCH_SIZES, verify_torchscript


def torchscript_module(model: nn.Module, *, channels_last: bool = True) -> torch.jit.ScriptModule:
    """A frozen TorchScript inference module of ``model`` (built from a copy; ``model`` is not changed)."""
    net = copy.deepcopy(model).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream; it is still what C++ and mobile deployments load
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        return torch.jit.freeze(torch.jit.script(net))


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


@register
class TorchScriptBuilder(Builder):
    """Frozen TorchScript modules (fp32 only)."""

    format = "torchscript"
    suffixes = (".pt", ".ts", ".torchscript")
    description = "TorchScript, frozen (deprecated upstream)"

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

    def open(self, job: ExportJob, candidate: Candidate, files=None) -> TorchScriptModel:
        path = Path((files or candidate.files)[0])
        return TorchScriptModel(path, job.metadata, None, job.threads, "cpu", load_torchscript(path))
