"""What an export format is to the pipeline: the `Builder` interface, the `ExportJob` it builds from,
the `Candidate` files it builds, and `BUILDERS`, where each format registers its builder.

A format is one module holding its builder, registered on import::

    @register
    class LiteRtBuilder(Builder):
        format = "tflite"
        def build(self, job, precision): ...
        def write(self, job, candidate, export_info, folder): ...
        def open(self, job, candidate, files=None): ...

and one import line in the package's ``__init__``; `deploy.export_model` reads `BUILDERS` and
knows no format by name. The runtime that runs a format's files is its entry in `runtimes.RUNTIMES`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

from alphanet_zoo.errors import InputError

from .agreement import Agreement
from .images import ImageSets
from .runtime import ExportedModel
from .verify import DEFAULT_TOLERANCE, VERIFY_BATCH_SIZES, Verification


@dataclass
class Candidate:
    """One precision of the file being exported, built in staging."""

    precision: str
    files: list[Path]
    verification: Verification | None = None  # fp32: the tolerance check; reduced: filled with the agreement
    details: dict[str, Any] = field(default_factory=dict)  # "runtime", "quantization"
    obj: Any = None  # what the builder may reuse when writing the final file
    agreement: Agreement | None = None
    logits: np.ndarray | None = None  # on the verification images
    failure: str | None = None  # why it did not pass (auto records it and goes on)
    timing: dict[str, Any] | None = None


@dataclass
class ExportJob:
    """What one export needs: the model, where the file goes, how it is checked."""

    model: nn.Module
    path: Path
    format: str
    metadata: dict[str, Any]
    staging: Path
    opset: int | None = None  # ONNX-based formats: None until their builder's `Builder.check` sets the default
    batch: int | str = "dynamic"
    tolerance: float = DEFAULT_TOLERANCE
    verify: bool = True
    threads: int | None = None
    images: ImageSets | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the format's own options (TorchScript: channels_last)
    cache: dict[str, Any] = field(default_factory=dict)  # intermediate files shared by candidates

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def verify_batch_sizes(self) -> tuple[int, ...]:
        return VERIFY_BATCH_SIZES if self.batch == "dynamic" else (int(self.batch),)


class Builder:
    """How one format is built from the model, written with its metadata, and run."""

    format = ""
    #: File suffixes that name this format; the first is the one an export writes by default (``.<format>``
    #: when a builder names none).
    suffixes: tuple[str, ...] = ()
    #: What the format is, in a few words (``--help`` and the command's report).
    description = ""
    #: The ONNX-graph options the format takes (``opset``, ``batch``); the others take any batch.
    options: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ("fp32",)
    default_precision = "fp32"  # what an export asks for when it names no precision
    #: Why a precision is not offered, said when one is asked for (by precision).
    precision_hints: dict[str, str] = {}
    #: Whether it exports a features model (`AlphaNetFeatures`: one output per feature map) at fp32.
    feature_maps = False

    def targets(self, path: Path) -> list[Path]:
        """The files the export writes (an IR: ``.xml`` and ``.bin``)."""
        return [path]

    def check(self, job: ExportJob) -> None:
        """Check the job's options before anything is built (and fill in the format's defaults)."""

    def supported(self, precision: str) -> str | None:
        """None when ``precision`` runs on this machine, else why not."""
        return None

    def build(self, job: ExportJob, precision: str) -> Candidate:
        raise NotImplementedError

    def write(self, job: ExportJob, candidate: Candidate, export_info: dict[str, Any], folder: Path) -> list[Path]:
        """The final files (in ``folder``, in `targets` order), with the record and ``export_info`` inside."""
        raise NotImplementedError

    def open(self, job: ExportJob, candidate: Candidate, files: Sequence[Path] | None = None) -> ExportedModel:
        """An `ExportedModel` on the candidate's files (or ``files``), run as `open_model` runs it."""
        raise NotImplementedError

    def module_bytes(self, module: nn.Module, example: torch.Tensor) -> bytes:
        """The file of any module (a latency table's layer) at ``example``'s static shape, for runtimes whose
        latency tables convert each layer (`runtimes.RuntimeInfo.tables` ``file``)."""
        raise NotImplementedError(f"{self.format} files are not made of arbitrary modules")


#: Every format's builder, by format name, in the order they registered.
BUILDERS: dict[str, Builder] = {}

B = TypeVar("B", bound=type)


def register(cls: B) -> B:
    """Class decorator: add an instance of the `Builder` subclass ``cls`` to `BUILDERS` under its ``format``
    (a second registration of a format replaces the first)."""
    if not cls.format:
        raise ValueError(f"{cls.__name__} names no format")
    if not cls.suffixes:
        cls.suffixes = (f".{cls.format}",)
    BUILDERS[cls.format] = cls()
    return cls


def builder_for(fmt: str) -> Builder:
    """The registered builder of ``fmt``."""
    if fmt not in BUILDERS:
        raise InputError(f"unknown export format {fmt!r}; choose from {', '.join(BUILDERS)}")
    return BUILDERS[fmt]


def format_of_suffix(suffix: str) -> str | None:
    """The registered format whose files end in ``suffix`` (``.xml``: openvino), or None."""
    return next((fmt for fmt, b in BUILDERS.items() if suffix.lower() in b.suffixes), None)


def formats_offering(precision: str) -> list[str]:
    """The registered formats that build ``precision`` files."""
    return [name for name, builder in BUILDERS.items() if precision in builder.precisions]
