"""Where latency is measured: every runtime of `alphanet_zoo.export.runtimes.RUNTIMES` whose entry says
how its latency tables are fed (``tables``): ONNX Runtime and OpenVINO, PyTorch eager on the CPU, CUDA, and
the phone runtimes ExecuTorch (XNNPACK) and LiteRT on this CPU (a stand-in for a phone's CPU, not a phone).

A `Runtime` turns a `Layer` (for the table) or a whole subnet (end to end) into a zero-argument
call to time; every call runs the entry's `alphanet_zoo.export.ExportedModel`, the one way the
package runs a model. End to end is what a user deploying the subnet runs. Layers and subnets are fed
to the runtime as its entry says:

- ``onnx`` (ONNX Runtime, OpenVINO): a layer as its ONNX graph (`latency_layers.onnx_graph`), a subnet as
  the file ``alphanet-export`` writes (`alphanet_zoo.export.to_onnx`), opened with the entry's
  ``table_options`` at the same thread count (OpenVINO: one stream, the latency setting, its precision
  left to itself);
- ``module`` (eager, CUDA): the layer's module or the `AlphaNet` itself (`TorchModel.of`, with the entry's
  options);
- ``file`` (ExecuTorch, LiteRT): the layer or subnet converted by its format's builder
  (`Builder.module_bytes`, fp32, static batch), as ``alphanet-export`` converts it. Lowering each layer
  takes a second or more: a table there takes a while.
"""
from __future__ import annotations

import contextlib
import hashlib
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
from ..export import BUILDERS, ExportedModel, TorchModel, runtimes, to_onnx
from ..export.timing import cpu_name, torch_threads
from ..model import AlphaNet
from .latency_layers import Layer, input_shape, onnx_graph, torch_module

#: The runtimes latency tables can be built on (`alphanet_zoo.export.runtimes`, ``tables``).
BACKENDS = tuple(name for name, r in runtimes.RUNTIMES.items() if r.tables)
log = logging.getLogger("alphanet_zoo")


class Runtime:
    """A runtime of `alphanet_zoo.export.runtimes.RUNTIMES` (``name``) at a thread count and batch size;
    ``layer(l)``/``model(arch)`` give calls to time, on `ExportedModel` objects (`open_layer`, `open_subnet`)
    run on a fixed input."""

    name = ""

    def __init__(self, threads: int, batch_size: int, name: str | None = None) -> None:
        self.name = name or self.name
        self.threads, self.batch_size = int(threads), int(batch_size)
        self._tmp = tempfile.TemporaryDirectory(prefix="alphanet_latency_")
        self.workdir = Path(self._tmp.name)
        self._files = 0
        self.info = runtimes.RUNTIMES.get(self.name)  # None: a subclass timing something else

    @property
    def version(self) -> str:
        return self.info.version()

    def machine(self) -> str:
        """What the timings belong to: the CPU model and its logical cores (and the GPU for CUDA)."""
        cpu = f"{cpu_name()} ({os.cpu_count()} logical cores, {platform.machine()})"
        return f"{torch.cuda.get_device_name()} on {cpu}" if self.info and self.info.device == "cuda" else cpu

    def key(self) -> dict[str, Any]:
        """What a table measured here is valid for."""
        machine = self.machine()
        return {"runtime": self.name, "version": self.version, "machine": machine,
                "machine_id": hashlib.sha256(machine.encode()).hexdigest()[:12], "threads": self.threads,
                "batch_size": self.batch_size}

    @contextlib.contextmanager
    def active(self):
        """Around measurements (the PyTorch runtimes set their thread count here)."""
        if self.info is None or self.info.format is not None:
            yield
            return
        with torch_threads(self.threads), torch.inference_mode():
            yield

    def open_layer(self, layer: Layer) -> ExportedModel:
        if self.info.tables == "onnx":
            path = self._path(".onnx")
            path.write_bytes(onnx_graph(layer, self.batch_size).SerializeToString())
            return self._read(path, images=False)
        return self._open_module(torch_module(layer), input_shape(layer, self.batch_size), images=False)

    def open_subnet(self, arch: ArchConfig, num_classes: int) -> ExportedModel:
        net = AlphaNet(arch, num_classes).eval()
        if self.info.tables != "onnx":
            return self._open_module(net, (self.batch_size, 3, arch.resolution, arch.resolution), images=True)
        path = self._path(".onnx")
        level = log.level
        log.setLevel(max(level, logging.WARNING))  # the exporter's progress lines are not this command's
        try:
            to_onnx(net, path, verify=False)  # random weights: timings do not depend on them
        finally:
            log.setLevel(level)
        return self._read(path, images=True)

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

    def _path(self, suffix: str) -> Path:
        self._files += 1
        return self.workdir / f"model_{self._files}{suffix}"

    def _open_file(self, path: Path, images: bool) -> ExportedModel:
        return self.info.model.from_file(path, None, None, self.threads, "cpu", images=images,
                                         **self.info.table_options)

    def _read(self, path: Path, images: bool) -> ExportedModel:
        """The ONNX file at ``path`` opened, then removed: the runtime holds the model in memory."""
        model = self._open_file(path, images)
        path.unlink()
        return model

    def _open_module(self, module: torch.nn.Module, shape: tuple[int, ...], images: bool) -> ExportedModel:
        """``module`` in memory (a PyTorch runtime), or converted to the runtime's format at ``shape``."""
        if self.info.format is None:
            return TorchModel.of(module, threads=self.threads, images=images, **self.info.options)
        builder = BUILDERS[self.info.format]
        path = self._path(builder.suffixes[0])
        path.write_bytes(builder.module_bytes(module, torch.zeros(shape)))
        return self._open_file(path, images)


def table_runtime(name: str) -> runtimes.RuntimeInfo:
    """The runtime ``name`` (one of `BACKENDS`, or another name of one) calls, if latency tables are built on
    it; an `InputError` otherwise."""
    try:
        info = runtimes.resolve(name)
    except InputError:
        info = None
    if info is None or not info.tables:
        raise InputError(f"unknown latency backend {name!r}; choose from {', '.join(BACKENDS)} (or another name of "
                         "one: tflite is litert)")
    return info


def make_runtime(name: str, threads: int, batch_size: int) -> Runtime:
    """The `Runtime` called ``name`` (`table_runtime`); a missing library is an `InputError`."""
    info = table_runtime(name)
    why = info.unavailable()
    if why:
        raise InputError(f"--backend {name}: {why}")
    return Runtime(threads, batch_size, info.name)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


__all__ = ["BACKENDS", "Runtime", "cpu_name", "make_runtime", "slug", "table_runtime"]
