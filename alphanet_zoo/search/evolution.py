"""Evolutionary search for the most accurate subnet inside a FLOPs range.

Regularised to the usual recipe of supernet NAS (OFA, AttentiveNAS): a population drawn inside
the range; each generation keeps the best quarter as parents and refills the population with
mutants and crossovers of them, every child inside the range too. Accuracy comes from a callable
(`SubnetEvaluator` on real images); each architecture is evaluated once.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..config import SEARCH_SPACE, ArchConfig, SearchSpace
from ..errors import InputError
from ..flops import count_flops
from .sampling import crossover, flops_range, mutate, sample_in_range


@dataclass(frozen=True)
class Candidate:
    """An evaluated subnet: its config, MFLOPs (paper's count) and accuracy (top-1 %)."""

    arch: ArchConfig
    mflops: float
    top1: float

    def to_dict(self) -> dict:
        return {"mflops": round(self.mflops, 4), "top1": self.top1, "arch": self.arch.to_dict()}


def pareto_front(candidates: Iterable[Candidate]) -> list[Candidate]:
    """The candidates no other beats on both FLOPs (fewer) and accuracy (higher), by increasing FLOPs."""
    front: list[Candidate] = []
    for c in sorted(set(candidates), key=lambda c: (c.mflops, -c.top1)):
        if not front or c.top1 > front[-1].top1:
            front.append(c)
    return front


@dataclass
class SearchResult:
    """What a search found: the best candidate in range, every evaluated one, and the Pareto front."""

    best: Candidate
    history: list[Candidate] = field(default_factory=list)

    @property
    def pareto(self) -> list[Candidate]:
        return pareto_front(self.history)


class EvolutionSearch:
    """Evolution under ``min_mflops <= FLOPs <= max_mflops``: ``EvolutionSearch(evaluate, 300).run()``.

    ``evaluate(arch) -> top-1 %``. Each generation keeps the best ``parent_ratio`` of the
    population as parents and refills it with children: ``mutation_ratio`` of them mutants of a
    parent (each choice redrawn with ``mutate_prob``), the rest crossovers of two parents.
    """

    def __init__(self, evaluate: Callable[[ArchConfig], float], max_mflops: float, min_mflops: float | None = None,
                 *, population: int = 64, generations: int = 20, parent_ratio: float = 0.25,
                 mutation_ratio: float = 0.5, mutate_prob: float = 0.1, seed: int = 0,
                 space: SearchSpace = SEARCH_SPACE) -> None:
        smallest, _ = flops_range(space)
        self.min_mflops = smallest if min_mflops is None else float(min_mflops)
        self.max_mflops = float(max_mflops)
        if self.max_mflops < smallest:
            raise InputError(f"no subnet fits in {self.max_mflops:.2f} MFLOPs: the smallest has {smallest:.2f}")
        if self.min_mflops > self.max_mflops:
            raise InputError(f"the FLOPs floor ({self.min_mflops:.2f}) is above the budget ({self.max_mflops:.2f})")
        if population < 2 or generations < 0:
            raise InputError(f"need population >= 2 and generations >= 0, got {population} and {generations}")
        if not 0 < parent_ratio <= 1 or not 0 <= mutation_ratio <= 1 or not 0 <= mutate_prob <= 1:
            raise InputError("parent_ratio must be in (0, 1], mutation_ratio and mutate_prob in [0, 1]")
        self.evaluate_fn = evaluate
        self.population, self.generations = population, generations
        self.num_parents = min(population - 1, max(1, round(population * parent_ratio)))
        self.num_mutants = round((population - self.num_parents) * mutation_ratio)
        self.mutate_prob = mutate_prob
        self.rng = random.Random(seed)
        self.space = space
        self.evaluated: dict[ArchConfig, Candidate] = {}

    def in_range(self, arch: ArchConfig) -> bool:
        return self.min_mflops <= count_flops(arch) <= self.max_mflops

    def evaluate(self, arch: ArchConfig) -> Candidate:
        if arch not in self.evaluated:
            self.evaluated[arch] = Candidate(arch, count_flops(arch), float(self.evaluate_fn(arch)))
        return self.evaluated[arch]

    def _child(self, make: Callable[[], ArchConfig], tries: int = 50) -> ArchConfig:
        for _ in range(tries):
            arch = make()
            if self.in_range(arch):
                return arch
        return sample_in_range(self.min_mflops, self.max_mflops, self.rng, self.space)

    def _draw(self) -> ArchConfig:
        return sample_in_range(self.min_mflops, self.max_mflops, self.rng, self.space)

    def run(self, on_generation: Callable[[int, list[Candidate]], None] | None = None) -> SearchResult:
        """Search; ``on_generation(g, population)`` is called after each generation is evaluated (g = 0: initial)."""
        population = [self.evaluate(self._draw()) for _ in range(self.population)]
        if on_generation:
            on_generation(0, population)
        for g in range(1, self.generations + 1):
            parents = sorted(population, key=lambda c: -c.top1)[:self.num_parents]
            mutants = [self._child(lambda: mutate(self.rng.choice(parents).arch, self.rng, self.mutate_prob,
                                                  self.space))
                       for _ in range(self.num_mutants)]
            crosses = [self._child(lambda: crossover(self.rng.choice(parents).arch, self.rng.choice(parents).arch,
                                                     self.rng, self.space))
                       for _ in range(self.population - self.num_parents - self.num_mutants)]
            population = parents + [self.evaluate(a) for a in mutants + crosses]
            if on_generation:
                on_generation(g, population)
        history = list(self.evaluated.values())
        best = max(history, key=lambda c: (c.top1, -c.mflops))
        return SearchResult(best, history)
