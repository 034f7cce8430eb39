"""TorchScript export of an `AlphaNet`: a frozen inference module (``torch.jit.freeze`` of the
scripted eval model, BatchNorm folded into the convolutions) with its metadata as ``config.json``.

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

from alphanet_zoo._io import atomic_path

from .metadata import TORCHSCRIPT_METADATA_FILE, export_metadata
from .verify import DEFAULT_TOLERANCE, VERIFY_BATCH_SIZES, ExportResult, reported_as_not_written, verify_torchscript


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
                   channels_last: bool = True, verify: bool = True,
                   tolerance: float = DEFAULT_TOLERANCE) -> ExportResult:
    """Export ``model`` (an `AlphaNet`) as a frozen TorchScript file at ``path``; by default verify it.

    Written under a temporary name, loaded back with ``torch.jit.load`` and run against ``model``
    (batches of 1 and 3), then renamed onto ``path``: a failed check (`ExportVerificationError`)
    or an interruption leaves nothing behind. ``metadata`` (default `export_metadata(model)`) is
    stored as the extra file ``config.json``: ``torch.jit.load(path, _extra_files={"config.json": ""})``.
    """
    meta = metadata if metadata is not None else export_metadata(model)
    module = torchscript_module(model, channels_last=channels_last)
    verification = None
    with reported_as_not_written(path), atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
            with open(tmp, "wb") as f:  # through a file object, so the archive's root is not the temp name
                torch.jit.save(module, f, _extra_files={TORCHSCRIPT_METADATA_FILE: json.dumps(meta)})
        del module
        if verify:
            verification = verify_torchscript(tmp, model, batch_sizes=VERIFY_BATCH_SIZES, tolerance=tolerance,
                                              label=Path(path).name)
    return ExportResult(Path(path), "torchscript", meta, verification)
