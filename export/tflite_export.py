"""TFLite (LiteRT) export: a ``.tflite`` flatbuffer for phones, converted by ``litert-torch`` (Google's
PyTorch-to-LiteRT converter, no TensorFlow needed) and run here by LiteRT's interpreter with its
XNNPACK delegate (``ai-edge-litert``; `runtime.LiteRtModel`).

fp32: ``litert_torch.convert`` of the eval model (BatchNorm folded) at batch 1, the phone's batch;
the input stays (1, 3, R, R) float32 like every export's. int8: LiteRT's own quantizer
(``ai-edge-quantizer``), its static recipe ``static_wi8_ai8`` (weights int8 per output channel,
activations int8 per tensor), calibrated on ``--calib-data`` (else the built-in images) through
the fp32 file; the int8 file's input and output are int8, converted by the runner from and to
float32 with their scale and zero point.

The record and how the file was made are flatbuffer metadata entries ``alphanet_zoo/config`` and
``alphanet_zoo/export`` (`metadata.TFLITE_METADATA`), which LiteRT ignores when it runs the file.

``litert-torch`` and LiteRT are imported only here and in `runtime`, only when used:
``pip install 'alphanet_zoo[litert]'``.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from alphanet_zoo.errors import AlphaNetError

from .builders import Builder, Candidate, ExportJob, register
from .metadata import CONFIG_KEY, EXPORT_KEY, TFLITE_CONTENT_KEY, TFLITE_METADATA, tflite_content_sha256
from .native_quiet import to_log
from .pt2_export import fold_batchnorm
from .runtime import LiteRtModel
from .verify import Verification, verify_runner

BATCH = 1  # the file's fixed batch (a phone classifies one image at a time); larger batches run image by image
PROGRESS_VARIABLE = "LITERT_TORCH_SHOW_PROGRESS"  # litert-torch prints each conversion step unless it is "n"


def require_litert():
    """The ``litert_torch`` module, or an error that says how to install it."""
    try:
        with to_log():
            import ai_edge_litert  # noqa: F401  (the interpreter)
            import litert_torch
    except ImportError:
        raise AlphaNetError("--format tflite needs litert-torch and LiteRT: pip install 'alphanet_zoo[litert]'") \
            from None
    return litert_torch


def litert_version() -> str:
    from importlib.metadata import version

    return f"litert-torch {version('litert-torch')}, ai-edge-litert {version('ai-edge-litert')}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """litert-torch's progress lines (stdout) and the quantizer's progress bars (stderr) silenced."""
    before = os.environ.get(PROGRESS_VARIABLE)
    os.environ[PROGRESS_VARIABLE] = "n"
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        if before is None:
            os.environ.pop(PROGRESS_VARIABLE, None)
        else:
            os.environ[PROGRESS_VARIABLE] = before


def convert(model: torch.nn.Module, example: torch.Tensor | None = None) -> bytes:
    """The fp32 ``.tflite`` bytes of an `AlphaNet` at batch `BATCH` (BatchNorm folded), or of any module at
    ``example``'s shape (the latency tables' layers)."""
    litert_torch = require_litert()
    if example is None:
        side = model.arch.resolution
        example = torch.zeros(BATCH, 3, side, side)
    with _quiet(), to_log():
        converted = litert_torch.convert(fold_batchnorm(model).eval(), (example,))
        return bytes(converted.model_content())


def quantize(fp32: bytes, calibration: torch.Tensor) -> bytes:
    """The int8 ``.tflite`` of ``fp32`` by LiteRT's quantizer (``static_wi8_ai8``), calibrated on ``calibration``."""
    from ai_edge_quantizer import quantizer, recipe

    with _quiet(), to_log():
        interpreter = LiteRtModel(None, None, None, None, "cpu", content=fp32).interpreter
        signature, spec = next(iter(interpreter.get_signature_list().items()))
        name = spec["inputs"][0]
        tool = quantizer.Quantizer(bytearray(fp32))
        tool.load_quantization_recipe(recipe.static_wi8_ai8())
        samples = [{name: np.ascontiguousarray(calibration[i:i + BATCH].float().numpy())}
                   for i in range(0, len(calibration) - BATCH + 1, BATCH)]
        result = tool.quantize(tool.calibrate({signature: samples}), enable_progress_report=False,
                               enable_progress_bar=False)
    return bytes(result.quantized_model)


