"""The published AlphaNet models: names, aliases, configs and the paper's numbers.

One `ModelInfo` per model. `get_arch` and `resolve_arch` turn a name, alias, dict or
`ArchConfig` into a validated `ArchConfig`.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Mapping

from . import cost
from .config import ArchConfig
from .errors import InputError, InputTypeError

PAPER = "AlphaNet: Improved Training of Supernets with Alpha-Divergence (Wang et al., ICML 2021), arXiv:2102.07954"
PAPER_URL = "https://arxiv.org/abs/2102.07954"
WEIGHTS_LICENSE = "cc-by-nc-4.0"
HUB_ORG = "alphanet-zoo"


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's standalone weights live on the Hugging Face Hub, and how they were made.

    ``revision`` (a commit id) and ``sha256`` (of ``model.safetensors``) are pinned when the weights
    are published; until then they are empty, downloads follow ``main`` and are checked against
    the Hub's own content hash (the LFS etag).
    """

    hub_repo: str
    revision: str = ""
    sha256: str = ""
    filename: str = "model.safetensors"
    license: str = WEIGHTS_LICENSE
    source: str = ("the authors' supernet alphanet_pretrained.pth.tar, extracted and BN-calibrated "
                   "(64 batches of 256 ImageNet training images, seed 0) with alphanet-extract")


@dataclass(frozen=True)
class ModelInfo:
    """A published AlphaNet model: its config and what the paper reports for it."""

    name: str
    arch: ArchConfig
    official_key: str  # key of the config in the official code (``a5_1`` for a5_base)
    official_name: str  # name in the official README (``alphanet_a5_base``)
    published_mflops: int  # the paper's table (rounded)
    published_top1: float  # ImageNet top-1 %, from the paper
    published_top5: float | None = None  # not published for these models
    aliases: tuple[str, ...] = ()

    @property
    def mflops(self) -> float:
        """The analytic counter's MFLOPs (paper convention): derived from ``arch``, never stored."""
        return cost.mflops(self.arch)

    @property
    def params(self) -> int:
        """Parameters of the standalone model (no dead weights): derived from ``arch``, never stored."""
        return cost.params(self.arch)

    @property
    def weights(self) -> WeightsInfo:
        return WeightsInfo(hub_repo=f"{HUB_ORG}/{hub_repo_name(self.name)}",
                           **_PUBLISHED_WEIGHTS.get(self.name, {}))


def hub_repo_name(name: str) -> str:
    """The Hub repository name of a model's weights, under an organisation: ``alphanet-a5-base``."""
    return f"alphanet-{name.replace('_', '-')}"


# Pins of published weights by model name: {"revision": commit id, "sha256": of model.safetensors}.
# Empty until the weights are uploaded (alphanet-extract ... --push).
_PUBLISHED_WEIGHTS: dict[str, dict[str, str]] = {}


def _arch(resolution, width, kernel_size, expand_ratio, depth) -> ArchConfig:
    return ArchConfig(resolution=resolution, width=width, depth=depth, kernel_size=kernel_size,
                      expand_ratio=expand_ratio)


