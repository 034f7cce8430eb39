"""The dataset loop ``alphanet-eval`` and ``alphanet-predict`` share: the model to run (`Subject`), one process's
share of the batches under torchrun (`shard`), and the gathering of every process's outcome (`gather_or_raise`).

The batch loop itself (uint8 crops to the model's input, through the classifier) is
`alphanet_zoo.data.run_batches`; a distributed run splits whole batches of the one fixed order
(`alphanet_zoo.data.batch_indices`), so each image is computed in the batch it has in one process and the
gathered result is the one-process result, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .. import distributed
from ..config import ArchConfig
from ..data import TorchClassifier, batch_indices
from ..errors import AlphaNetError, InputError
from ..export import open_model
from ..preprocessing import Preprocessing
from ..record import ModelRecord, Origin


@dataclass
class Subject:
    """One model ready to run over a dataset, and what a report says about it."""

    name: str
    record: ModelRecord | None
    classifier: Callable[[torch.Tensor], Any]
    preprocessing: Preprocessing
    backend: str
    weights: str
    device: torch.device = torch.device("cpu")  # where its input batches go

    @classmethod
    def of_model(cls, model: torch.nn.Module, device: torch.device, name: str | None = None,
                 weights: str = "") -> "Subject":
        """A PyTorch model (its record gives the name and preprocessing)."""
        record = model.pretrained_cfg
        return cls(name or record.name or "model", record, TorchClassifier(model, device), record.preprocessing,
                   "pytorch", weights, device)


def file_subject(path: str, device: torch.device, *, threads: int | None = None, arch: ArchConfig | None = None,
                 name: str | None = None) -> Subject:
    """An exported file (ONNX, OpenVINO IR, TorchScript, pt2, .pte, .tflite, run by
    `alphanet_zoo.export.open_model`): its record (metadata) gives the architecture and preprocessing;
    ``arch`` must agree with it, or stands in for it when the file has none."""

    classifier = open_model(path, threads=threads, device=device)
    record = classifier.record()
    if record is not None and arch is not None and arch != record.arch:
        raise InputError(f"--arch {name or arch} is not the architecture stored in {path}")
    if record is None and arch is not None:
        record = ModelRecord.create(arch, origin=Origin.FILE, source=f"the file {Path(path).name} (no metadata)")
    static = classifier.static_resolution()
    if record is not None:
        preprocessing = record.preprocessing
        if static is not None and static != preprocessing.resolution:
            raise InputError(f"{path}: input size {static} disagrees with its preprocessing resolution "
                             f"{preprocessing.resolution}")
    elif static is not None:
        preprocessing = Preprocessing(resolution=static)
    else:
        raise InputError(f"cannot tell the input resolution of {path} (dynamic input size and no "
                         "'config' metadata): give --arch")
    label = name or (record.name if record else None) or Path(path).stem
    input_device = device if classifier.backend == "pytorch" else torch.device("cpu")
    return Subject(label, record, classifier, preprocessing, classifier.backend, f"file:{path}", input_device)


def quiet() -> dict[str, Any]:
    """Progress-bar arguments: bars on rank 0 only."""
    return {} if distributed.rank_and_world()[0] == 0 else {"disable": True}


def shard(count: int, batch_size: int) -> list[list[int]] | None:
    """This process's share of a distributed run: batch k of the fixed order goes to rank k mod world
    size (whole batches, so every image is computed in the batch it has in one process); None alone."""
    rank, world = distributed.rank_and_world()
    if world == 1:
        return None
    return [b for k, b in enumerate(batch_indices(count, batch_size)) if k % world == rank]


def gather_or_raise(part: Any, error: tuple[int, str] | None = None, what: str = "gathering results") -> list[Any]:
    """Every process's ``part``, in rank order (``[part]`` alone). A process's ``error`` (exit code,
    message) is raised on every process, so all stop with it."""
    parts = distributed.all_gather_object((part, error), what)
    failed = [e for _, e in parts if e is not None]
    if failed:
        code, message = failed[0]
        raise (InputError if code == InputError.exit_code else AlphaNetError)(message)
    return [p for p, _ in parts]


def rank_error(e: AlphaNetError) -> tuple[int, str]:
    """An error of this process as `gather_or_raise` passes it to the others."""
    return e.exit_code, f"rank {distributed.rank_and_world()[0]}: {e}"
