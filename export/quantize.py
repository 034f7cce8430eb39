"""int8 static quantization of a verified fp32 ONNX export, calibrated on real images.

The recipe (what x86 CPUs run fast, measured in ``benchmarks/README_deploy.md``):

- BatchNorm is already folded into the convolutions by the fp32 export (`onnx_export`), so the
  quantized weights are the folded ones;
- weights int8, symmetric, per output channel; activations uint8, per tensor, asymmetric (x86's
  u8 x s8 VNNI/AMX kernels; ONNX Runtime's s8 x s8 path runs 4-5x slower there);
- scales from the min/max of the activations over the calibration images;
- which ops are quantized depends on the runtime that will run the file. ONNX Runtime
  (`ONNXRUNTIME_OPS`): every op its quantizer can, so its integer kernels run end to end (with only
  the convolutions quantized it dequantizes around each one and ran slower than fp32). OpenVINO
  (`OPENVINO_OPS`): only the convolutions and the classifier, so swish, the squeeze-excite and the
  residual additions stay in float and fuse into the convolutions, instead of OpenVINO quantizing
  around every element-wise op (which ran 15-20 % slower);
- on a CPU without VNNI (AVX2 only) weights use 7 bits (``reduce_range``), avoiding the
  saturation of the u8 x s8 instruction pairs there.

The file is written in the QDQ format (QuantizeLinear/DequantizeLinear pairs around float ops),
which ONNX Runtime turns into its integer kernels and OpenVINO reads as int8 (`openvino_export`).
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .metadata import INPUT_NAME

log = logging.getLogger("alphanet_zoo")
ONNXRUNTIME_OPS = None  # every op the quantizer supports
OPENVINO_OPS = ("Conv", "Gemm")
CALIBRATION_BATCH = 8


def has_vnni() -> bool:
    """Whether the CPU has an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return True  # not Linux: assume a current CPU
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def recipe(calibration_source: str, images: int, reduce_range: bool, op_types: Sequence[str] | None) -> dict[str, Any]:
    """The quantization recipe as the file's ``export`` metadata records it."""
    return {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "weights": "int8, symmetric, "
            + ("7-bit (reduce_range), " if reduce_range else "") + "per output channel",
            "activations": "uint8, asymmetric, per tensor", "calibration": "min/max",
            "quantized_ops": list(op_types) if op_types else "all the quantizer supports",
            "batchnorm": "folded into the convolutions before quantizing",
            "calibration_images": images, "calibration_data": calibration_source}


def quantize_onnx(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibration: torch.Tensor,
                  calibration_source: str, op_types: Sequence[str] | None = ONNXRUNTIME_OPS) -> dict[str, Any]:
    """Write the int8 QDQ model of the fp32 ONNX file ``fp32_path`` to ``out_path``; returns its `recipe`.

    ``calibration``: preprocessed images (N, 3, R, R), fed in batches of `CALIBRATION_BATCH`.
    ``op_types``: the op types to quantize (None: every op the quantizer can).
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{INPUT_NAME: np.ascontiguousarray(calibration[i:i + CALIBRATION_BATCH].numpy())}
                                 for i in range(0, len(calibration), CALIBRATION_BATCH)])

        def get_next(self):
            return next(self.batches, None)

    reduce_range = not has_vnni()
    with _quiet_quantizer():
        quantize_static(str(fp32_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=reduce_range, op_types_to_quantize=list(op_types) if op_types else None,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    _keep_metadata(Path(fp32_path), Path(out_path))
    return recipe(calibration_source, len(calibration), reduce_range, op_types)


class _DropQuantizerLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname or record.levelno >= logging.ERROR


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ONNX Runtime's quantizer logs every bias copy and a pre-processing hint on the root logger, and
    one of its modules calls ``logging.basicConfig`` when it is imported (a handler on the root logger
    for the rest of the process): drop those records, and leave the root logger as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = _DropQuantizerLogs()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


def _keep_metadata(source: Path, target: Path) -> None:
    """Carry the fp32 file's ``metadata_props`` over (the quantizer drops them)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    proto = onnx.load(str(target))
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(target))