_MODELS = (
    ModelInfo("a0", _arch(192, [16, 16, 24, 32, 64, 112, 192, 216, 1792], [3, 3, 3, 3, 3, 3, 3],
                          [1, 4, 4, 4, 4, 6, 6], [1, 3, 3, 3, 3, 3, 1]),
              "a0", "alphanet_a0", 203, 77.87),
    ModelInfo("a1", _arch(224, [16, 16, 24, 32, 64, 112, 192, 216, 1984], [3, 3, 3, 5, 3, 5, 3],
                          [1, 4, 4, 4, 4, 6, 6], [1, 3, 3, 3, 3, 3, 1]),
              "a1", "alphanet_a1", 279, 78.94),
    ModelInfo("a2", _arch(224, [16, 16, 24, 32, 64, 112, 200, 224, 1984], [3, 3, 3, 3, 3, 5, 3],
                          [1, 4, 5, 4, 4, 6, 6], [1, 3, 3, 3, 3, 4, 1]),
              "a2", "alphanet_a2", 317, 79.20),
    ModelInfo("a3", _arch(224, [16, 16, 24, 32, 64, 112, 208, 224, 1984], [3, 3, 3, 5, 3, 3, 3],
                          [1, 4, 4, 4, 4, 6, 6], [2, 3, 3, 4, 3, 5, 1]),
              "a3", "alphanet_a3", 357, 79.41),
    ModelInfo("a4", _arch(256, [16, 16, 24, 32, 64, 112, 192, 216, 1984], [3, 3, 3, 5, 3, 5, 3],
                          [1, 4, 4, 5, 4, 6, 6], [1, 3, 3, 4, 3, 5, 1]),
              "a4", "alphanet_a4", 444, 80.01),
    ModelInfo("a5", _arch(256, [16, 16, 24, 32, 64, 112, 208, 216, 1984], [3, 3, 3, 3, 3, 5, 3],
                          [1, 4, 4, 5, 4, 6, 6], [1, 3, 3, 4, 4, 5, 1]),
              "a5", "alphanet_a5_small", 491, 80.29, aliases=("a5_small",)),
    ModelInfo("a5_base", _arch(288, [16, 16, 24, 32, 64, 112, 200, 216, 1984], [3, 3, 5, 5, 3, 3, 3],
                               [1, 4, 4, 4, 5, 6, 6], [2, 3, 4, 3, 3, 5, 1]),
              "a5_1", "alphanet_a5_base", 596, 80.62, aliases=("a5_1",)),
    ModelInfo("a6", _arch(288, [16, 16, 24, 32, 64, 112, 216, 224, 1984], [3, 3, 3, 3, 3, 5, 3],
                          [1, 4, 6, 5, 4, 6, 6], [1, 3, 3, 4, 4, 6, 1]),
              "a6", "alphanet_a6", 709, 80.78),
)

MODELS: dict[str, ModelInfo] = {m.name: m for m in _MODELS}
_ALIASES: dict[str, str] = {alias: m.name for m in _MODELS for alias in (m.name, *m.aliases)}
_BY_ARCH: dict[ArchConfig, str] = {m.arch: m.name for m in _MODELS}


def list_models() -> list[str]:
    """Names of the published models, smallest first."""
    return list(MODELS)


def _normalise(name: str) -> str:
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return re.sub(r"^alphanet_", "", key)


def model_info(name: str) -> ModelInfo:
    """The record of a published model by name or alias (``a5_small``, ``a5_1``, ``AlphaNet-A5``, any case)."""
    if not isinstance(name, str):
        raise InputTypeError(f"a model name must be a string, got {type(name).__name__}")
    try:
        return MODELS[_ALIASES[_normalise(name)]]
    except KeyError:
        raise InputError(unknown_model_message(name)) from None


def unknown_model_message(name: str) -> str:
    """``unknown model 'a9'; known: a0, ... (aliases: ...)``, with ``did you mean ...?`` for a near miss."""
    aliases = sorted(set(_ALIASES) - set(MODELS))
    message = f"unknown model {name!r}; known: {', '.join(MODELS)} (aliases: {', '.join(aliases)})"
    close = difflib.get_close_matches(_normalise(name), list(_ALIASES), n=1)
    return message + (f"; did you mean {close[0]!r}?" if close else "")


def get_arch(name: str) -> ArchConfig:
    """The `ArchConfig` of a published model, by name or alias."""
    return model_info(name).arch


def name_of(arch: ArchConfig) -> str | None:
    """The registry name of a published architecture, or None for any other."""
    return _BY_ARCH.get(arch)


def resolve_arch(arch: ArchConfig | str | Mapping[str, Any]) -> ArchConfig:
    """An `ArchConfig` from a config, a model name or alias, or a config dict."""
    if isinstance(arch, ArchConfig):
        return arch
    if isinstance(arch, str):
        return get_arch(arch)
    if isinstance(arch, Mapping):
        return ArchConfig.from_dict(arch)
    raise InputTypeError(f"expected an ArchConfig, a model name or a config dict, got {type(arch).__name__}")