def with_metadata(content: bytes, entries: dict[str, str]) -> bytes:
    """``content`` with the flatbuffer metadata ``entries`` (name -> text), replacing entries of the same name."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    model.metadata = [m for m in (model.metadata or []) if (m.name or b"").decode() not in entries]
    for name, text in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def recipe(calibration_source: str, images: int) -> dict[str, Any]:
    """The int8 recipe as the file's ``export`` metadata records it."""
    return {"tool": "ai_edge_quantizer (LiteRT's quantizer), recipe static_wi8_ai8", "static": True,
            "weights": "int8, symmetric, per output channel", "activations": "int8, asymmetric, per tensor",
            "calibration": "min/max", "input_output": "int8 (scale and zero point in the file)",
            "calibration_images": images, "calibration_data": calibration_source}


@register
class LiteRtBuilder(Builder):
    """``.tflite`` flatbuffers for LiteRT (fp32, int8), with the record in their metadata."""

    format = "tflite"
    suffixes = (".tflite",)
    description = "TFLite / LiteRT (.tflite)"
    precisions = ("fp32", "int8")
    precision_hints = {"bf16": "LiteRT's XNNPACK delegate runs fp32 and int8 files; --format openvino runs bf16"}

    def check(self, job: ExportJob) -> None:
        require_litert()

    def supported(self, precision: str) -> str | None:
        require_litert()
        return None

    def _fp32(self, job: ExportJob) -> bytes:
        if "fp32_tflite" not in job.cache:
            job.cache["fp32_tflite"] = convert(job.model)
        return job.cache["fp32_tflite"]

    def build(self, job: ExportJob, precision: str) -> Candidate:
        content = self._fp32(job)
        details: dict[str, Any] = {"runtime": {"delegate": "XNNPACK", "batch": BATCH}}
        if precision == "int8":
            content = quantize(content, job.images.calibration)
            details["quantization"] = recipe(job.images.calibration_source, len(job.images.calibration))
        path = job.staging / f"{precision}.tflite"
        path.write_bytes(content)
        what = litert_version()
        checks = ("LiteRT loaded the flatbuffer (XNNPACK delegate)",)
        verification = Verification("tflite", what, (), 0.0, None, checks, "int8")
        if precision == "fp32":
            verification = None
            if job.verify:
                with LiteRtModel(path, None, None, job.threads, "cpu") as runner:
                    verification = verify_runner(runner, job.model, "tflite", what,
                                                 batch_sizes=job.verify_batch_sizes, tolerance=job.tolerance,
                                                 label=job.label, checks=checks)
        return Candidate(precision, [path], verification, details)

    def write(self, job: ExportJob, candidate: Candidate, export_info: dict[str, Any], folder: Path) -> list[Path]:
        out = folder / "model.tflite"
        content = candidate.files[0].read_bytes()
        out.write_bytes(with_metadata(content, {TFLITE_METADATA[CONFIG_KEY]: json.dumps(job.metadata),
                                                TFLITE_METADATA[EXPORT_KEY]: json.dumps(export_info),
                                                TFLITE_CONTENT_KEY: tflite_content_sha256(content)}))
        return [out]

    def module_bytes(self, module: torch.nn.Module, example: torch.Tensor) -> bytes:
        return convert(module, example)

    def open(self, job: ExportJob, candidate: Candidate, files=None) -> LiteRtModel:
        path = Path((files or candidate.files)[0])
        return LiteRtModel(path, job.metadata, None, job.threads, "cpu")
