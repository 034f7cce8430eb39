"""Typed architecture configs and the AlphaNet search space.

`ArchConfig` names one subnet; `SearchSpace` says which configs exist. Every other
part of the package (layouts, models, the supernet, FLOPs, registry, search) reads
these two and nothing else to learn an architecture.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, fields
from typing import Any, Iterable, Mapping

from ._io import parse_json
from .errors import InputError, InputTypeError
from .schema import from_dict

NUM_MB_STAGES = 7
NUM_WIDTHS = NUM_MB_STAGES + 2  # first conv, seven MB stages, last conv

#: Stage names in order, for the 9 entries of ``width``.
WIDTH_STAGES = ("first_conv", "mb1", "mb2", "mb3", "mb4", "mb5", "mb6", "mb7", "last_conv")
#: Stage names in order, for the 7 entries of ``depth``, ``kernel_size`` and ``expand_ratio``.
MB_STAGES = WIDTH_STAGES[1:-1]
#: The input sides a standalone model may have (`ArchConfig.validate` with ``standalone``): what fine-tuning takes.
MODEL_RESOLUTIONS = (32, 1024)

_ARCH_LENGTHS = {"width": NUM_WIDTHS, "depth": NUM_MB_STAGES, "kernel_size": NUM_MB_STAGES,
                 "expand_ratio": NUM_MB_STAGES}


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never dropping more than 10 %."""
    rounded = max(1, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise InputTypeError(f"ArchConfig.{name} must hold integers, got {value!r}")
    return value


@dataclass(frozen=True)
class ArchConfig:
    """One AlphaNet architecture: input resolution and per-stage width, depth, kernel and expansion.

    ``width`` has 9 entries (first conv, mb1..mb7, last conv); ``depth``, ``kernel_size`` and
    ``expand_ratio`` have 7 (mb1..mb7). Sequences are stored as tuples, so configs hash and compare.
    """

    resolution: int
    width: tuple[int, ...]
    depth: tuple[int, ...]
    kernel_size: tuple[int, ...]
    expand_ratio: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolution", _as_int("resolution", self.resolution))
        for name, length in _ARCH_LENGTHS.items():
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise InputTypeError(f"ArchConfig.{name} must be a sequence of {length} integers, got {value!r}")
            value = tuple(_as_int(name, v) for v in value)
            if len(value) != length:
                stages = WIDTH_STAGES if name == "width" else MB_STAGES
                raise InputError(f"ArchConfig.{name} needs {length} entries ({', '.join(stages)}), "
                                 f"got {len(value)}: {list(value)}")
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict with lists, in the official config's key names."""
        return {"resolution": self.resolution, "width": list(self.width), "depth": list(self.depth),
                "kernel_size": list(self.kernel_size), "expand_ratio": list(self.expand_ratio)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ArchConfig":
        """Build from a dict such as ``to_dict()`` or an official config; unknown keys are an error."""
        if isinstance(data, Mapping):
            # one message for every missing and unknown key: hand-written configs often have several
            names = [f.name for f in fields(cls)]
            missing = [n for n in names if n not in data]
            unknown = sorted(set(data) - set(names), key=str)
            if missing or unknown:
                parts = [f"{what} {', '.join(map(str, keys))}"
                         for what, keys in (("missing", missing), ("unknown", unknown)) if keys]
                raise InputError(f"bad architecture config ({'; '.join(parts)}); expected keys: {', '.join(names)}")
        return from_dict(cls, data, "architecture")

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "ArchConfig":
        return cls.from_dict(parse_json(text, "architecture JSON"))

    def validate(self, space: "SearchSpace | None" = None, *, standalone: bool = False) -> "ArchConfig":
        """Raise ``ValueError`` naming the field, stage and allowed values if outside ``space``.

        ``standalone``: a model on its own, not a subnet of a supernet, whose resolution may be any side in
        `MODEL_RESOLUTIONS` (a model fine-tuned on small images runs at theirs); its layers are the space's.
        """
        (space or SEARCH_SPACE).check(self, standalone=standalone)
        return self


@dataclass(frozen=True)
class StageSpace:
    """Choices of one stage of the space, and the fixed facts of the stage."""

    name: str
    widths: tuple[int, ...]
    depths: tuple[int, ...] = ()
    kernel_sizes: tuple[int, ...] = ()
    expand_ratios: tuple[int, ...] = ()
    stride: int = 1
    use_se: bool = False


@dataclass(frozen=True)
class SearchSpace:
    """The set of architectures a supernet holds: 9 width stages (stem, 7 MB stages, head) and resolutions."""

    stages: tuple[StageSpace, ...]
    resolutions: tuple[int, ...]
    num_classes: int = 1000
    head_expand: int = 6  # the head's 1x1 conv expands width[7] six-fold

    @property
    def mb_stages(self) -> tuple[StageSpace, ...]:
        return self.stages[1:-1]

    def check(self, arch: ArchConfig, *, standalone: bool = False) -> None:
        """Raise ``ValueError`` for the first field of ``arch`` outside the space (``standalone``: any
        resolution in `MODEL_RESOLUTIONS`, see `ArchConfig.validate`)."""
        if not isinstance(arch, ArchConfig):
            raise InputTypeError(f"expected an ArchConfig, got {type(arch).__name__}")
        low, high = MODEL_RESOLUTIONS
        if standalone and not low <= arch.resolution <= high:
            raise InputError(f"resolution {arch.resolution} is outside {low}..{high}, the input sides a model takes")
        if not standalone and arch.resolution not in self.resolutions:
            raise InputError(f"resolution {arch.resolution} is not in the search space; "
                             f"allowed: {list(self.resolutions)}")
        for stage, w in zip(self.stages, arch.width):
            if w not in stage.widths:
                raise InputError(f"width of stage {stage.name} is {w}; allowed: {list(stage.widths)}")
        for name, attr in (("depth", "depths"), ("kernel_size", "kernel_sizes"),
                           ("expand_ratio", "expand_ratios")):
            for stage, v in zip(self.mb_stages, getattr(arch, name)):
                allowed = getattr(stage, attr)
                if v not in allowed:
                    raise InputError(f"{name} of stage {stage.name} is {v}; allowed: {list(allowed)}")

    def contains(self, arch: ArchConfig) -> bool:
        try:
            self.check(arch)
        except InputError:
            return False
        return True

    def _pick(self, choose) -> ArchConfig:
        return ArchConfig(
            resolution=choose(self.resolutions),
            width=[choose(s.widths) for s in self.stages],
            depth=[choose(s.depths) for s in self.mb_stages],
            kernel_size=[choose(s.kernel_sizes) for s in self.mb_stages],
            expand_ratio=[choose(s.expand_ratios) for s in self.mb_stages],
        )

    def smallest(self) -> ArchConfig:
        """The smallest subnet: every choice at its minimum."""
        return self._pick(min)

    def largest(self) -> ArchConfig:
        """The largest subnet: every choice at its maximum."""
        return self._pick(max)

    def sample(self, seed: "int | random.Random | None" = None) -> ArchConfig:
        """A uniformly random subnet; the same integer seed always gives the same config."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        return self._pick(lambda choices: rng.choice(choices))

    def max_depths(self) -> tuple[int, ...]:
        return tuple(max(s.depths) for s in self.mb_stages)


SEARCH_SPACE = SearchSpace(
    stages=(
        StageSpace("first_conv", (16, 24), stride=2),
        StageSpace("mb1", (16, 24), (1, 2), (3, 5), (1,), stride=1, use_se=False),
        StageSpace("mb2", (24, 32), (3, 4, 5), (3, 5), (4, 5, 6), stride=2, use_se=False),
        StageSpace("mb3", (32, 40), (3, 4, 5, 6), (3, 5), (4, 5, 6), stride=2, use_se=True),
        StageSpace("mb4", (64, 72), (3, 4, 5, 6), (3, 5), (4, 5, 6), stride=2, use_se=False),
        StageSpace("mb5", (112, 120, 128), (3, 4, 5, 6, 7, 8), (3, 5), (4, 5, 6), stride=1, use_se=True),
        StageSpace("mb6", (192, 200, 208, 216), (3, 4, 5, 6, 7, 8), (3, 5), (6,), stride=2, use_se=True),
        StageSpace("mb7", (216, 224), (1, 2), (3, 5), (6,), stride=1, use_se=True),
        StageSpace("last_conv", (1792, 1984)),
    ),
    resolutions=(192, 224, 256, 288),
)
"""The AlphaNet / AttentiveNAS search space (``docs/design.md``)."""
