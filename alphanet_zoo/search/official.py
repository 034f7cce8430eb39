"""The official AlphaNet front search, as a baseline (``alphanet-search --front ... --algorithm official``).

What the authors' ``parallel_supernet_evo_search.py`` does at its defaults (facts read from their
release; the code here is ours):

- generation 0: ``parents`` (512) subnets, the first the smallest of the space, the others drawn
  uniformly (every choice uniform) until one lands inside ``MIN..MAX``;
- after evaluating a generation, each bin keeps its best top-1 (a later candidate replaces the
  bin's best only when strictly better);
- the next generation: ``mutations`` (128) mutants, each of a bin best chosen uniformly among the
  filled bins, with every choice replaced by another of its options with probability
  ``mutate_prob`` (0.2); then ``crossovers`` (128) crossovers of two bin bests chosen the same way,
  each choice taken from either with probability 1/2; a child outside ``MIN..MAX`` is redrawn;
- ``iterations`` (20) rounds of evaluating; the children made after the last are not evaluated:
  512 + 19 x 256 = 5,376 evaluations. Repeated subnets are evaluated again, as in the original.

The authors bin by rounding MFLOPs to the nearest multiple of 10; here the bins are those of
`Bins` (``MIN + k * STEP`` up to the next), shared with every other front search so fronts compare
bin by bin. ``max_evaluations`` stops the loop once that many evaluations are spent.
"""
from __future__ import annotations

import random
from typing import Callable, Mapping, Sequence

from ..config import SEARCH_SPACE, ArchConfig, SearchSpace
from ..errors import InputError
from ..flops import count_flops
from .evolution import Candidate, Evaluation
from .front import Bins, FrontResult
from .sampling import genes, _get, _set

PARENTS, MUTATIONS, CROSSOVERS, MUTATE_PROB, ITERATIONS = 512, 128, 128, 0.2, 20
_MAX_REDRAWS = 100_000  # the original redraws forever; a range no child can reach ends with a clear error


def official_evaluations(parents: int = PARENTS, mutations: int = MUTATIONS, crossovers: int = CROSSOVERS,
                         iterations: int = ITERATIONS) -> int:
    """Evaluations the official loop spends: 5,376 at its defaults."""
    return parents + (iterations - 1) * (mutations + crossovers) if iterations > 0 else 0


def mutate_other(arch: ArchConfig, rng: random.Random, prob: float, space: SearchSpace = SEARCH_SPACE) -> ArchConfig:
    """Each choice replaced, with probability ``prob``, by one of its *other* options (uniformly)."""
    for gene, options in genes(space):
        if rng.random() < prob:
            current = _get(arch, gene)
            arch = _set(arch, gene, rng.choice([o for o in options if o != current]))
    return arch


def cross(a: ArchConfig, b: ArchConfig, rng: random.Random, space: SearchSpace = SEARCH_SPACE) -> ArchConfig:
    """Each choice from ``a`` with probability 1/2, otherwise from ``b``."""
    child = a
    for gene, _ in genes(space):
        if rng.random() >= 0.5:
            child = _set(child, gene, _get(b, gene))
    return child


