"""Every runtime the package runs a model on, in one table (`RUNTIMES`), and `open_model`, which reads it.

A runtime entry says what it is called, which file format it opens (a key of `builders.BUILDERS`,
whose builder makes the file; None for the PyTorch model in memory), which `ExportedModel` runs it
and with what options, the packages it needs and the pip extra that installs them, and how it is
timed: ``alphanet-bench`` times every runtime (``opt_in`` ones only when named) at each precision
its format's builder offers (``onnxruntime-int8``: the int8 file on ONNX Runtime); the latency
search builds tables on the runtimes with ``tables`` set, feeding them layers as PyTorch modules
(``module``), as ONNX graphs (``onnx``), or converted one by one to their format
(``file``: `builders.Builder.module_bytes`). `open_model` runs a file with the first runtime of its
format.

| runtime | opens | needs [pip extra] | bench | tables | also |
| --- | --- | --- | --- | --- | --- |
| ``eager`` | the model in memory | torch | yes | modules | ``pytorch`` |
| ``eager-cl`` | the same, channels-last | torch | yes | | |
| ``torchscript`` | ``torchscript`` (``.pt``) | torch | yes | | |
| ``pt2`` | ``pt2`` (``.pt2``) | torch | yes | | ``torch.export`` |
| ``onnxruntime`` | ``onnx`` | onnxruntime | fp32, int8 | ONNX graphs | |
| ``openvino`` | ``openvino`` (IR) | openvino [same] | fp32, bf16, int8 | ONNX graphs | |
| ``openvino-onnx`` | ``onnx``, OpenVINO's defaults | openvino [same] | fp32 | | |
| ``executorch`` | ``executorch`` (``.pte``) | executorch [same] | fp32, int8, named | files | ``executorch-xnnpack`` |
| ``litert`` | ``tflite`` | litert_torch, ai_edge_litert [litert] | fp32, int8, named | files | ``litert-xnnpack`` |
| ``compile`` | the model in memory, compiled | torch | named | | ``torch.compile`` |
| ``cuda`` | the model on the GPU, channels-last | torch with CUDA | with a GPU | modules | |

(bench: the precisions ``alphanet-bench`` times, "named" when only a ``--backend`` naming it does, not
``all``; tables: how the latency search feeds it layers; also: the runtime's other accepted names.)

Names are resolved by `resolve`: a runtime's name, one of its ``aliases`` (spellings used before
there was one table), or a format's name, which names the first runtime of that format
(``tflite``: litert, ``onnx``: onnxruntime).
A precision follows a hyphen (``litert-int8``, ``tflite-int8``).

Adding a runtime: one `RuntimeInfo` entry below (and a row above), plus, for a new format, its builder
(a module registering a `builders.Builder`, imported by the package's ``__init__``) and the
`ExportedModel` subclass that runs its files, whose ``backend`` is the runtime's name.
``alphanet-bench``, ``alphanet-search --backend``, `open_model` and ``alphanet-predict --model`` take it
from there; ``tests/test_runtimes.py`` checks the entry against the builders and setup.cfg's extras.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from alphanet_zoo.device import parse_device
from alphanet_zoo.errors import InputError

from .builders import BUILDERS
from .executorch_export import executorch_version
from .metadata import file_format, read_export_info, read_metadata
from .runtime import (ExecuTorchModel, ExportedModel, LiteRtModel, OnnxRuntimeModel, OpenVinoModel, Pt2Model,
                      TorchModel, TorchScriptModel)
from .tflite_export import litert_version


def torch_version() -> str:
    return torch.__version__


def cuda_version() -> str:
    return f"{torch.__version__} (CUDA {torch.version.cuda})"


def onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def openvino_build() -> str:
    """OpenVINO's full version (with its build), as latency tables were keyed before."""
    import openvino

    return openvino.get_version() if hasattr(openvino, "get_version") else openvino.__version__


@dataclass(frozen=True)
class RuntimeInfo:
    """One runtime: see the module's docstring."""

    name: str
    format: str | None  # the file format it opens (a `BUILDERS` key); None: the PyTorch model in memory
    model: type[ExportedModel]  # what runs it
    description: str
    packages: tuple[str, ...] = ()  # the modules it imports, beyond torch
    extra: str | None = None  # the pip extra installing them (None: a dependency of the package itself)
    options: Mapping[str, Any] = field(default_factory=dict)  # `TorchModel.of`'s, or the model class's
    precisions: tuple[str, ...] | None = None  # None: every precision of its format's builder
    opt_in: bool = False  # benchmarked only when named (its first call or its conversion takes minutes)
    tables: str | None = None  # latency tables: layers fed as "module", "onnx" graphs or converted "file"s
    table_options: Mapping[str, Any] = field(default_factory=dict)  # the model class's, for latency tables
    version: Callable[[], str] = torch_version
    aliases: tuple[str, ...] = ()

    @property
    def device(self) -> str:
        return self.options.get("device", "cpu")

    def offered(self) -> tuple[str, ...]:
        """The precisions it runs: its own, else its format's builder's (fp32 for a model in memory)."""
        if self.precisions is not None:
            return self.precisions
        return BUILDERS[self.format].precisions if self.format else ("fp32",)

    def variant(self, precision: str) -> str:
        """Its benchmark name at ``precision``: the name (fp32), else ``name-precision``."""
        return self.name if precision == "fp32" else f"{self.name}-{precision}"

    def variants(self) -> list[str]:
        """Its benchmark names, one per precision it offers."""
        return [self.variant(p) for p in self.offered()]

    def unavailable(self) -> str | None:
        """Why it cannot run here (a package missing, no GPU), or None."""
        missing = [p for p in self.packages if importlib.util.find_spec(p) is None]
        if missing:
            install = f"alphanet_zoo[{self.extra}]" if self.extra else " ".join(missing)
            return f"{self.name} needs {', '.join(missing)}: pip install '{install}'"
        if self.device == "cuda" and not torch.cuda.is_available():
            return f"{self.name}: no CUDA device is available to PyTorch"
        return None


