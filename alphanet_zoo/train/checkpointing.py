"""Training checkpoints: plain data (tensors, numbers, strings), written atomically, read without code.

A checkpoint is a dict with the supernet under ``model`` (this package's key names), so
`Supernet.from_checkpoint`, ``alphanet-extract`` and ``alphanet-eval --supernet`` take it as is,
plus everything an exact resume needs: optimizer (momentum buffers), learning-rate schedule,
loss scaler, epoch, samples of the epoch already trained on, global step, the open log window,
and the config. A sha256 of the content (``content_sha256``) is checked on reading, so a damaged
file (a flipped bit, not only a truncated one) is refused.

`save_checkpoint` keeps the previous checkpoint beside the new one (``checkpoint.prev.pt``);
`load_latest` reads the newest readable one, falling back to the previous one and saying why.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_path
from ..checkpoint import CheckpointError
from ..errors import InputError, brief

CHECKPOINT_FORMAT = "alphanet_zoo.train/1"
CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_NAME = "checkpoint.prev.pt"
_REQUIRED = ("model", "optimizer", "schedule", "epoch", "consumed", "global_step")
log = logging.getLogger("alphanet_zoo")


def previous_path(path: str | os.PathLike) -> Path:
    """Where the checkpoint before ``path`` is kept: ``checkpoint.pt`` -> ``checkpoint.prev.pt`` (`PREVIOUS_NAME`)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def content_digest(value: Any) -> str:
    """sha256 of a nest of dicts, lists, tensors and scalars: keys, dtypes, shapes and bytes, in order."""
    h = hashlib.sha256()

    def visit(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            t = v.detach().to("cpu").contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(v, dict):
            h.update(f"D{len(v)}".encode())
            for k, item in v.items():
                h.update(f"K{k!r}".encode())
                visit(item)
        elif isinstance(v, (list, tuple)):
            h.update(f"L{len(v)}".encode())
            for item in v:
                visit(item)
        else:
            h.update(f"V{v!r}".encode())

    visit(value)
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any], keep_previous: bool = True) -> Path:
    """Write ``state`` (plus the format tag and its digest) to ``path`` atomically: a crash never leaves
    a half file under either name. With ``keep_previous`` the checkpoint ``path`` held moves to
    `previous_path` first, once the new one is completely written."""
    path = Path(path)
    state = {"format": CHECKPOINT_FORMAT, **state}
    state["content_sha256"] = content_digest({k: v for k, v in state.items() if k != "content_sha256"})
    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as e:  # torch's writer reports a failed write (a full disk) as RuntimeError
            raise OSError(f"the write failed (is the disk full?): {brief(e, 200, first_line=False)}") from None
        if keep_previous and path.is_file():
            # a kill between this rename and the next leaves the previous checkpoint, which resume falls back to
            os.replace(path, previous_path(path))
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint with ``torch.load(weights_only=True)`` (no code runs) and check it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # (torch's message suggests weights_only=False, which would run the file's code: keep only the reason)
        reason = re.search(r"WeightsUnpickler error: ([^\n]*\S)", str(e))
        raise CheckpointError(f"refusing to load {path}: not plain data, or damaged"
                              f"{f' ({reason[1][:200]})' if reason else ''}") from None
    except Exception as e:  # damaged data raises many kinds (RuntimeError, EOFError, struct.error, KeyError...)
        text = brief(f"{type(e).__name__}: {e}".split(". This is")[0], 200, first_line=False)
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {text}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not an alphanet-train checkpoint (format {found!r}, "
                              f"expected {CHECKPOINT_FORMAT!r})")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    digest = state.get("content_sha256")
    if digest is not None and digest != content_digest({k: v for k, v in state.items() if k != "content_sha256"}):
        raise CheckpointError(f"{path} is damaged: its content does not match the sha256 written with it")
    return state


def load_latest(path: str | os.PathLike) -> tuple[dict[str, Any], Path, str | None] | None:
    """The newest readable checkpoint of ``path`` and its previous one: ``(state, file, fallback)``.

    ``fallback`` says why the previous one was used (the newest missing or unreadable), else None.
    None when neither file exists; `CheckpointError` when neither can be read.
    """
    newest, previous = Path(path), previous_path(path)
    if not newest.is_file() and not previous.is_file():
        return None
    try:
        return load_checkpoint(newest), newest, None
    except (CheckpointError, InputError) as e:
        problem = f"{newest} is missing" if not newest.is_file() else str(e)
    if not previous.is_file():
        raise CheckpointError(f"{problem}, and there is no previous checkpoint {previous.name} to fall back to; "
                              f"move it away to start afresh") from None
    try:
        state = load_checkpoint(previous)
    except (CheckpointError, InputError) as e:
        raise CheckpointError(f"{problem}; the previous checkpoint cannot be used either: {e}") from None
    fallback = f"{problem}; resuming from the previous checkpoint {previous} (step {state['global_step']})"
    log.warning("%s", fallback)
    return state, previous, fallback
