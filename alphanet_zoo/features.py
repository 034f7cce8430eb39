"""`AlphaNetFeatures`: an AlphaNet backbone that returns its feature maps (timm's ``features_only``).

    >>> features = alphanet_zoo.load("a0", features_only=True)     # strides 4, 8, 16, 32
    >>> maps = features(images)                                    # a list of (N, C, H/s, W/s)
    >>> features.feature_info.channels(), features.feature_info.reduction()

It holds the model's own ``stem`` and the ``stages`` up to the last tap, under the same names,
so its state dict is a slice of the model's (and of the supernet's).
"""
# Annotations stay objects (no `from __future__ import annotations`): torch.fx copies forward's into the
# traced code, which TorchScript must then read.
from typing import Sequence

import torch
import torch.fx
from torch import nn

from .feature_info import DEFAULT_OUT_INDICES, TAP_STAGES, FeatureInfo, take_indices
from .model import AlphaNet, StageTaps
from .record import ModelRecord


class AlphaNetFeatures(nn.Module, StageTaps):
    """The feature maps of ``model`` at the taps ``out_indices`` (`alphanet_zoo.feature_info`).

    Its forward is ``model.forward_intermediates(x, out_indices, intermediates_only=True,
    stop_early=True)``: the same loop (`StageTaps`) on the same modules, shared with ``model``, not
    copied. The default ``out_indices`` are the maps at strides 4 to 32, not every tap as in
    ``forward_intermediates``: `alphanet_zoo.feature_info.DEFAULT_OUT_INDICES` says why.
    ``feature_info`` is a `FeatureInfo`; ``pretrained_cfg`` the model's `ModelRecord`,
    ``default_cfg`` the same in timm's words.
    """

    __jit_unused_properties__ = ["pretrained_cfg", "default_cfg"]

    def __init__(self, model: AlphaNet, out_indices: Sequence[int] = DEFAULT_OUT_INDICES) -> None:
        super().__init__()
        taken, last = take_indices(len(TAP_STAGES), out_indices)
        if len(model.stages) < TAP_STAGES[last]:
            raise ValueError(f"the model was pruned to {len(model.stages)} stages; tap {last} needs "
                             f"{TAP_STAGES[last]}")
        self.stem = model.stem
        self.stages = nn.ModuleList(model.stages[:TAP_STAGES[last]])
        self.tap_stages = [TAP_STAGES[i] for i in taken]
        self.out_indices = tuple(taken)
        self.arch = model.arch
        self.feature_info = FeatureInfo(model.feature_info, taken)
        self.grad_checkpointing = model.grad_checkpointing
        self._record = model.pretrained_cfg
        self.train(model.training)

    @property
    def pretrained_cfg(self) -> ModelRecord:
        """The `ModelRecord` of the weights (their classifier is not part of this module)."""
        return self._record

    @property
    def default_cfg(self) -> dict:
        return self._record.timm_cfg()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._forward_stages(x, self.tap_stages, len(self.stages))[1]

    def extra_repr(self) -> str:
        return f"out_indices={list(self.out_indices)}, reduction={self.feature_info.reduction()}"
