"""`Supernet`: the weight-sharing AlphaNet supernet, its checkpoints, and subnet extraction.

The supernet is the same module tree as `AlphaNet`, built at the largest size of every
choice. A subnet's weights are leading slices of it (a k x k kernel: the centred slice), so:

- `Supernet.subnet_state_dict(arch)` slices every tensor to the subnet's shapes;
- `Supernet.extract(arch)` loads a copy of that slice into an `AlphaNet` (strict);
- `Supernet.forward(x, arch)` runs the subnet's own module tree on the sliced tensors
  (``torch.func.functional_call``), so the supernet has no second forward to keep in step.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch.func import functional_call

from ._io import atomic_path, save_safetensors
from .checkpoint import (CheckpointError, build_with_state, from_official, is_official_layout, num_classes_in,
                         read_state_dict)
from .config import SEARCH_SPACE, ArchConfig
from .errors import InputError
from .layout import supernet_layout
from .model import AlphaNet, NetworkModules
from .record import ModelRecord, Origin
from .registry import resolve_arch

SUPERNET_FORMAT = "alphanet_zoo.supernet/1"


def slice_tensor(tensor: torch.Tensor, shape: torch.Size, name: str = "tensor") -> torch.Tensor:
    """The sub-tensor of ``shape``: leading along every dim, centred along a conv kernel's H and W."""
    if tensor.dim() != len(shape):
        raise InputError(f"cannot slice {name} of shape {list(tensor.shape)} to {list(shape)}")
    index = []
    for dim, (have, want) in enumerate(zip(tensor.shape, shape)):
        if want > have:
            raise InputError(f"cannot slice {name} of shape {list(tensor.shape)} to {list(shape)}")
        start = (have - want) // 2 if tensor.dim() == 4 and dim >= 2 else 0
        index.append(slice(start, start + want))
    return tensor[tuple(index)]


