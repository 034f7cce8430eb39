"""Reading weights safely, and translating the official release's key layout into ours.

A checkpoint is data, never code: ``.safetensors`` files, or ``torch.load(weights_only=True)``,
which refuses any pickle that would construct arbitrary Python objects.
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Callable, Mapping, TypeVar

import torch
from torch import nn

from .config import SEARCH_SPACE
from .errors import InputError

M = TypeVar("M", bound=nn.Module)

OFFICIAL_PREFIX = "module."

# Official name fragments -> ours, applied in order to a key (after the block index is rewritten).
_OFFICIAL_FRAGMENTS = (
    ("first_conv.", "stem."),
    ("mobile_inverted_conv.inverted_bottleneck.", "expand."),
    ("mobile_inverted_conv.depth_conv.se.fc.", "se."),
    ("mobile_inverted_conv.depth_conv.", "dw."),
    ("mobile_inverted_conv.point_linear.", "project."),
    ("last_conv.final_expand_layer.", "final_expand."),
    ("last_conv.feature_mix_layer.conv.conv.", "feature_mix."),
    ("classifier.linear.linear.", "classifier."),
    (".conv.conv.", ".conv."),
    (".bn.bn.", ".bn."),
)
_OFFICIAL_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_OFFICIAL_MARKERS = ("mobile_inverted_conv.", "first_conv.", "last_conv.")

#: Entries of the official checkpoint that this package skips on purpose, and why.
OFFICIAL_SKIPPED = {
    "bn_tracking": "running statistics of a BN-tracking helper that the forward never reads",
    "shortcut": "1x1 shortcut convs of blocks after a stage's first: their input and output widths "
                "always match at stride 1, so the shortcut is the identity and the conv never runs",
}


class CheckpointError(InputError):
    """A checkpoint that cannot be used: unreadable, unsafe, or with wrong keys, shapes, types or values."""


def read_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, without running any code from it.

    Takes ``.safetensors`` files and torch files holding a state dict, either bare or under
    ``state_dict`` or ``model`` (as the official release and training checkpoints do).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise CheckpointError(f"{path} is not a readable torch checkpoint (truncated or corrupt?): {e}") from None
        raise CheckpointError(
            f"refusing to load {path}: it is not plain tensor data (weights_only=True rejected it, "
            f"so it may hold code). Convert it to safetensors or re-save it as a plain state dict. "
            f"Detail: {str(e).splitlines()[0]}") from None
    except (RuntimeError, EOFError, OSError, ValueError, MemoryError, IndexError, KeyError) as e:
        # torch.load's errors for a damaged archive or pickle
        raise CheckpointError(f"{path} is not a readable torch checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict (expected a mapping of names to tensors, "
                              f"possibly under 'state_dict' or 'model')")
    return dict(obj)


def is_official_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """True for the key layout of the official AlphaNet / AttentiveNAS release."""
    return any(marker in key for key in state for marker in _OFFICIAL_MARKERS)


def _block_positions() -> list[tuple[int, int]]:
    """(stage, index in stage) of each official flat block index, in supernet order."""
    return [(s, j) for s, depth in enumerate(SEARCH_SPACE.max_depths()) for j in range(depth)]


def from_official(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Translate an official state dict into this package's names.

    Returns the translated tensors and the skipped official keys, each with the reason.
    """
    positions = _block_positions()
    out: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    for key, tensor in state.items():
        name = key[len(OFFICIAL_PREFIX):] if key.startswith(OFFICIAL_PREFIX) else key
        if ".bn_tracking." in name:
            skipped[key] = OFFICIAL_SKIPPED["bn_tracking"]
            continue
        match = _OFFICIAL_BLOCK.match(name)
        if match:
            index = int(match.group(1))
            if index >= len(positions):
                raise CheckpointError(f"official key {key!r} names block {index}, but the supernet "
                                      f"has {len(positions)} blocks")
            stage, j = positions[index]
            if j > 0 and name[match.end():].startswith("shortcut."):
                skipped[key] = OFFICIAL_SKIPPED["shortcut"]
                continue
            name = f"stages.{stage}.{j}.{name[match.end():]}"
        for official, ours in _OFFICIAL_FRAGMENTS:
            name = name.replace(official, ours)
        if name in out:
            raise CheckpointError(f"official key {key!r} maps onto {name!r} twice")
        out[name] = tensor
    return out, skipped


def check_state_dict(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size], what: str) -> None:
    """Raise `CheckpointError` naming every missing, unexpected and mis-shaped key."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} (checkpoint {list(state[k].shape)}, expected {list(shape)})"
                 for k, shape in expected.items() if k in state and state[k].shape != shape]
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                        ("mis-shaped tensors", misshaped)):
        if keys:
            shown = ", ".join(keys[:10]) + (f", ... ({len(keys) - 10} more)" if len(keys) > 10 else "")
            problems.append(f"{len(keys)} {label}: {shown}")
    if problems:
        raise CheckpointError(f"{what} does not match: " + "; ".join(problems))


def num_classes_in(state: Mapping[str, torch.Tensor], default: int = 1000) -> int:
    """The number of classes of a state dict's classifier (``classifier.weight`` rows)."""
    weight = state.get("classifier.weight")
    return weight.shape[0] if weight is not None and weight.dim() == 2 else default


def check_values(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], what: str,
                 allow_nonfinite: bool = False) -> None:
    """Raise `CheckpointError` naming the tensors whose kind is wrong (integers or booleans where the
    model holds floats, or the reverse) or, unless ``allow_nonfinite``, that hold NaN or infinity."""
    wrong_type, nonfinite = [], []
    for key, tensor in state.items():
        want = expected[key].dtype
        if tensor.dtype.is_floating_point != want.is_floating_point or tensor.dtype.is_complex:
            wrong_type.append(f"{key} ({str(tensor.dtype).removeprefix('torch.')}, expected "
                              f"{str(want).removeprefix('torch.')})")
        elif tensor.dtype.is_floating_point and not allow_nonfinite and not torch.isfinite(tensor).all():
            nonfinite.append(key)
    problems = []
    for label, keys in (("tensors of the wrong type", wrong_type), ("tensors holding NaN or infinity", nonfinite)):
        if keys:
            shown = ", ".join(keys[:10]) + (f", ... ({len(keys) - 10} more)" if len(keys) > 10 else "")
            problems.append(f"{len(keys)} {label}: {shown}")
    if problems:
        raise CheckpointError(f"{what} is not usable: " + "; ".join(problems)
                              + (" (pass allow_nonfinite=True to load such weights anyway)" if nonfinite else ""))


def build_with_state(factory: Callable[[], M], state: Mapping[str, torch.Tensor], what: str,
                     allow_nonfinite: bool = False) -> M:
    """Build ``factory()`` on the meta device (no allocation, no init) and load ``state`` into it, strictly.

    Keys, shapes, tensor kinds and (unless ``allow_nonfinite``) finiteness are checked first. The
    tensors are taken as they are (cast to the module's dtypes), so loading costs no copy.
    """
    with torch.device("meta"):
        model = factory()
    expected = model.state_dict()
    check_state_dict(state, {k: v.shape for k, v in expected.items()}, what)
    check_values(state, expected, what, allow_nonfinite)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True, assign=True)
    return model