class OfficialSearch:
    """The official loop on any evaluator: ``evaluate_many(archs) -> [Evaluation]``; ``cost(arch)`` bins
    the candidates (MFLOPs by default); ``known`` (a history read back) stands in for evaluations."""

    def __init__(self, bins: Bins, evaluate_many: Callable[[Sequence[ArchConfig]], Sequence[Evaluation]], *,
                 cost: Callable[[ArchConfig], float] = count_flops,
                 latency: Callable[[ArchConfig], float] | None = None, seed: int = 0,
                 space: SearchSpace = SEARCH_SPACE, parents: int = PARENTS, mutations: int = MUTATIONS,
                 crossovers: int = CROSSOVERS, mutate_prob: float = MUTATE_PROB, iterations: int = ITERATIONS,
                 max_evaluations: int | None = None, known: Mapping[ArchConfig, Candidate] | None = None,
                 on_evaluated: Callable[[], None] | None = None) -> None:
        if parents < 1 or mutations < 0 or crossovers < 0 or iterations < 1 or not 0 <= mutate_prob <= 1:
            raise InputError("the official loop needs parents >= 1, mutations and crossovers >= 0, iterations >= 1 "
                             "and mutate_prob in [0, 1]")
        self.bins, self.evaluate_many, self.cost, self.latency = bins, evaluate_many, cost, latency
        self.rng, self.space = random.Random(seed), space
        self.parents, self.mutations, self.crossovers = parents, mutations, crossovers
        self.mutate_prob, self.iterations = mutate_prob, iterations
        self.max_evaluations = max_evaluations
        self.known = dict(known or {})
        self.on_evaluated = on_evaluated
        self.best: list[Candidate | None] = [None] * bins.count
        self.evaluated: dict[ArchConfig, Candidate] = {}
        self.calls = 0  # evaluations spent, repeats included
        self.predicted_before: dict[ArchConfig, float] = {}  # nothing is predicted here (read by the history)
        self.replayed = 0

    def _inside(self, arch: ArchConfig) -> bool:
        return self.bins.low <= self.cost(arch) <= self.bins.high

    def _redraw(self, make: Callable[[], ArchConfig]) -> ArchConfig:
        for _ in range(_MAX_REDRAWS):
            arch = make()
            if self._inside(arch):
                return arch
        raise InputError(f"no subnet drawn in {_MAX_REDRAWS} tries falls inside {self.bins.low:g}..{self.bins.high:g} "
                         f"{self.bins.unit}")

    def first_generation(self) -> list[ArchConfig]:
        """The smallest subnet, then uniform draws inside the range."""
        smallest = self.space.smallest()
        first = [smallest] if self._inside(smallest) else []
        return first + [self._redraw(lambda: self.space.sample(self.rng)) for _ in range(self.parents - len(first))]

    def children(self) -> list[ArchConfig]:
        """Mutants then crossovers of bin bests chosen uniformly among the filled bins."""
        bests = [c.arch for c in self.best if c is not None]
        mutants = [self._redraw(lambda: mutate_other(self.rng.choice(bests), self.rng, self.mutate_prob, self.space))
                   for _ in range(self.mutations)]
        crosses = [self._redraw(lambda: cross(self.rng.choice(bests), self.rng.choice(bests), self.rng, self.space))
                   for _ in range(self.crossovers)]
        return mutants + crosses

    def _evaluate(self, archs: Sequence[ArchConfig], generation: int) -> None:
        if self.max_evaluations is not None:
            archs = archs[:max(0, self.max_evaluations - self.calls)]
        fresh = list(dict.fromkeys(a for a in archs if a not in self.known))
        results = dict(zip(fresh, self.evaluate_many(fresh))) if fresh else {}
        for arch in archs:
            self.calls += 1
            if arch in self.known:
                c, self.replayed = self.known[arch], self.replayed + 1
            elif arch in self.evaluated and arch not in results:  # a repeat: spent, and the same top-1
                c = self.evaluated[arch]
            else:
                r = results.pop(arch)
                c = Candidate(arch, count_flops(arch), float(r.top1),
                              None if self.latency is None else float(self.latency(arch)), generation, r.rank,
                              r.seconds, r.world_size)
            self.evaluated.setdefault(arch, c)
            i = self.bins.index(self.cost(arch))
            if i is not None and (self.best[i] is None or c.top1 > self.best[i].top1):
                self.best[i] = c
        if self.on_evaluated is not None:
            self.on_evaluated()

    @property
    def exhausted(self) -> bool:
        return self.max_evaluations is not None and self.calls >= self.max_evaluations

    def run(self, on_generation: Callable[[int], None] | None = None) -> FrontResult:
        """Search; ``on_generation(g)`` after generation ``g`` is evaluated."""
        population = self.first_generation()
        for g in range(self.iterations):
            self._evaluate(population, g)
            if on_generation:
                on_generation(g)
            if self.exhausted or g == self.iterations - 1:
                break
            population = self.children()
        return FrontResult(self.bins, list(self.best), list(self.evaluated.values()),
                           {a: None for a in self.evaluated}, replayed=self.replayed, evaluations=self.calls)
