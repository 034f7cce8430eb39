"""`AlphaNet`: a standalone AlphaNet subnet made of plain ``torch.nn`` layers."""
# Annotations stay objects (no `from __future__ import annotations`): torch.fx copies forward's into the
# traced code, which TorchScript must then read.
from typing import List, Mapping, Sequence

import torch
import torch.fx
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import SEARCH_SPACE, ArchConfig
from .errors import InputError
from .feature_info import TAP_STAGES, feature_dicts, take_indices
from .layers import ConvBNAct, MBBlock
from .layout import NetLayout, subnet_layout
from .preprocessing import Preprocessing
from .pretrained import PretrainedMixin
from .record import ModelRecord, Origin
from .registry import resolve_arch

#: The classifier's global pooling: "avg" (pool and flatten) or "" (no pooling; needs num_classes=0).
GLOBAL_POOLS = ("avg", "")

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


def check_num_classes(num_classes: int) -> None:
    """InputError unless ``num_classes`` is a class count (0: no classifier)."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        raise InputError(f"num_classes must be a positive integer (or 0: no classifier), got {num_classes!r}")


def _check_global_pool(global_pool: str, num_classes: int) -> None:
    if global_pool not in GLOBAL_POOLS:
        raise InputError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")
    if global_pool == "" and num_classes:
        raise InputError("an unpooled head (global_pool='') has no classifier: give num_classes=0")


# A leaf for torch.fx: symbolic tracing records the call instead of branching on a traced shape.
@torch.fx.wrap
def check_image_batch(x: torch.Tensor) -> torch.Tensor:
    """``x`` when it is a batch of RGB images (N, 3, H, W); ValueError otherwise."""
    if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != 3):
        raise ValueError(f"AlphaNet expects a batch of RGB images shaped (N, 3, H, W), "
                         f"got a tensor of shape {list(x.shape)}")
    return x


def _classifier(in_features: int, num_classes: int, like: torch.Tensor) -> nn.Module:
    """A fresh classifier on the device and dtype of ``like`` (Identity for no classes)."""
    if not num_classes:
        return nn.Identity()
    linear = nn.Linear(in_features, num_classes, device=like.device, dtype=like.dtype)
    _init_linear(linear)
    return linear


def _init_linear(linear: nn.Linear) -> None:
    bound = 1.0 / linear.in_features ** 0.5
    nn.init.uniform_(linear.weight, -bound, bound)
    nn.init.zeros_(linear.bias)


class StageTaps:
    """The one loop over the MB stages, tapping feature maps on the way: `AlphaNet` (`forward_features`,
    `forward_intermediates`) and `AlphaNetFeatures` (its forward) run it on their ``stem`` and ``stages``."""

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each MB stage's activations in the backward pass instead of keeping them."""
        self.grad_checkpointing = enable

    def _forward_stages(self, x: torch.Tensor, tap_stages: List[int], run: int
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The output of the stem and the first ``run`` stages, and the maps after each stage counted
        (from 1) in ``tap_stages``, in stage order."""
        x = self.stem(check_image_batch(x))
        maps: list[torch.Tensor] = []
        for s, stage in enumerate(self.stages):
            if s < run:
                if not torch.jit.is_scripting() and self.grad_checkpointing and torch.is_grad_enabled():
                    x = checkpoint(stage, x, use_reentrant=False)  # not in TorchScript, which skips this branch
                else:
                    x = stage(x)
                if s + 1 in tap_stages:
                    maps.append(x)
        return x, maps


class NetworkModules(nn.Module):
    """The module tree of an AlphaNet network, built from a `NetLayout`.

    `AlphaNet` and `Supernet` both are this tree (at subnet and at maximal sizes), so their
    parameters have the same names and a subnet's state dict is a slice of the supernet's.
    """

    def __init__(self, layout: NetLayout) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, layout.stem_channels, 3, stride=2)
        self.stages = nn.ModuleList(nn.Sequential(*(MBBlock(b) for b in blocks)) for blocks in layout.stages)
        self.final_expand = ConvBNAct(layout.head_in, layout.head_mid)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_mix = nn.Conv2d(layout.head_mid, layout.head_out, 1, bias=False)
        self.mix_act = nn.SiLU()
        self.dropout = nn.Dropout(0.0)
        self.classifier = nn.Linear(layout.head_out, layout.num_classes) if layout.num_classes else nn.Identity()
        self.num_features = layout.head_mid  # channels of forward_features (timm's meaning)
        self.head_hidden_size = layout.head_out  # the pre-logits embedding

    def reset_parameters(self) -> None:
        """Fresh initialisation for training from scratch (He fan-out convs, BN 1/0, zero biases)."""
        if self.feature_mix.weight.is_meta:
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


class AlphaNet(NetworkModules, StageTaps, PretrainedMixin):
    """A standalone AlphaNet subnet: ``AlphaNet("a0")`` or ``AlphaNet(ArchConfig(...))``.

    The forward is pure: it runs on the input as given (resize to ``arch.resolution`` belongs
    to the transform) and returns logits of shape (N, num_classes), also for N = 1.
    Every parameter runs; there are no dead shortcut weights. ``pretrained_cfg`` is the model's
    `ModelRecord` (what the weights are and where they came from); it always fits the model, and
    ``default_cfg`` says it as timm's dict.

    timm's model interface: ``num_classes=0`` has no classifier (the forward returns the
    ``head_hidden_size`` embedding), ``global_pool=""`` keeps the head unpooled; ``num_features``
    is the width of `forward_features`; ``feature_info`` lists the feature taps
    (`alphanet_zoo.feature_info`); `forward_intermediates`, `prune_intermediate_layers`,
    `set_grad_checkpointing`, `get_classifier` and `reset_classifier` behave as timm's.
    """

    # TorchScript compiles the forward, not the record
    __jit_unused_properties__ = ["pretrained_cfg", "default_cfg"]

    def __init__(self, arch: ArchConfig | str | Mapping, num_classes: int = 1000, *,
                 drop_rate: float = 0.0, drop_connect_rate: float = 0.0, global_pool: str = "avg") -> None:
        arch = resolve_arch(arch).validate(standalone=True)
        check_num_classes(num_classes)
        _check_global_pool(global_pool, num_classes)
        super().__init__(subnet_layout(arch, num_classes=num_classes))
        self.arch = arch
        self.set_drop_rates(drop_rate, drop_connect_rate)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.flatten = global_pool != ""
        self.pool = nn.AdaptiveAvgPool2d(1) if self.flatten else nn.Identity()
        self.feature_info = feature_dicts(subnet_layout(arch))
        self.grad_checkpointing = False
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

    @property
    def default_cfg(self) -> dict:
        """The record in timm's ``pretrained_cfg`` vocabulary (input_size, crop_pct, mean, std, ...)."""
        return self._record.timm_cfg()

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None, *,
                         labels: Sequence[str] | None = None) -> None:
        """Replace the classifier by a freshly initialised one for ``num_classes`` (fine-tuning).

        ``num_classes=0`` removes it; ``global_pool`` ("avg" or "") changes the pooling as timm's does.
        """
        check_num_classes(num_classes)
        pool = self.global_pool if global_pool is None else global_pool
        _check_global_pool(pool, num_classes)
        self.global_pool, self.flatten = pool, pool != ""
        self.pool = nn.AdaptiveAvgPool2d(1) if self.flatten else nn.Identity()
        self.classifier = _classifier(self.head_hidden_size, num_classes, self.stem.conv.weight)
        self.num_classes = num_classes
        self._record = self._record.with_head(num_classes, labels)

    def set_drop_rates(self, drop_rate: float = 0.0, drop_connect_rate: float = 0.0) -> None:
        """Dropout before the classifier and drop-connect in the last two stages (see `drop_connect_rates`),
        active in training mode; the weights stay as they are."""
        for name, rate in (("drop_rate", drop_rate), ("drop_connect_rate", drop_connect_rate)):
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
                raise InputError(f"{name} must be in [0, 1), got {rate!r}")
        self.dropout.p = float(drop_rate)
        for stage, rates in zip(self.stages, drop_connect_rates(self.arch.depth, drop_connect_rate)):
            for block, rate in zip(stage, rates):
                block.drop_connect_rate = rate

    def set_resolution(self, resolution: int, preprocessing: Preprocessing | None = None) -> None:
        """Take inputs of side ``resolution`` (fine-tuning at another size): the architecture and the record
        say it, with ``preprocessing`` (see `ModelRecord.with_resolution`); no layer depends on it."""
        record = self._record.with_resolution(resolution, preprocessing)
        self.arch, self._record = record.arch, record

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, MB stages and the final 1x1 expansion: (N, 3, H, W) -> (N, 6 * width[7], H/32, W/32)."""
        x, _ = self._forward_stages(x, torch.jit.annotate(List[int], []), len(self.stages))
        return self.final_expand(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pool, feature mix and classifier; ``pre_logits`` returns the (N, width[8]) embedding."""
        x = self.mix_act(self.feature_mix(self.pool(x)))
        if self.flatten:
            x = x.flatten(1)
        x = self.dropout(x)
        return x if pre_logits else self.classifier(x)

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature maps at the taps ``indices`` (timm's convention: None all, n the last n, or a list),
        in ascending tap order, and the `forward_features` output: ``(final, [maps])``, or only ``[maps]``.

        The default is every tap, strides 2 to 32, as timm's ``forward_intermediates``; a features
        model's default leaves out the stride-2 map (`alphanet_zoo.feature_info.DEFAULT_OUT_INDICES`
        says why). ``stop_early`` (with ``intermediates_only``) runs no stage past the last tap;
        ``norm`` changes nothing (AlphaNet has no final norm layer); ``output_fmt`` is "NCHW" only.
        """
        if output_fmt != "NCHW":
            raise InputError(f"AlphaNet's feature maps are NCHW, not {output_fmt!r}")
        if stop_early and not intermediates_only:
            raise InputError("stop_early needs intermediates_only=True (the final features need every stage)")
        taken, last = take_indices(len(TAP_STAGES), indices)
        run = TAP_STAGES[last] if stop_early else len(self.stages)
        x, intermediates = self._forward_stages(x, [TAP_STAGES[i] for i in taken], run)
        if intermediates_only:
            return intermediates
        return self.final_expand(x), intermediates

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages past the last tap in ``indices`` (and with ``prune_head`` the head); the taps kept.

        Past a pruned stage `forward_features` returns the last kept stage's output.
        """
        taken, last = take_indices(len(TAP_STAGES), indices)
        keep = TAP_STAGES[last]
        if keep < len(self.stages):
            self.stages = self.stages[:keep]
            self.final_expand = nn.Identity()
        if prune_head:
            self.final_expand = nn.Identity()
            self.feature_mix, self.mix_act = nn.Identity(), nn.Identity()
            self.head_hidden_size = self.num_features = self.feature_info[last]["num_chs"]
            self.reset_classifier(0, "")
        return taken

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def extra_repr(self) -> str:
        return f"arch={self.arch.to_dict()}"
