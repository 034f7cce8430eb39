"""Training checkpoints: plain data (tensors, numbers, strings), written atomically, read without code.

A checkpoint is a dict with the supernet under ``model`` (this package's key names), so
`Supernet.from_checkpoint`, ``alphanet-extract`` and ``alphanet-eval --supernet`` take it as is,
plus everything an exact resume needs: optimizer (momentum buffers), learning-rate schedule,
loss scaler, epoch, samples of the epoch already trained on, global step, and the config.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_path
from ..checkpoint import CheckpointError
from ..errors import InputError

CHECKPOINT_FORMAT = "alphanet_zoo.train/1"
CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus the format tag) to ``path`` atomically: a crash never leaves a half file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint with ``torch.load(weights_only=True)`` (no code runs) and check it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refusing to load {path}: not plain data ({str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {e}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not an alphanet-train checkpoint (format {found!r}, "
                              f"expected {CHECKPOINT_FORMAT!r})")
    missing = [k for k in ("model", "optimizer", "schedule", "epoch", "consumed", "global_step") if k not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    return state
