"""Where latency is measured: ONNX Runtime, OpenVINO, PyTorch eager on the CPU, or CUDA.

A `Runtime` turns a `Layer` (for the table) or a whole subnet (end to end) into a zero-argument
call to time. End to end is what a user deploying the subnet runs: for ONNX Runtime the file
``alphanet-export`` writes (`alphanet_zoo.export.to_onnx`), opened with
`alphanet_zoo.export.onnxruntime_session` at the same thread count; for OpenVINO that graph
compiled for the CPU (fp32) with the exporters' OpenVINO settings; for eager and CUDA the
`AlphaNet` module itself.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import ArchConfig
from ..errors import InputError
from .latency_layers import Layer, input_shape, onnx_graph, torch_module

BACKENDS = ("onnxruntime", "openvino", "eager", "cuda")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_calls(run: Callable[[], Any], *, warmup: int = 3, min_calls: int = 15, min_seconds: float = 0.02,
               max_calls: int = 1000) -> list[float]:
    """Milliseconds of each call of ``run()``: at least ``min_calls`` and ``min_seconds`` of them,
    after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or (time.perf_counter() - start < min_seconds and len(times) < max_calls):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def median_ms(run: Callable[[], Any], **kwargs) -> float:
    return statistics.median(time_calls(run, **kwargs))


class Runtime:
    """A backend at a thread count and batch size; ``layer(l)``/``model(arch)`` give calls to time."""

    name = ""

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

    def layer(self, layer: Layer) -> Callable[[], Any]:
        raise NotImplementedError

    def model(self, arch: ArchConfig, num_classes: int = 1000) -> Callable[[], Any]:
        raise NotImplementedError

    def close(self) -> None:
        self._tmp.cleanup()

    def _onnx_file(self, arch: ArchConfig, num_classes: int) -> Path:
        """The subnet exported as ``alphanet-export`` writes it (random weights: timings do not depend on them)."""
        from ..export import to_onnx
        from ..model import AlphaNet

        self._files += 1
        path = self.workdir / f"model_{self._files}.onnx"
        logger = logging.getLogger("alphanet_zoo")
        level = logger.level
        logger.setLevel(max(level, logging.WARNING))  # the exporter's progress lines are not this command's
        try:
            to_onnx(AlphaNet(arch, num_classes).eval(), path, verify=False)
        finally:
            logger.setLevel(level)
        return path

    def _input(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.random.RandomState(0).standard_normal(shape).astype(np.float32)


class OnnxRuntimeBackend(Runtime):
    name = "onnxruntime"

    @property
    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def _session(self, model: Any) -> Callable[[], Any]:
        from ..export import onnxruntime_session

        if isinstance(model, (str, Path)):
            session = onnxruntime_session(model, self.threads)
            Path(model).unlink()  # the session holds the model: the file is not needed any more
        else:
            path = self.workdir / "layer.onnx"
            path.write_bytes(model.SerializeToString())
            session = onnxruntime_session(path, self.threads)
        inp = session.get_inputs()[0]
        shape = [self.batch_size if not isinstance(d, int) else d for d in inp.shape]
        x = self._input(tuple(shape))
        return lambda: session.run(None, {inp.name: x})

    def layer(self, layer: Layer) -> Callable[[], Any]:
        return self._session(onnx_graph(layer, self.batch_size))

    def model(self, arch: ArchConfig, num_classes: int = 1000) -> Callable[[], Any]:
        return self._session(self._onnx_file(arch, num_classes))


class OpenVinoBackend(Runtime):
    name = "openvino"

    @property
    def version(self) -> str:
        import openvino

        return openvino.get_version() if hasattr(openvino, "get_version") else openvino.__version__

    def _config(self) -> dict[str, Any]:
        """The exporters' OpenVINO CPU settings when they define them, else latency-first defaults."""
        try:
            from ..export.runtime import openvino_config
        except ImportError:
            return {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": self.threads}
        return openvino_config(self.threads, None)

    def _compile(self, path: Path, shape: tuple[int, ...]) -> Callable[[], Any]:
        from ..export.runtime import openvino_core

        x = self._input(shape)
        core = openvino_core()
        model = core.read_model(str(path))
        model.reshape({model.inputs[0]: list(shape)})
        request = core.compile_model(model, "CPU", self._config()).create_infer_request()
        return lambda: request.infer({0: x})

    def _compile_file(self, path: Path, shape: tuple[int, ...]) -> Callable[[], Any]:
        run = self._compile(path, shape)
        path.unlink()
        return run

    def layer(self, layer: Layer) -> Callable[[], Any]:
        path = self.workdir / "layer.onnx"
        path.write_bytes(onnx_graph(layer, self.batch_size).SerializeToString())
        return self._compile(path, input_shape(layer, self.batch_size))

    def model(self, arch: ArchConfig, num_classes: int = 1000) -> Callable[[], Any]:
        r = arch.resolution
        return self._compile_file(self._onnx_file(arch, num_classes), (self.batch_size, 3, r, r))


class EagerBackend(Runtime):
    name = "eager"
    device = torch.device("cpu")

    @property
    def version(self) -> str:
        return torch.__version__

    @contextlib.contextmanager
    def active(self):
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                yield
        finally:
            torch.set_num_threads(before)

    def _call(self, module: torch.nn.Module, shape: tuple[int, ...]) -> Callable[[], Any]:
        module = module.to(self.device).eval()
        x = torch.from_numpy(self._input(shape)).to(self.device)
        if self.device.type == "cuda":
            def run() -> Any:
                out = module(x)
                torch.cuda.synchronize(self.device)
                return out
            return run
        return lambda: module(x)

    def layer(self, layer: Layer) -> Callable[[], Any]:
        return self._call(torch_module(layer), input_shape(layer, self.batch_size))

    def model(self, arch: ArchConfig, num_classes: int = 1000) -> Callable[[], Any]:
        from ..model import AlphaNet

        r = arch.resolution
        return self._call(AlphaNet(arch, num_classes), (self.batch_size, 3, r, r))


class CudaBackend(EagerBackend):
    name = "cuda"

    def __init__(self, threads: int, batch_size: int) -> None:
        if not torch.cuda.is_available():
            raise InputError("--backend cuda: no CUDA GPU is available to PyTorch")
        super().__init__(threads, batch_size)
        self.device = torch.device("cuda", torch.cuda.current_device())

    @property
    def version(self) -> str:
        return f"{torch.__version__} (CUDA {torch.version.cuda})"

    def machine(self) -> str:
        return f"{torch.cuda.get_device_name(self.device)} on {super().machine()}"


def make_runtime(name: str, threads: int, batch_size: int) -> Runtime:
    """The `Runtime` called ``name`` (one of `BACKENDS`); a missing library is an `InputError`."""
    classes = {"onnxruntime": OnnxRuntimeBackend, "openvino": OpenVinoBackend, "eager": EagerBackend,
               "cuda": CudaBackend}
    if name not in classes:
        raise InputError(f"unknown latency backend {name!r}; choose from {', '.join(BACKENDS)}")
    if name in ("onnxruntime", "openvino"):
        import importlib.util

        if importlib.util.find_spec(name) is None:
            raise InputError(f"--backend {name}: the {name} package is not installed (pip install {name})")
    return classes[name](threads, batch_size)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()