_OPENVINO = dict(packages=("openvino",), extra="openvino", version=openvino_build)
#: Every runtime, in the benchmark's order; the first runtime of a format is the one `open_model` uses.
RUNTIMES: dict[str, RuntimeInfo] = {r.name: r for r in (
    RuntimeInfo("eager", None, TorchModel, "the PyTorch model as built", tables="module", aliases=("pytorch",)),
    RuntimeInfo("eager-cl", None, TorchModel, "the same, channels-last weights", options={"channels_last": True}),
    RuntimeInfo("torchscript", "torchscript", TorchScriptModel, "`to_torchscript`'s file (deprecated upstream)"),
    RuntimeInfo("pt2", "pt2", Pt2Model, "`to_pt2`'s ``torch.export`` file", aliases=("torch.export",)),
    RuntimeInfo("onnxruntime", "onnx", OnnxRuntimeModel, "our ONNX file on ONNX Runtime", packages=("onnxruntime",),
            tables="onnx", version=onnxruntime_version),
    RuntimeInfo("openvino", "openvino", OpenVinoModel, "our OpenVINO IR", tables="onnx",
            table_options={"split": False}, **_OPENVINO),
    RuntimeInfo("openvino-onnx", "onnx", OpenVinoModel, "OpenVINO's default compile of our fp32 ONNX, as a user "
            "would do by hand", options={"tuned": False}, precisions=("fp32",), **_OPENVINO),
    RuntimeInfo("executorch", "executorch", ExecuTorchModel, "our ``.pte`` (XNNPACK-delegated) on ExecuTorch's runtime",
            packages=("executorch",), extra="executorch", opt_in=True, tables="file", version=executorch_version,
            aliases=("executorch-xnnpack",)),
    RuntimeInfo("litert", "tflite", LiteRtModel, "our ``.tflite`` on LiteRT's interpreter (XNNPACK delegate)",
            packages=("litert_torch", "ai_edge_litert"), extra="litert", opt_in=True, tables="file",
            version=litert_version, aliases=("litert-xnnpack",)),
    RuntimeInfo("compile", None, TorchModel, "``torch.compile`` (inductor) of the model; its first call takes minutes",
            options={"compile": True}, opt_in=True, aliases=("torch.compile",)),
    RuntimeInfo("cuda", None, TorchModel, "the PyTorch model on the GPU, channels-last",
            options={"device": "cuda", "channels_last": True}, tables="module", version=cuda_version),
)}


def _names() -> dict[str, RuntimeInfo]:
    """Every accepted name: the runtimes', their aliases, and the formats' (the runtime opening each)."""
    names = {fmt: for_format(fmt) for fmt in BUILDERS}
    names.update({alias: r for r in RUNTIMES.values() for alias in r.aliases})
    names.update(RUNTIMES)
    return names


def resolve(name: str) -> RuntimeInfo:
    """The runtime called ``name`` (or an alias); an `InputError` naming the runtimes otherwise."""
    runtime = _names().get(name.strip().lower())
    if runtime is None:
        raise InputError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
    return runtime


def variant(name: str) -> tuple[RuntimeInfo, str]:
    """(runtime, precision) of a benchmark name: ``openvino-bf16``, ``tflite-int8``, ``eager`` (fp32)."""
    names = _names()
    key = name.strip().lower()
    if key in names:
        return names[key], "fp32"
    base, _, precision = key.rpartition("-")
    if base in names and precision in names[base].offered():
        return names[base], precision
    raise InputError(f"unknown runtime {name!r}; choose from {', '.join(variants())}")


def variants() -> list[str]:
    """Every benchmark name (`RuntimeInfo.variants`), in the table's order."""
    return [v for r in RUNTIMES.values() for v in r.variants()]


def for_format(fmt: str) -> RuntimeInfo:
    """The runtime `open_model` runs ``fmt`` files with: the first of that format."""
    found = next((r for r in RUNTIMES.values() if r.format == fmt), None)
    if found is None:
        raise InputError(f"no runtime opens {fmt!r} files")
    return found


def open_model(path: str | os.PathLike, *, threads: int | None = None,
               device: str | torch.device = "cpu") -> ExportedModel:
    """Open an exported file (ONNX, OpenVINO IR ``.xml``, TorchScript ``.pt``, ``torch.export`` ``.pt2``,
    ExecuTorch ``.pte``, LiteRT ``.tflite``) on its format's runtime (`for_format`) with our tuned settings;
    see `runtime` for what the result does.

    ``threads``: intra-op threads of the runtime (None: its default, one per core). ``device``:
    ``cpu``, or ``cuda``/``cuda:N`` (a ``torch.device`` too; the index is kept) for ONNX (CUDA
    provider), TorchScript and pt2. A file without our metadata
    (another tool's export) still runs: ``metadata`` is then None and `preprocess` is unavailable.
    """
    path = Path(path)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be a positive integer or None, got {threads!r}")
    device = str(parse_device(device))  # "cpu" or "cuda:N"
    fmt = file_format(path)
    try:
        metadata = read_metadata(path)
    except InputError as e:
        if "has no" not in str(e):
            raise
        metadata = None  # a file from another tool: runs, without a record
    return for_format(fmt).model.from_file(path, metadata, read_export_info(path), threads, device)


__all__ = ["RUNTIMES", "RuntimeInfo", "for_format", "open_model", "resolve", "variant", "variants"]
