"""Drawing, mutating and crossing subnets of the search space, under a FLOPs budget.

FLOPs come from the analytic counter (`alphanet_zoo.count_flops`, cached), so a draw costs
microseconds. Uniform draws from the space rarely land below ~300 MFLOPs (the smallest subnet
has 203), so `sample_at_flops` falls back on a random descent toward the target when plain
rejection sampling does not find one quickly.
"""
from __future__ import annotations

import random
from dataclasses import fields
from typing import Callable

from ..config import SEARCH_SPACE, ArchConfig, SearchSpace
from ..errors import InputError
from ..flops import count_flops

_FIELDS = tuple(f.name for f in fields(ArchConfig))
# (field, index into the field or None for resolution)
Gene = tuple[str, "int | None"]

_REJECTION_DRAWS = 256  # uniform draws tried before the guided descent
_DESCENT_PROPOSALS = 2000  # proposals per descent before it restarts from a fresh draw
_RESTARTS = 50


def genes(space: SearchSpace = SEARCH_SPACE) -> list[tuple[Gene, tuple[int, ...]]]:
    """Every choice of the space that has more than one option, with its options."""
    out: list[tuple[Gene, tuple[int, ...]]] = [(("resolution", None), tuple(space.resolutions))]
    out += [(("width", i), s.widths) for i, s in enumerate(space.stages)]
    for field, attr in (("depth", "depths"), ("kernel_size", "kernel_sizes"), ("expand_ratio", "expand_ratios")):
        out += [((field, i), getattr(s, attr)) for i, s in enumerate(space.mb_stages)]
    return [(gene, options) for gene, options in out if len(options) > 1]


def _get(arch: ArchConfig, gene: Gene) -> int:
    field, index = gene
    value = getattr(arch, field)
    return value if index is None else value[index]


def _set(arch: ArchConfig, gene: Gene, value: int) -> ArchConfig:
    # ``arch`` is valid and ``value`` one of the gene's options: the copy skips ArchConfig's checks,
    # which took most of a search's drawing time
    field, index = gene
    value = int(value)
    if index is not None:
        values = list(getattr(arch, field))
        values[index] = int(value)
        value = tuple(values)
    child = object.__new__(ArchConfig)
    for name in _FIELDS:
        object.__setattr__(child, name, value if name == field else getattr(arch, name))
    return child


def flops_range(space: SearchSpace = SEARCH_SPACE) -> tuple[float, float]:
    """MFLOPs of the smallest and the largest subnet."""
    return count_flops(space.smallest()), count_flops(space.largest())


def _check_band(low: float, high: float, space: SearchSpace) -> None:
    smallest, largest = flops_range(space)
    if high < smallest or low > largest:
        raise InputError(f"no subnet has between {low:.2f} and {high:.2f} MFLOPs: the search space spans "
                         f"{smallest:.2f} (smallest) to {largest:.2f} MFLOPs (largest)")
    if low > high:
        raise InputError(f"empty FLOPs range: {low:.2f} > {high:.2f}")


def _descend(start: ArchConfig, distance: Callable[[ArchConfig], float], rng: random.Random,
             space: SearchSpace, proposals: int = _DESCENT_PROPOSALS) -> ArchConfig | None:
    """Random single-choice changes (at most ``proposals``), each kept if it brings ``distance`` (0: inside
    the budget) closer to 0; None if it did not get there."""
    table = genes(space)
    arch, gap = start, distance(start)
    for _ in range(proposals):
        if gap == 0.0:
            return arch
        gene, options = rng.choice(table)
        candidate = _set(arch, gene, rng.choice([o for o in options if o != _get(arch, gene)]))
        candidate_gap = distance(candidate)
        if candidate_gap < gap:
            arch, gap = candidate, candidate_gap
    return arch if gap == 0.0 else None


def _flops_distance(low: float, high: float) -> Callable[[ArchConfig], float]:
    def distance(arch: ArchConfig) -> float:
        f = count_flops(arch)
        return low - f if f < low else f - high if f > high else 0.0

    return distance


def sample_where(distance: Callable[[ArchConfig], float], rng: random.Random, space: SearchSpace = SEARCH_SPACE,
                 what: str = "the budget") -> ArchConfig:
    """A random subnet with ``distance(arch) == 0`` (inside a budget; positive: how far outside).

    Uniform over such subnets when plain rejection sampling finds one within a few hundred draws;
    otherwise the result of a random descent from a uniform draw.
    """
    for _ in range(_REJECTION_DRAWS):
        arch = space.sample(rng)
        if distance(arch) == 0.0:
            return arch
    for _ in range(_RESTARTS):
        arch = _descend(space.sample(rng), distance, rng, space)
        if arch is not None:
            return arch
    raise InputError(f"found no subnet inside {what}; widen it")


def descend_into(distance: Callable[[ArchConfig], float], rng: random.Random, space: SearchSpace = SEARCH_SPACE,
                 what: str = "the budget") -> ArchConfig:
    """A subnet with ``distance(arch) == 0`` reached by a random descent from a uniform draw: not
    uniform over such subnets, but fast for a narrow band (a 10-MFLOPs bin) where rejection
    sampling rarely hits."""
    for _ in range(_RESTARTS):
        arch = _descend(space.sample(rng), distance, rng, space)
        if arch is not None:
            return arch
    raise InputError(f"found no subnet inside {what}; widen it")


def sample_in_range(low: float, high: float, rng: random.Random, space: SearchSpace = SEARCH_SPACE) -> ArchConfig:
    """A random subnet with ``low <= MFLOPs <= high`` (see `sample_where`)."""
    _check_band(low, high, space)
    return sample_where(_flops_distance(low, high), rng, space, f"{low:.2f}..{high:.2f} MFLOPs")


def sample_at_flops(target: float, tolerance: float = 10.0, seed: int | random.Random | None = None, *,
                    space: SearchSpace = SEARCH_SPACE) -> ArchConfig:
    """A random subnet whose MFLOPs (the paper's count) are within ``tolerance`` of ``target``.

    The same integer ``seed`` gives the same subnet. ``ValueError`` if no subnet can be that size.

        >>> arch = sample_at_flops(300, tolerance=5, seed=0)
        >>> abs(count_flops(arch) - 300) <= 5
        True
    """
    if tolerance < 0:
        raise InputError(f"tolerance must be >= 0 MFLOPs, got {tolerance}")
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    return sample_in_range(target - tolerance, target + tolerance, rng, space)


def mutate(arch: ArchConfig, rng: random.Random, prob: float = 0.1, space: SearchSpace = SEARCH_SPACE) -> ArchConfig:
    """Redraw each choice of ``arch`` uniformly with probability ``prob``."""
    for gene, options in genes(space):
        if rng.random() < prob:
            arch = _set(arch, gene, rng.choice(options))
    return arch


def crossover(a: ArchConfig, b: ArchConfig, rng: random.Random, space: SearchSpace = SEARCH_SPACE) -> ArchConfig:
    """Each choice taken from ``a`` or ``b`` with equal probability."""
    child = a
    for gene, _ in genes(space):
        if rng.random() < 0.5:
            child = _set(child, gene, _get(b, gene))
    return child
