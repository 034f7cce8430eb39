"""``torch.export`` export of an `AlphaNet`: the format PyTorch moves to (TorchScript is deprecated upstream).

The file is what ``torch.export.save`` writes (a ``.pt2`` archive): an ExportedProgram of the eval
model with BatchNorm folded into the convolutions, a dynamic batch dimension (1 to `MAX_BATCH`),
and the record as the extra file ``config.json`` (``export.json`` beside it: `metadata`). Load it
with ``torch.export.load(path).module()``, or `open_model`.

AOTInductor (``torch._inductor.aoti_compile_and_package``) would compile the program ahead of time
into a shared library inside the package; on this CPU it did not pay off against the cost and
fragility of compiling C++ at export time (figures in ``benchmarks/README_deploy.md``), so it is
not offered.
"""
from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .builders import Builder, Candidate, ExportJob, register
from .metadata import EXPORT_METADATA_FILE, TORCHSCRIPT_METADATA_FILE
from .runtime import Pt2Model, load_exported_program
from .verify import TRACE_BATCH_SIZE, VERIFY_BATCH_SIZES, verify_pt2

MAX_BATCH = 4096


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every conv -> BatchNorm pair fused into one conv."""
    net = copy.deepcopy(model).eval()
    for module in net.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(conv, bn)
            module.bn = nn.Identity()
    return net


def exported_program(model: nn.Module, max_batch: int = MAX_BATCH, side: int | None = None,
                     fold: bool = True) -> torch.export.ExportedProgram:
    """The ExportedProgram of ``model`` (BatchNorm folded, unless ``fold`` is False; ``model`` itself is not
    changed), batch dynamic from 1 to ``max_batch``, images ``side`` pixels (default: the architecture's)."""
    net = fold_batchnorm(model) if fold else model
    param = next(net.parameters(), None)  # a quantized graph module may hold its weights as constants
    side = side or model.arch.resolution
    example = torch.zeros(TRACE_BATCH_SIZE, 3, side, side, dtype=param.dtype if param is not None else torch.float32,
                          device=param.device if param is not None else "cpu")
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's own notes on its internals
        return torch.export.export(net, (example,), dynamic_shapes=({0: batch},))


def save_program(program: torch.export.ExportedProgram, path, metadata: dict[str, Any],
                 export_info: dict[str, Any] | None) -> None:
    """``torch.export.save`` with our metadata as extra files, through a file object (so the
    archive's root name does not depend on a temporary file name)."""
    extra = {TORCHSCRIPT_METADATA_FILE: json.dumps(metadata)}
    if export_info is not None:
        extra[EXPORT_METADATA_FILE] = json.dumps(export_info)
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files=extra)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


@register
class Pt2Builder(Builder):
    """``torch.export`` programs (fp32 only)."""

    format = "pt2"
    suffixes = (".pt2",)
    description = "torch.export (pt2)"

    def build(self, job: ExportJob, precision: str) -> Candidate:
        program = exported_program(job.model)
        path = job.staging / "fp32.pt2"
        save_program(program, path, job.metadata, None)
        verification = None
        if job.verify:
            verification = verify_pt2(path, job.model, batch_sizes=VERIFY_BATCH_SIZES, tolerance=job.tolerance,
                                      label=job.label)
        return Candidate("fp32", [path], verification, obj=program)

    def write(self, job: ExportJob, candidate: Candidate, export_info: dict[str, Any], folder: Path) -> list[Path]:
        out = folder / "model.pt2"
        save_program(candidate.obj, out, job.metadata, export_info)
        return [out]

    def open(self, job: ExportJob, candidate: Candidate, files=None) -> Pt2Model:
        path = Path((files or candidate.files)[0])
        return Pt2Model(path, job.metadata, None, job.threads, "cpu", load_exported_program(path).module())
