"""Where latency is measured: ONNX Runtime, OpenVINO, PyTorch eager on the CPU, CUDA, or the phone runtimes
ExecuTorch (XNNPACK) and LiteRT on this CPU (a stand-in for a phone's CPU, not a phone).

A `Runtime` turns a `Layer` (for the table) or a whole subnet (end to end) into a zero-argument
call to time; every call runs an `alphanet_zoo.export.ExportedModel`, the one way the package runs
a model. End to end is what a user deploying the subnet runs: for ONNX Runtime the file
``alphanet-export`` writes (`alphanet_zoo.export.to_onnx`), opened by `open_model` at the same thread
count; for OpenVINO that graph compiled for the CPU with the exporters' OpenVINO settings
(`OpenVinoModel`, one stream: the latency setting); for eager and CUDA the `AlphaNet` module itself
(`TorchModel`); for ExecuTorch and LiteRT the subnet's ``.pte`` / ``.tflite`` (fp32, static batch) as
``alphanet-export`` converts it. A layer is the same runtime on the layer's graph or module alone
(lowering each layer to ExecuTorch or LiteRT takes a second or more: a table there takes a while).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import platform
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import ArchConfig
from ..errors import InputError
from ..export import ExportedModel, TorchModel, open_model, to_onnx
from ..export.executorch_export import executorch_version, program_bytes
from ..export.runtime import ExecuTorchModel, LiteRtModel, OnnxRuntimeModel, OpenVinoModel
from ..export.tflite_export import convert as tflite_bytes
from ..export.tflite_export import litert_version
from ..export.timing import cpu_name, torch_threads
from ..model import AlphaNet
from .latency_layers import Layer, input_shape, onnx_graph, torch_module

BACKENDS = ("onnxruntime", "openvino", "eager", "cuda", "executorch", "litert")
#: The package each optional backend needs, and the extra that installs it.
PACKAGES = {"onnxruntime": ("onnxruntime", "onnxruntime"), "openvino": ("openvino", "openvino"),
            "executorch": ("executorch", "alphanet_zoo[executorch]"),
            "litert": ("litert_torch", "alphanet_zoo[litert]")}
log = logging.getLogger("alphanet_zoo")


class Runtime:
    """A backend at a thread count and batch size; ``layer(l)``/``model(arch)`` give calls to time.

    A backend opens layers and subnets as `ExportedModel` objects (`open_layer`, `open_subnet`);
    the calls run them on a fixed input."""

    name = ""
    device = "cpu"

    def __init__(self, threads: int, batch_size: int) -> None:
        self.threads, self.batch_size = int(threads), int(batch_size)
        self._tmp = tempfile.TemporaryDirectory(prefix="alphanet_latency_")
        self.workdir = Path(self._tmp.name)
        self._files = 0

    @property
    def version(self) -> str:
        raise NotImplementedError

    def machine(self) -> str:
        """What the timings belong to: the CPU model and its logical cores (and the GPU for CUDA)."""
        return f"{cpu_name()} ({os.cpu_count()} logical cores, {platform.machine()})"

    def key(self) -> dict[str, Any]:
        """What a table measured here is valid for."""
        machine = self.machine()
        return {"runtime": self.name, "version": self.version, "machine": machine,
                "machine_id": hashlib.sha256(machine.encode()).hexdigest()[:12], "threads": self.threads,
                "batch_size": self.batch_size}

    @contextlib.contextmanager
    def active(self):
        """Around measurements (PyTorch backends set their thread count here)."""
        yield

    def open_layer(self, layer: Layer) -> ExportedModel:
        raise NotImplementedError

    def open_subnet(self, arch: ArchConfig, num_classes: int) -> ExportedModel:
        raise NotImplementedError

    def layer(self, layer: Layer) -> Callable[[], Any]:
        return self._call(self.open_layer(layer), input_shape(layer, self.batch_size))

    def model(self, arch: ArchConfig, num_classes: int = 1000) -> Callable[[], Any]:
        r = arch.resolution
        return self._call(self.open_subnet(arch, num_classes), (self.batch_size, 3, r, r))

    def close(self) -> None:
        self._tmp.cleanup()

    def _call(self, model: ExportedModel, shape: tuple[int, ...]) -> Callable[[], Any]:
        """``model`` on a fixed random input of ``shape``, as a call that returns once its work is done."""
        x = model.as_input(torch.from_numpy(np.random.RandomState(0).standard_normal(shape).astype(np.float32)))

        def run() -> Any:
            out = model(x)
            model.synchronize()
            return out
        return run

    def _onnx_file(self, arch: ArchConfig, num_classes: int) -> Path:
        """The subnet exported as ``alphanet-export`` writes it (random weights: timings do not depend on them)."""
        self._files += 1
        path = self.workdir / f"model_{self._files}.onnx"
        level = log.level
        log.setLevel(max(level, logging.WARNING))  # the exporter's progress lines are not this command's
        try:
            to_onnx(AlphaNet(arch, num_classes).eval(), path, verify=False)
        finally:
            log.setLevel(level)
        return path

    def _layer_file(self, layer: Layer) -> Path:
        path = self.workdir / "layer.onnx"
        path.write_bytes(onnx_graph(layer, self.batch_size).SerializeToString())
        return path


class OnnxRuntimeBackend(Runtime):
    name = "onnxruntime"

    @property
    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def open_layer(self, layer: Layer) -> ExportedModel:
        return OnnxRuntimeModel(self._layer_file(layer), None, None, self.threads, "cpu", images=False)

    def open_subnet(self, arch: ArchConfig, num_classes: int) -> ExportedModel:
        path = self._onnx_file(arch, num_classes)
        model = open_model(path, threads=self.threads)
        path.unlink()  # the session holds the model: the file is not needed any more
        return model


class OpenVinoBackend(Runtime):
    name = "openvino"

    @property
    def version(self) -> str:
        import openvino

        return openvino.get_version() if hasattr(openvino, "get_version") else openvino.__version__

    def _open(self, path: Path, images: bool) -> ExportedModel:
        # OpenVINO's precision left to itself (as before the tables had a precision of their own), one
        # stream at every batch size: what the table predicts is one call's latency
        return OpenVinoModel(path, None, None, self.threads, "cpu", split=False, images=images)

    def open_layer(self, layer: Layer) -> ExportedModel:
        return self._open(self._layer_file(layer), images=False)

    def open_subnet(self, arch: ArchConfig, num_classes: int) -> ExportedModel:
        path = self._onnx_file(arch, num_classes)
        model = self._open(path, images=True)
        path.unlink()  # read: the compiles work from the model in memory
        return model


class EagerBackend(Runtime):
    name = "eager"

    @property
    def version(self) -> str:
        return torch.__version__

    @contextlib.contextmanager
    def active(self):
        with torch_threads(self.threads), torch.inference_mode():
            yield

    def open_layer(self, layer: Layer) -> ExportedModel:
        return TorchModel.of(torch_module(layer), threads=self.threads, device=self.device, images=False)

    def open_subnet(self, arch: ArchConfig, num_classes: int) -> ExportedModel:
        return TorchModel.of(AlphaNet(arch, num_classes), threads=self.threads, device=self.device)


class CudaBackend(EagerBackend):
    name = "cuda"

    def __init__(self, threads: int, batch_size: int) -> None:
        if not torch.cuda.is_available():
            raise InputError("--backend cuda: no CUDA GPU is available to PyTorch")
        super().__init__(threads, batch_size)
        self.device = f"cuda:{torch.cuda.current_device()}"

    @property
    def version(self) -> str:
        return f"{torch.__version__} (CUDA {torch.version.cuda})"

    def machine(self) -> str:
        return f"{torch.cuda.get_device_name(self.device)} on {super().machine()}"


class MobileBackend(Runtime):
    """A phone runtime on this CPU: each layer and subnet converted to its file (fp32, static shape) and run."""

    suffix = ""

    def _convert(self, module: torch.nn.Module, shape: tuple[int, ...]) -> bytes:
        raise NotImplementedError

    def _runner(self, path: Path, images: bool) -> ExportedModel:
        raise NotImplementedError

    def _open(self, module: torch.nn.Module, shape: tuple[int, ...], images: bool) -> ExportedModel:
        self._files += 1
        path = self.workdir / f"model_{self._files}{self.suffix}"
        path.write_bytes(self._convert(module, shape))
        return self._runner(path, images)

    def open_layer(self, layer: Layer) -> ExportedModel:
        return self._open(torch_module(layer), input_shape(layer, self.batch_size), images=False)

    def open_subnet(self, arch: ArchConfig, num_classes: int) -> ExportedModel:
        r = arch.resolution
        return self._open(AlphaNet(arch, num_classes).eval(), (self.batch_size, 3, r, r), images=True)


class ExecuTorchBackend(MobileBackend):
    name, suffix = "executorch", ".pte"

    @property
    def version(self) -> str:
        return executorch_version()

    def _convert(self, module: torch.nn.Module, shape: tuple[int, ...]) -> bytes:
        return program_bytes(module, torch.zeros(shape))

    def _runner(self, path: Path, images: bool) -> ExportedModel:
        return ExecuTorchModel(path, None, None, self.threads, "cpu", images=images)


class LiteRtBackend(MobileBackend):
    name, suffix = "litert", ".tflite"

    @property
    def version(self) -> str:
        return litert_version()

    def _convert(self, module: torch.nn.Module, shape: tuple[int, ...]) -> bytes:
        return tflite_bytes(module, torch.zeros(shape))

    def _runner(self, path: Path, images: bool) -> ExportedModel:
        return LiteRtModel(path, None, None, self.threads, "cpu", images=images)


def make_runtime(name: str, threads: int, batch_size: int) -> Runtime:
    """The `Runtime` called ``name`` (one of `BACKENDS`); a missing library is an `InputError`."""
    classes = {"onnxruntime": OnnxRuntimeBackend, "openvino": OpenVinoBackend, "eager": EagerBackend,
               "cuda": CudaBackend, "executorch": ExecuTorchBackend, "litert": LiteRtBackend}
    if name not in classes:
        raise InputError(f"unknown latency backend {name!r}; choose from {', '.join(BACKENDS)}")
    if name in PACKAGES and importlib.util.find_spec(PACKAGES[name][0]) is None:
        raise InputError(f"--backend {name}: the {PACKAGES[name][0]} package is not installed "
                         f"(pip install '{PACKAGES[name][1]}')")
    return classes[name](threads, batch_size)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


__all__ = ["BACKENDS", "CudaBackend", "EagerBackend", "ExecuTorchBackend", "LiteRtBackend", "MobileBackend",
           "OnnxRuntimeBackend", "OpenVinoBackend", "Runtime",
           "cpu_name", "make_runtime", "slug"]
