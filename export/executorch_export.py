"""ExecuTorch export: a ``.pte`` program for phones, every op delegated to XNNPACK (its CPU backend on
Android and iOS), and run here through ExecuTorch's Python runtime (`runtime.ExecuTorchModel`).

fp32: the ``torch.export`` program of `pt2_export` (BatchNorm folded; a dynamic batch up to `MAX_BATCH`)
lowered by ``to_edge_transform_and_lower`` with the XNNPACK partitioner. int8: XNNPACK's own quantizer
recipe, static, weights int8 symmetric per output channel, activations int8 per tensor
(``XNNPACKQuantizer`` with ``get_symmetric_quantization_config(is_per_channel=True)``), calibrated
through torchao's pt2e flow (``prepare_pt2e``, the calibration images, ``convert_pt2e``) on
``--calib-data`` (else the built-in images), then lowered the same way.

A ``.pte`` has no free-form metadata: the record and how the file was made travel beside it as
``NAME.pte.json`` (`metadata.sidecar_path`), written and renamed with it.

ExecuTorch is imported only here and in `runtime`, only when used: ``pip install 'alphanet_zoo[executorch]'``.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from alphanet_zoo.errors import AlphaNetError

from .builders import Builder, Candidate, ExportJob, register
from .metadata import sidecar_path, sidecar_record
from .native_quiet import to_log
from .pt2_export import exported_program, fold_batchnorm
from .runtime import ExecuTorchModel
from .verify import Verification, verify_runner

MAX_BATCH = 32  # the batch's upper bound in the program (memory is planned for it); larger batches run in chunks
CALIBRATION_BATCH = 8
DELEGATE = "XnnpackBackend"


def require_executorch():
    """The ``executorch`` module, or an error that says how to install it."""
    try:
        with to_log():
            import executorch
            import executorch.exir  # noqa: F401  (the exporter, beside the runtime)
    except ImportError:
        raise AlphaNetError("--format executorch needs ExecuTorch: pip install 'alphanet_zoo[executorch]'") from None
    return executorch


def executorch_version() -> str:
    from executorch import version

    return version.__version__.split("+")[0]


def quantized_module(model: torch.nn.Module, calibration: torch.Tensor) -> torch.nn.Module:
    """``model`` (BatchNorm folded) quantized by XNNPACK's static per-channel recipe, calibrated on ``calibration``."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # observers and torch.export's notes on their internals
        prepared = prepare_pt2e(exported_program(model, MAX_BATCH).module(), quantizer)
        with torch.no_grad():
            for batch in calibration.split(CALIBRATION_BATCH):
                prepared(batch.float())
        return convert_pt2e(prepared)


def lower(program: torch.export.ExportedProgram) -> tuple[bytes, tuple[str, ...]]:
    """The ``.pte`` bytes of ``program`` lowered to XNNPACK, and what the lowering checked."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with warnings.catch_warnings(), to_log():
        warnings.simplefilter("ignore")
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        graph = edge.exported_program().graph_module.graph
        left = sorted({str(n.target).split(".")[-2] if "." in str(n.target) else str(n.target)
                       for n in graph.nodes if n.op == "call_function"
                       and "call_delegate" not in str(n.target) and "getitem" not in str(n.target)})
        buffer = edge.to_executorch().buffer
    checks = ("every op delegated to XNNPACK",) if not left else (f"ops left to ExecuTorch's portable kernels: "
                                                                   f"{', '.join(left)}",)
    return buffer, checks


def program_bytes(module: torch.nn.Module, example: torch.Tensor) -> bytes:
    """The fp32 ``.pte`` of any module (BatchNorm folded) at ``example``'s static shape: the latency tables'
    layers and subnets."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(fold_batchnorm(module).eval(), (example,))
    return lower(program)[0]


def recipe(calibration_source: str, images: int) -> dict[str, Any]:
    """The int8 recipe as the file's ``export`` metadata records it."""
    return {"tool": "executorch XNNPACKQuantizer (torchao pt2e: prepare_pt2e, calibrate, convert_pt2e)",
            "config": "get_symmetric_quantization_config(is_per_channel=True)", "static": True,
            "weights": "int8, symmetric, per output channel (min/max)",
            "activations": "int8, affine, per tensor (histogram observer)",
            "batchnorm": "folded into the convolutions before quantizing",
            "calibration_images": images, "calibration_data": calibration_source}


@register
class ExecuTorchBuilder(Builder):
    """ExecuTorch programs delegated to XNNPACK (fp32, int8), with their record beside them."""

    format = "executorch"
    suffixes = (".pte",)
    description = "ExecuTorch program (.pte, XNNPACK)"
    precisions = ("fp32", "int8")
    precision_hints = {"bf16": "XNNPACK runs fp32 and int8 on phone CPUs; --format openvino runs bf16"}

    def targets(self, path: Path) -> list[Path]:
        return [path, sidecar_path(path)]

    def check(self, job: ExportJob) -> None:
        require_executorch()

    def supported(self, precision: str) -> str | None:
        require_executorch()
        return None

    def build(self, job: ExportJob, precision: str) -> Candidate:
        details: dict[str, Any] = {"runtime": {"delegate": DELEGATE, "max_batch": MAX_BATCH}}
        if precision == "int8":
            module = quantized_module(fold_batchnorm(job.model), job.images.calibration)
            program = exported_program(module, MAX_BATCH, job.model.arch.resolution, fold=False)
            details["quantization"] = recipe(job.images.calibration_source, len(job.images.calibration))
        else:
            program = exported_program(job.model, MAX_BATCH)
        buffer, checks = lower(program)
        path = job.staging / f"{precision}.pte"
        path.write_bytes(buffer)
        what = f"executorch {executorch_version()} (XNNPACK)"
        verification = Verification("executorch", what, (), 0.0, None, checks, "int8")
        if precision == "fp32" and job.verify:
            with ExecuTorchModel(path, None, None, job.threads, "cpu") as runner:
                verification = verify_runner(runner, job.model, "executorch", what, batch_sizes=job.verify_batch_sizes,
                                             tolerance=job.tolerance, label=job.label, checks=checks)
        elif precision == "fp32":
            verification = None
        return Candidate(precision, [path], verification, details)

    def write(self, job: ExportJob, candidate: Candidate, export_info: dict[str, Any], folder: Path) -> list[Path]:
        out = folder / "model.pte"
        shutil.copyfile(candidate.files[0], out)
        record = sidecar_path(out)
        record.write_text(sidecar_record(out, job.metadata, export_info), encoding="utf-8")
        return [out, record]

    def module_bytes(self, module: torch.nn.Module, example: torch.Tensor) -> bytes:
        return program_bytes(module, example)

    def open(self, job: ExportJob, candidate: Candidate, files=None) -> ExecuTorchModel:
        path = Path((files or candidate.files)[0])
        return ExecuTorchModel(path, job.metadata, None, job.threads, "cpu")
