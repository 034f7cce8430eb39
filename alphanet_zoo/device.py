"""The one device parser: ``auto|cpu|cuda|cuda:N`` -> a ``torch.device`` with its index, checked."""
from __future__ import annotations

import torch

from .errors import InputError


def parse_device(value: str | torch.device, local_rank: int = 0) -> torch.device:
    """A device name -> ``torch.device``; `InputError` when it is malformed or not on this machine.

    ``auto`` is ``cuda:<local_rank>`` when PyTorch sees a GPU, else ``cpu``; a bare ``cuda`` is
    ``cuda:<local_rank>`` (``torchrun`` gives each process of a node its own GPU); ``cuda:N`` keeps N.
    """
    if isinstance(value, torch.device):
        value = str(value)
    text = str(value).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        if not torch.cuda.is_available():
            raise InputError(f"device {value}: no CUDA device is available to PyTorch")
        index = int(text[5:]) if ":" in text else local_rank
        if index >= torch.cuda.device_count():
            raise InputError(f"device {value}: there are only {torch.cuda.device_count()} CUDA devices")
        return torch.device("cuda", index)
    raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
