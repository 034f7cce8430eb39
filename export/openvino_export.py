"""OpenVINO IR export: our verified ONNX through OpenVINO's own converter, saved as ``.xml`` + ``.bin``.

fp32 and bf16 files hold the same graph with fp32 weights; what differs is the inference precision
the export verified, recorded in the file's ``export`` metadata (``runtime.inference_precision``),
which `open_model` applies. (OpenVINO's own compile reads no precision from a file: a plain
``core.compile_model`` of an fp32 file runs in bf16 on CPUs that have it, unless given
``INFERENCE_PRECISION_HINT: f32``.) An int8 file is the converted int8 QDQ ONNX (`quantize`):
OpenVINO reads its QuantizeLinear/DequantizeLinear pairs as FakeQuantize ops and runs the
convolutions on its int8 kernels.

OpenVINO is imported only here and in `runtime`, only when used: ``pip install alphanet_zoo[openvino]``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from alphanet_zoo.errors import AlphaNetError

from .builders import Builder, Candidate, ExportJob, register
from .graph_passes import optimise_for_openvino
from .metadata import CONFIG_KEY, EXPORT_KEY, OPENVINO_SECTION
from .onnx_export import OnnxBuilder
from .quantize import OPENVINO_OPS
from .runtime import OpenVinoModel, openvino_core, openvino_supports
from .verify import ExportVerificationError, Verification, verify_openvino

RUNTIME_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": None}  # INFERENCE_PRECISION_HINT per precision


def require_openvino():
    """The ``openvino`` module, or an error that says how to install it."""
    try:
        import openvino
    except ImportError:
        raise AlphaNetError("--format openvino needs OpenVINO: pip install 'alphanet_zoo[openvino]'") from None
    return openvino


def openvino_version() -> str:
    return require_openvino().get_version().split("-")[0]


def convert_onnx(onnx_path: str | os.PathLike):
    """OpenVINO's model of an ONNX file, through its ONNX front end (what ``openvino.convert_model`` of
    an ``.onnx`` path does, without first probing the file as a torch archive)."""
    require_openvino()
    try:
        return openvino_core().read_model(str(onnx_path))
    except Exception as e:  # OpenVINO raises its own OpConversionFailure and others
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        detail = next((line for line in lines if "Node" in line or "failed" in line.lower()), lines[0] if lines else e)
        raise ExportVerificationError(f"OpenVINO {openvino_version()} cannot convert the ONNX graph: {detail} "
                                      "(OpenVINO 2024.3 or newer reads it)") from None


def optimised_onnx(onnx_path: Path, out: Path) -> tuple[Path, dict[str, int]]:
    """A copy of an fp32 ONNX file with `graph_passes` applied, at ``out``, and how often each pass applied.
    (The IR made of it is verified against PyTorch in f32 like any other.)"""
    import onnx

    proto = onnx.load(str(onnx_path))
    passes = optimise_for_openvino(proto)
    onnx.save(proto, str(out))
    return out, passes


def save_ir(model, xml_path: str | os.PathLike, metadata: dict[str, Any],
            export_info: dict[str, Any] | None) -> tuple[Path, Path]:
    """Save ``model`` as ``xml_path`` and its ``.bin``, with our metadata in rt_info.

    Weights are kept in fp32 (no fp16 compression): the fp32 file must match PyTorch to 1e-4, and
    bf16 inference rounds the weights itself.
    """
    ov = require_openvino()
    model.set_rt_info(json.dumps(metadata), [OPENVINO_SECTION, CONFIG_KEY])
    if export_info is not None:
        model.set_rt_info(json.dumps(export_info), [OPENVINO_SECTION, EXPORT_KEY])
    xml_path = Path(xml_path)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path, xml_path.with_suffix(".bin")


@register
class OpenVinoBuilder(Builder):
    """OpenVINO IR files, converted from the fp32 (or int8) ONNX candidate of `onnx_export.OnnxBuilder`."""

    format = "openvino"
    suffixes = (".xml",)
    description = "OpenVINO IR"
    precisions = ("fp32", "bf16", "int8")
    default_precision = "auto"  # the runtime users choose for speed: the fastest precision that passes
    onnx = OnnxBuilder()  # what the IR is converted from

    def check(self, job: ExportJob) -> None:
        self.onnx.check(job)

    def targets(self, path: Path) -> list[Path]:
        return [path, path.with_suffix(".bin")]

    def supported(self, precision: str) -> str | None:
        require_openvino()
        if precision != "fp32" and not openvino_supports(precision):
            return f"this CPU has no native {precision} support in OpenVINO (its OPTIMIZATION_CAPABILITIES)"
        return None

    def _ir(self, job: ExportJob, source: str) -> Candidate:
        """The IR converted from the ``source`` (``fp32`` or ``int8``) ONNX candidate, once per export."""
        key = f"{source}_ir"
        if key not in job.cache:
            onnx_candidate = self.onnx.fp32(job) if source == "fp32" else self.onnx.int8(job, OPENVINO_OPS)
            folder = job.staging / key
            folder.mkdir()
            onnx_path, passes = onnx_candidate.files[0], None
            if source == "fp32":
                onnx_path, passes = optimised_onnx(onnx_path, folder / "optimised.onnx")
            files = list(save_ir(convert_onnx(onnx_path), folder / "model.xml", job.metadata, None))
            verification = None
            if job.verify and source == "fp32":
                verification = verify_openvino(files[0], files[1], job.model, batch_sizes=job.verify_batch_sizes,
                                               tolerance=job.tolerance, label=job.label, threads=job.threads)
            job.cache[key] = Candidate(source, files, verification,
                                       {"quantization": onnx_candidate.details.get("quantization"),
                                        "graph_passes": passes})
        return job.cache[key]

    def build(self, job: ExportJob, precision: str) -> Candidate:
        ir = self._ir(job, "int8" if precision == "int8" else "fp32")
        details = {"runtime": {"inference_precision": RUNTIME_PRECISION[precision]},
                   "graph_passes": ir.details.get("graph_passes")}
        if precision == "int8":
            details["quantization"] = ir.details["quantization"]
        verification = ir.verification
        if precision == "bf16" and verification is not None:  # the same graph, verified in f32
            verification = Verification("openvino", f"openvino {openvino_version()} (bf16)", (), 0.0, None,
                                        (f"the IR in f32 vs PyTorch: max abs diff {verification.max_abs_diff:.2e} "
                                         f"(tolerance {verification.tolerance:.0e})",), "bf16")
        if precision == "int8":
            verification = Verification("openvino", f"openvino {openvino_version()} (int8)", (), 0.0, None,
                                        ("the int8 ONNX passed onnx.checker; OpenVINO converted it",), "int8")
        return Candidate(precision, ir.files, verification, details)

    def write(self, job: ExportJob, candidate: Candidate, export_info: dict[str, Any], folder: Path) -> list[Path]:
        model = openvino_core().read_model(str(candidate.files[0]), str(candidate.files[1]))
        return list(save_ir(model, folder / "model.xml", job.metadata, export_info))

    def open(self, job: ExportJob, candidate: Candidate, files=None) -> OpenVinoModel:
        xml, bin_path = (files or candidate.files)[:2]
        precision = (candidate.details.get("runtime") or {}).get("inference_precision")
        return OpenVinoModel(Path(xml), job.metadata, None, job.threads, "cpu", bin_path=Path(bin_path),
                             inference_precision=precision)