def slice_state_dict(state: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Slice each tensor of ``state`` named in ``shapes`` to its shape (views, gradients flow)."""
    missing = [k for k in shapes if k not in state]
    if missing:
        raise InputError(f"the supernet has no tensors named {', '.join(missing)}")
    return {k: slice_tensor(state[k], shape, k) for k, shape in shapes.items()}


#: How the record of an extracted subnet words its source (code tests ``record.origin``, never this text).
EXTRACTED_FROM = "extracted from "


@dataclass(frozen=True)
class _Skeleton:
    """A subnet's module tree on the meta device (no memory) and the shapes of its tensors."""

    net: AlphaNet
    shapes: dict[str, torch.Size]
    buffers: frozenset[str]


@functools.lru_cache(maxsize=64)
def _skeleton(arch: ArchConfig, num_classes: int, drop_rate: float = 0.0,
              drop_connect_rate: float = 0.0) -> _Skeleton:
    with torch.device("meta"):
        net = AlphaNet(arch, num_classes, drop_rate=drop_rate, drop_connect_rate=drop_connect_rate)
    return _Skeleton(net, {k: v.shape for k, v in net.state_dict().items()},
                     frozenset(k for k, _ in net.named_buffers()))


class Supernet(NetworkModules):
    """The AlphaNet weight-sharing supernet over `SEARCH_SPACE`.

    ``supernet(x, arch)`` runs subnet ``arch`` on ``x`` as given (resize it to
    ``arch.resolution`` first, as the training pipeline does). In training mode BatchNorm
    uses batch statistics and leaves the supernet's running statistics untouched; subnets are
    BN-calibrated after extraction (`calibrate_bn`).
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__(supernet_layout(SEARCH_SPACE, num_classes=num_classes))
        self.space = SEARCH_SPACE
        self.num_classes = num_classes
        self.source = "a randomly initialised supernet"  # what extracted subnets' records name as their source
        self.reset_parameters()

    def _arch(self, arch: ArchConfig | str | Mapping) -> ArchConfig:
        return resolve_arch(arch).validate(self.space)

    def subnet_state_dict(self, arch: ArchConfig | str | Mapping) -> dict[str, torch.Tensor]:
        """The state dict of subnet ``arch`` as views into the supernet (not copies)."""
        return slice_state_dict(self.state_dict(keep_vars=True),
                                _skeleton(self._arch(arch), self.num_classes).shapes)

    def extract(self, arch: ArchConfig | str | Mapping) -> AlphaNet:
        """A standalone `AlphaNet` holding a copy of subnet ``arch``'s weights, in eval mode.

        Its BatchNorm statistics are the supernet's, which do not fit the subnet: its record says it
        is not calibrated until `calibrate_bn` has run and the record was updated.
        """
        arch = self._arch(arch)
        with torch.device("meta"):
            model = AlphaNet(arch, self.num_classes)
        state = slice_state_dict(self.state_dict(), _skeleton(arch, self.num_classes).shapes)
        model.load_state_dict({k: v.clone(memory_format=torch.contiguous_format) for k, v in state.items()},
                              strict=True, assign=True)
        model.pretrained_cfg = ModelRecord.create(arch, self.num_classes, origin=Origin.EXTRACTED,
                                                  source=f"{EXTRACTED_FROM}{self.source}")
        return model.eval()

    def forward(self, x: torch.Tensor, arch: ArchConfig | str | Mapping, *, drop_rate: float = 0.0,
                drop_connect_rate: float = 0.0) -> torch.Tensor:
        """Logits of subnet ``arch`` on ``x`` (no resize); dropout and drop-connect apply in training."""
        skeleton = _skeleton(self._arch(arch), self.num_classes, float(drop_rate), float(drop_connect_rate))
        skeleton.net.train(self.training)
        tensors = slice_state_dict(self.state_dict(keep_vars=True), skeleton.shapes)
        if self.training:
            # BatchNorm would update running statistics in place: give it scratch copies.
            for key in skeleton.buffers:
                tensors[key] = tensors[key].clone()
        return functional_call(skeleton.net, tensors, (x,))

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "Supernet":
        """Load a supernet checkpoint: the official release layout or this package's own.

        The official layout is ``{'state_dict': {'module.<key>': tensor}}`` (1468 entries); its
        ``bn_tracking`` buffers and never-run shortcut convs are skipped on purpose
        (`checkpoint.OFFICIAL_SKIPPED`). Anything else missing, unexpected or mis-shaped is an error.
        """
        return cls.from_state_dict(read_state_dict(path, map_location), what=f"supernet checkpoint {path}",
                                   source=Path(path).name)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], what: str = "supernet state dict",
                        source: str | None = None) -> "Supernet":
        """A supernet holding ``state`` (official layout or ours; a ``module.`` prefix is ignored).

        ``source`` names the checkpoint in the records of extracted subnets.
        """
        state = cls._own_names(state)
        supernet = build_with_state(lambda: cls(num_classes_in(state)), state, what)
        supernet.source = f"the supernet checkpoint {source}" if source else what
        return supernet

    @staticmethod
    def _own_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if is_official_layout(state):
            return from_official(state)[0]
        return {k.removeprefix("module."): v for k, v in state.items()}

    @classmethod
    def is_supernet_state(cls, state: Mapping[str, torch.Tensor]) -> bool:
        """True if ``state`` has the supernet's keys (any layout), as opposed to a subnet's."""
        if is_official_layout(state):
            return True
        with torch.device("meta"):
            expected = cls().state_dict().keys()
        return set(cls._own_names(state)) == set(expected)

    def save(self, path: str | os.PathLike) -> None:
        """Write the supernet as ``.safetensors`` (atomically); `from_checkpoint` reads it back."""
        if not str(path).endswith(".safetensors"):
            raise InputError(f"save the supernet to a .safetensors file, got {path}")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(path) as tmp:
            save_safetensors(state, tmp, {"format": SUPERNET_FORMAT, "num_classes": str(self.num_classes)})


__all__ = ["Supernet", "slice_state_dict", "slice_tensor", "CheckpointError"]
