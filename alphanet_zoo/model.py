"""`AlphaNet`: a standalone AlphaNet subnet made of plain ``torch.nn`` layers."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from .config import SEARCH_SPACE, ArchConfig
from .errors import InputError
from .layers import ConvBNAct, MBBlock
from .layout import NetLayout, subnet_layout
from .pretrained import PretrainedMixin
from .record import ModelRecord, Origin
from .registry import resolve_arch

# Drop-connect (stochastic depth) runs in the last two stages only, its rate growing with the
# block's index in the supernet: rate * index / number of supernet blocks.
DROP_CONNECT_STAGES = 2


def drop_connect_rates(depths: Sequence[int], rate: float) -> list[list[float]]:
    """Per-block drop-connect rates of a subnet with ``depths``, indexed as in the supernet."""
    max_depths = SEARCH_SPACE.max_depths()
    total = sum(max_depths)
    rates, offset = [], 0
    for s, (depth, max_depth) in enumerate(zip(depths, max_depths)):
        on = rate > 0 and s >= len(max_depths) - DROP_CONNECT_STAGES
        rates.append([rate * (offset + j) / total if on else 0.0 for j in range(depth)])
        offset += max_depth
    return rates


def _check_num_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")


def _init_linear(linear: nn.Linear) -> None:
    bound = 1.0 / linear.in_features ** 0.5
    nn.init.uniform_(linear.weight, -bound, bound)
    nn.init.zeros_(linear.bias)


class NetworkModules(nn.Module):
    """The module tree of an AlphaNet network, built from a `NetLayout`.

    `AlphaNet` and `Supernet` both are this tree (at subnet and at maximal sizes), so their
    parameters have the same names and a subnet's state dict is a slice of the supernet's.
    """

    def __init__(self, layout: NetLayout, drop_rate: float = 0.0,
                 block_drop_connect: Sequence[Sequence[float]] | None = None) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, layout.stem_channels, 3, stride=2)
        self.stages = nn.ModuleList(
            nn.Sequential(*(MBBlock(b, block_drop_connect[s][j] if block_drop_connect else 0.0)
                            for j, b in enumerate(blocks)))
            for s, blocks in enumerate(layout.stages))
        self.final_expand = ConvBNAct(layout.head_in, layout.head_mid)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_mix = nn.Conv2d(layout.head_mid, layout.head_out, 1, bias=False)
        self.mix_act = nn.SiLU()
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(layout.head_out, layout.num_classes)
        self.num_features = layout.head_out

    def reset_parameters(self) -> None:
        """Fresh initialisation for training from scratch (He fan-out convs, BN 1/0, zero biases)."""
        if self.classifier.weight.is_meta:
            return  # a skeleton, built only for its shapes or to be loaded with assign=True
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
            elif isinstance(m, nn.Linear):
                _init_linear(m)


class AlphaNet(NetworkModules, PretrainedMixin):
    """A standalone AlphaNet subnet: ``AlphaNet("a0")`` or ``AlphaNet(ArchConfig(...))``.

    The forward is pure: it runs on the input as given (resize to ``arch.resolution`` belongs
    to the transform) and returns logits of shape (N, num_classes), also for N = 1.
    Every parameter runs; there are no dead shortcut weights. ``pretrained_cfg`` is the model's
    `ModelRecord` (what the weights are and where they came from); it always fits the model.
    """

    __jit_unused_properties__ = ["pretrained_cfg"]  # TorchScript compiles the forward, not the record

    def __init__(self, arch: ArchConfig | str | Mapping, num_classes: int = 1000, *,
                 drop_rate: float = 0.0, drop_connect_rate: float = 0.0) -> None:
        arch = resolve_arch(arch).validate()
        _check_num_classes(num_classes)
        for name, rate in (("drop_rate", drop_rate), ("drop_connect_rate", drop_connect_rate)):
            if not 0.0 <= rate < 1.0:
                raise InputError(f"{name} must be in [0, 1), got {rate}")
        super().__init__(subnet_layout(arch, num_classes=num_classes), drop_rate,
                         drop_connect_rates(arch.depth, drop_connect_rate))
        self.arch = arch
        self.num_classes = num_classes
        self._record = ModelRecord.create(arch, num_classes, origin=Origin.RANDOM)
        self.reset_parameters()

    @property
    def pretrained_cfg(self) -> ModelRecord:
        """The model's `ModelRecord`: name, labels, preprocessing, metrics, calibration, provenance."""
        return self._record

    @pretrained_cfg.setter
    def pretrained_cfg(self, record: ModelRecord) -> None:
        if not isinstance(record, ModelRecord):
            raise InputError(f"pretrained_cfg must be a ModelRecord, got {type(record).__name__}")
        if record.arch != self.arch or record.num_classes != self.num_classes:
            raise InputError(f"the record describes {record.num_classes} classes of architecture "
                             f"{record.arch.to_dict()}, not this model")
        self._record = record

    def reset_classifier(self, num_classes: int, labels: Sequence[str] | None = None) -> None:
        """Replace the classifier by a freshly initialised one for ``num_classes`` (fine-tuning)."""
        _check_num_classes(num_classes)
        old = self.classifier
        self.classifier = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
        _init_linear(self.classifier)
        self.num_classes = num_classes
        self._record = self._record.with_head(num_classes, labels)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, MB stages and the final 1x1 expansion: (N, 3, H, W) -> (N, 6 * width[7], H/32, W/32)."""
        if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != 3):
            raise ValueError(f"AlphaNet expects a batch of RGB images shaped (N, 3, H, W), "
                             f"got a tensor of shape {list(x.shape)}")
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.final_expand(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pool, feature mix and classifier; ``pre_logits`` returns the (N, width[8]) embedding."""
        x = self.mix_act(self.feature_mix(self.pool(x))).flatten(1)
        x = self.dropout(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def extra_repr(self) -> str:
        return f"arch={self.arch.to_dict()}"
