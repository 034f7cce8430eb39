"""Evolutionary search for the most accurate subnet inside a budget (FLOPs range, latency cap).

Regularised to the usual recipe of supernet NAS (OFA, AttentiveNAS): a population drawn inside
the budget; each generation keeps the best quarter as parents and refills the population with
mutants and crossovers of them, every child inside the budget too. Accuracy comes from a callable
(`SubnetEvaluator` on real images); each architecture is evaluated once.

A generation's new architectures are drawn first and then evaluated together
(``evaluate_many``: one process, or split across the processes of a ``torchrun`` run). Every draw
comes from one ``random.Random(seed)``, and the results come back in the order of the draws, so
the search is the same whatever the number of processes. ``known`` results (a history read back)
stand in for evaluations: a search resumed from its history replays the same draws and goes on
where it stopped.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

from ..config import SEARCH_SPACE, ArchConfig, SearchSpace
from ..errors import InputError
from ..flops import count_flops
from .budget import Budget
from .sampling import crossover, mutate


@dataclass(frozen=True)
class Candidate:
    """An evaluated subnet: its config, MFLOPs (paper's count), accuracy (top-1 %) and, in a latency
    search, its predicted latency; the generation that first drew it, the process (rank) that
    evaluated it and how long that took (not compared)."""

    arch: ArchConfig
    mflops: float
    top1: float
    latency_ms: float | None = None
    generation: int = 0
    rank: int = field(default=0, compare=False)
    seconds: float | None = field(default=None, compare=False)
    world_size: int = field(default=1, compare=False)

    def to_dict(self) -> dict:
        row = {"mflops": round(self.mflops, 4), "top1": self.top1, "arch": self.arch.to_dict(),
               "generation": self.generation, "rank": self.rank, "world_size": self.world_size}
        if self.latency_ms is not None:
            row["latency_ms"] = round(self.latency_ms, 4)
        if self.seconds is not None:
            row["seconds"] = round(self.seconds, 3)
        return row


class Evaluation(NamedTuple):
    """What evaluating one architecture gave: top-1 %, the rank that computed it (of how many), seconds taken."""

    top1: float
    rank: int = 0
    seconds: float | None = None
    world_size: int = 1


def pareto_front(candidates: Iterable[Candidate], cost: Callable[[Candidate], float] | None = None) -> list[Candidate]:
    """The candidates no other beats on both cost (fewer MFLOPs, or ``cost``) and accuracy (higher),
    by increasing cost."""
    key = cost or (lambda c: c.mflops)
    front: list[Candidate] = []
    for c in sorted(set(candidates), key=lambda c: (key(c), -c.top1, c.mflops)):
        if not front or c.top1 > front[-1].top1:
            front.append(c)
    return front


def rank_key(c: Candidate) -> tuple:
    """Order of merit: higher top-1, then fewer predicted milliseconds, then fewer MFLOPs."""
    return (c.top1, -(c.latency_ms if c.latency_ms is not None else 0.0), -c.mflops)


@dataclass
class SearchResult:
    """What a search found: the best candidate in the budget, every evaluated one, and the Pareto front."""

    best: Candidate
    history: list[Candidate] = field(default_factory=list)

    @property
    def pareto(self) -> list[Candidate]:
        return pareto_front(self.history)

    @property
    def latency_pareto(self) -> list[Candidate]:
        """The front against predicted latency (empty in a FLOPs-only search)."""
        timed = [c for c in self.history if c.latency_ms is not None]
        return pareto_front(timed, lambda c: c.latency_ms) if timed else []


class EvolutionSearch:
    """Evolution under ``min_mflops <= FLOPs <= max_mflops`` (or a `Budget`): ``EvolutionSearch(evaluate, 300).run()``.

    ``evaluate(arch) -> top-1 %``; or ``evaluate_many(archs) -> [Evaluation]`` to evaluate a
    generation at once (across processes). Each generation keeps the best ``parent_ratio`` of the
    population as parents and refills it with children: ``mutation_ratio`` of them mutants of a
    parent (each choice redrawn with ``mutate_prob``), the rest crossovers of two parents.
    ``known`` maps architectures to candidates already evaluated by this search (resume).
    """

    def __init__(self, evaluate: Callable[[ArchConfig], float] | None, max_mflops: float | None = None,
                 min_mflops: float | None = None, *, population: int = 64, generations: int = 20,
                 parent_ratio: float = 0.25, mutation_ratio: float = 0.5, mutate_prob: float = 0.1, seed: int = 0,
                 space: SearchSpace = SEARCH_SPACE, budget: Budget | None = None,
                 evaluate_many: Callable[[Sequence[ArchConfig]], Sequence[Evaluation]] | None = None,
                 known: Mapping[ArchConfig, Candidate] | None = None, max_evaluations: int | None = None) -> None:
        self.budget = budget if budget is not None else Budget.create(max_mflops, min_mflops, space=space)
        self.min_mflops, self.max_mflops = self.budget.min_mflops, self.budget.max_mflops
        if population < 2 or generations < 0:
            raise InputError(f"need population >= 2 and generations >= 0, got {population} and {generations}")
        if not 0 < parent_ratio <= 1 or not 0 <= mutation_ratio <= 1 or not 0 <= mutate_prob <= 1:
            raise InputError("parent_ratio must be in (0, 1], mutation_ratio and mutate_prob in [0, 1]")
        if evaluate is None and evaluate_many is None:
            raise InputError("EvolutionSearch needs evaluate or evaluate_many")
        self.evaluate_fn = evaluate
        self.evaluate_many = evaluate_many or self._evaluate_here
        self.population, self.generations = population, generations
        self.num_parents = min(population - 1, max(1, round(population * parent_ratio)))
        self.num_mutants = round((population - self.num_parents) * mutation_ratio)
        self.mutate_prob = mutate_prob
        self.rng = random.Random(seed)
        self.space = space
        self.evaluated: dict[ArchConfig, Candidate] = {}
        self.known: dict[int, list[Candidate]] = {}
        for c in (known or {}).values():
            self.known.setdefault(c.generation, []).append(c)
        self.replayed = 0  # candidates taken from ``known`` instead of evaluated
        self.max_evaluations = max_evaluations  # None: no cap

    @property
    def exhausted(self) -> bool:
        return self.max_evaluations is not None and len(self.evaluated) >= self.max_evaluations

    def in_range(self, arch: ArchConfig) -> bool:
        return self.budget.fits(arch)

    def _evaluate_here(self, archs: Sequence[ArchConfig]) -> list[Evaluation]:
        import time

        out = []
        for arch in archs:
            start = time.perf_counter()
            top1 = float(self.evaluate_fn(arch))
            out.append(Evaluation(top1, 0, time.perf_counter() - start))
        return out

    def evaluate(self, arch: ArchConfig) -> Candidate:
        """One architecture (evaluated once; later calls return the same candidate)."""
        if arch not in self.evaluated:
            self._record([arch], self.evaluate_many([arch]), 0)
        return self.evaluated[arch]

    def _record(self, archs: Sequence[ArchConfig], results: Sequence[Evaluation], generation: int) -> None:
        results = list(results)
        if len(results) != len(archs):
            raise RuntimeError(f"evaluate_many returned {len(results)} results for {len(archs)} architectures")
        for arch, r in zip(archs, results):
            self.evaluated[arch] = Candidate(arch, count_flops(arch), float(r.top1), self.budget.predicted_ms(arch),
                                             generation, r.rank, r.seconds, r.world_size)

    def evaluate_generation(self, archs: Sequence[ArchConfig], generation: int) -> list[Candidate]:
        """Candidates for ``archs`` (in order, repeats allowed); the new ones are evaluated together."""
        new = [a for a in dict.fromkeys(archs) if a not in self.evaluated]
        if self.max_evaluations is not None:
            new = new[:max(0, self.max_evaluations - len(self.evaluated))]
        known = self.known.pop(generation, None)
        if known is not None:
            if [c.arch for c in known] != new:
                raise InputError(f"the history does not match this search at generation {generation}: it was "
                                 "written by a search with other settings (seed, budget, population, ratios, "
                                 "latency table)")
            for c in known:
                self.evaluated[c.arch] = c
            self.replayed += len(known)
        elif new:
            self._record(new, self.evaluate_many(new), generation)
        return [self.evaluated[a] for a in archs if a in self.evaluated]

    def _child(self, make: Callable[[], ArchConfig], tries: int = 50) -> ArchConfig:
        for _ in range(tries):
            arch = make()
            if self.in_range(arch):
                return arch
        return self._draw()

    def _draw(self) -> ArchConfig:
        return self.budget.sample(self.rng, self.space)

    def run(self, on_generation: Callable[[int, list[Candidate]], None] | None = None) -> SearchResult:
        """Search; ``on_generation(g, population)`` is called after each generation is evaluated (g = 0: initial)."""
        if self.known and max(self.known) > self.generations:
            raise InputError(f"the history already holds generation {max(self.known)}; ask for at least that many "
                             "generations")
        population = self.evaluate_generation([self._draw() for _ in range(self.population)], 0)
        if on_generation:
            on_generation(0, population)
        for g in range(1, self.generations + 1):
            if self.exhausted:
                break
            parents = sorted(population, key=lambda c: -c.top1)[:self.num_parents]
            mutants = [self._child(lambda: mutate(self.rng.choice(parents).arch, self.rng, self.mutate_prob,
                                                  self.space))
                       for _ in range(self.num_mutants)]
            crosses = [self._child(lambda: crossover(self.rng.choice(parents).arch, self.rng.choice(parents).arch,
                                                     self.rng, self.space))
                       for _ in range(self.population - self.num_parents - self.num_mutants)]
            population = parents + self.evaluate_generation(mutants + crosses, g)
            if on_generation:
                on_generation(g, population)
        history = list(self.evaluated.values())
        return SearchResult(max(history, key=rank_key), history)


def random_search(evaluate: Callable[[ArchConfig], float], budget: Budget, evaluations: int, seed: int = 0,
                  space: SearchSpace = SEARCH_SPACE) -> SearchResult:
    """The baseline evolution must beat: ``evaluations`` distinct random subnets inside ``budget``."""
    rng = random.Random(seed)
    seen: dict[ArchConfig, Candidate] = {}
    for _ in range(evaluations * 100):
        if len(seen) >= evaluations:
            break
        arch = budget.sample(rng, space)
        if arch not in seen:
            seen[arch] = Candidate(arch, count_flops(arch), float(evaluate(arch)), budget.predicted_ms(arch))
    history = list(seen.values())
    return SearchResult(max(history, key=rank_key), history)
