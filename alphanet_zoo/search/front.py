"""One search for a whole Pareto front: the best subnet per cost bin (``alphanet-search --front MIN:MAX:STEP``).

The cost range ``MIN..MAX`` (MFLOPs, or predicted milliseconds with a latency table) is cut into
bins of ``STEP``; the search keeps, per bin, the evaluated candidate with the highest top-1 (ties:
lower cost, then the earlier drawn), as the official AlphaNet/AttentiveNAS search does. The
initial population is drawn bin by bin, round robin; each later generation makes ``population``
children from the bins' best (mutations and crossovers of them, every child inside ``MIN..MAX``).

Without a predictor every new child is evaluated. With one (`alphanet_zoo.search.predictor`),
every candidate drawn so far and not evaluated stays in a pool with its predicted top-1, and real
evaluations go only to candidates that can change the front. A prediction rules a candidate out
only once the predictor has shown skill on held-out rows: the Kendall tau of its exact
leave-one-out predictions with the real top-1 must be ``trust_z`` (3) null standard errors above 0
(`FrontSearch.trusted`); until then no candidate is ruled out: rounds evaluate the first drawn
waiting candidate of each bin and the skill is measured again, so a predictor that never shows
skill leaves the search exhaustive (on an untrained supernet and a few dozen images top-1 is noise
to any encoding, and a predictor trusted there ruled out a bin's winner in 11 of 48 small
searches). Once trusted, in rounds, each
bin's unevaluated candidate with the highest prediction is evaluated if the bin has no evaluated
candidate yet or if its upper bound could take the bin (`FrontSearch.can_change`: beat the bin's
best, or tie it at a lower cost; with ``top1_step`` the bound is rounded down to a top-1 the
held-out set can give). The upper bound is the prediction plus `FrontSearch.threshold`: by default
``margin`` times the leave-one-out RMSE (``bound``: also ``q90``, the 90th percentile of the
leave-one-out residuals, and ``max``, the largest). After
each round the predictor is refitted and the pool re-predicted. A generation runs at most
``rounds`` rounds (None, the default: no limit): a candidate still in doubt stays in the pool,
where the better bests later generations find often rule it out (on the stand-in of
``benchmarks/bench_search.py`` two rounds took ~35 % fewer evaluations for a front as good); the
last generation runs rounds until no bin has such a candidate. With no limit, and as long as the
predictor rules out no bin's winner, each generation ends with the bests evaluating every child
would give, so the search draws exactly the candidates the search without a predictor draws.
Before the predictor can be fitted (``warmup`` evaluations), the first candidates drawn are
evaluated. The front therefore is, bin by bin, the
best real top-1 among the candidates the predictor did not rule out; `FrontResult.pool` lists
every candidate drawn so those ruled out can be checked.

Every draw comes from one ``random.Random(seed)``, decisions depend only on the results (in draw
order) and on predictions computed on one thread in float64, so the search is the same for one
process or several (``evaluate_many`` splits a round across them). ``known`` results (a history
read back) stand in for evaluations: a resumed search replays the same decisions.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from ..config import SEARCH_SPACE, ArchConfig, SearchSpace
from ..errors import InputError
from ..flops import count_flops
from .evolution import Candidate, Evaluation
from .predictor import MIN_ROWS, TAU_ROWS, AccuracyPredictor, kendall_tau, tau_is_significant
from .sampling import crossover, descend_into, mutate, sample_where


@dataclass(frozen=True)
class Bins:
    """``low..high`` cut into bins of ``step`` (the last one may be shorter; ``high`` belongs to it)."""

    low: float
    high: float
    step: float
    unit: str = "MFLOPs"

    @classmethod
    def parse(cls, text: str, unit: str = "MFLOPs") -> "Bins":
        """``"MIN:MAX:STEP"``, e.g. ``"200:1200:10"``."""
        parts = str(text).split(":")
        try:
            low, high, step = (float(p) for p in parts)
        except ValueError:
            raise InputError(f"--front takes MIN:MAX:STEP (three numbers), got {text!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and math.isfinite(step)) or low < 0 or step <= 0 \
                or high <= low:
            raise InputError(f"--front {text}: need 0 <= MIN < MAX and STEP > 0")
        bins = cls(low, high, step, unit)
        if bins.count > 10_000:
            raise InputError(f"--front {text}: {bins.count} bins; use a larger STEP")
        return bins

    @property
    def count(self) -> int:
        return max(1, math.ceil((self.high - self.low) / self.step - 1e-9))

    def index(self, cost: float) -> int | None:
        if not self.low <= cost <= self.high:
            return None
        return min(int((cost - self.low) // self.step), self.count - 1)

    def bounds(self, i: int) -> tuple[float, float]:
        return self.low + i * self.step, min(self.low + (i + 1) * self.step, self.high)


TRUST_Z = 3.0  # leave-one-out tau this many null standard errors above 0 before a prediction rules anything out
BOUNDS = ("max", "rmse", "q90")
DEFAULT_BOUND = "rmse"


def _gap(low: float, high: float, cost: Callable[[ArchConfig], float]) -> Callable[[ArchConfig], float]:
    def distance(arch: ArchConfig) -> float:
        c = cost(arch)
        return low - c if c < low else c - high if c > high else 0.0

    return distance


@dataclass
class FrontResult:
    """What a front search found: per bin the best evaluated candidate (None: nothing evaluated there),
    every evaluated candidate, every candidate drawn (``pool``: arch -> last prediction, None if never
    predicted), and the predictor's record."""

    bins: Bins
    best: list[Candidate | None]
    history: list[Candidate]
    pool: dict[ArchConfig, float | None]
    predicted_before: dict[ArchConfig, float] = field(default_factory=dict)  # prediction made before evaluating
    predictor: AccuracyPredictor | None = None
    replayed: int = 0
    trusted: bool = False  # the predictor had shown skill at the end (see `FrontSearch.trusted`)
    untrusted_rounds: int = 0  # rounds in which it had not: nothing ruled out, each bin's first waiting evaluated
    evaluations: int | None = None  # evaluator calls (None: one per candidate in ``history``)

    def __post_init__(self) -> None:
        if self.evaluations is None:
            self.evaluations = len(self.history)

    @property
    def front(self) -> list[Candidate]:
        return [c for c in self.best if c is not None]

    @property
    def kendall_tau(self) -> float | None:
        """Rank correlation of predictions made before each evaluation with the real top-1 (held out)."""
        pairs = [(p, c.top1) for c in self.history if (p := self.predicted_before.get(c.arch)) is not None]
        return kendall_tau([p for p, _ in pairs], [t for _, t in pairs]) if len(pairs) >= 2 else None

    @property
    def tau_pairs(self) -> int:
        return sum(1 for c in self.history if c.arch in self.predicted_before)


class FrontSearch:
    """Best subnet per bin of ``bins`` (see the module docstring).

    ``evaluate_many(archs) -> [Evaluation]`` (in order); ``cost(arch)``: MFLOPs by default;
    ``latency(arch)``: predicted ms recorded on candidates (None: not recorded). ``predictor``: None
    (evaluate every child) or ``"auto"`` (fit on this run's evaluations), with ``prior``: (arch,
    top-1) pairs of an earlier run pooled into every fit.
    """

    def __init__(self, bins: Bins, evaluate_many: Callable[[Sequence[ArchConfig]], Sequence[Evaluation]], *,
                 cost: Callable[[ArchConfig], float] = count_flops,
                 latency: Callable[[ArchConfig], float] | None = None, population: int = 64,
                 generations: int = 20, mutation_ratio: float = 0.5, mutate_prob: float = 0.1, seed: int = 0,
                 space: SearchSpace = SEARCH_SPACE, predictor: str | None = None,
                 prior: Sequence[tuple[ArchConfig, float]] = (), warmup: int | None = None, margin: float = 1.0,
                 known: Mapping[ArchConfig, Candidate] | None = None,
                 on_evaluated: Callable[[], None] | None = None, rounds: int | None = None,
                 top1_step: float | None = None, bound: str = DEFAULT_BOUND, trust_z: float = TRUST_Z,
                 max_evaluations: int | None = None) -> None:
        if population < 2 or generations < 0:
            raise InputError(f"need population >= 2 and generations >= 0, got {population} and {generations}")
        if not 0 <= mutation_ratio <= 1 or not 0 <= mutate_prob <= 1:
            raise InputError("mutation_ratio and mutate_prob must be in [0, 1]")
        if predictor not in (None, "auto"):
            raise InputError(f"predictor must be None or 'auto', got {predictor!r}")
        if bound not in BOUNDS:
            raise InputError(f"bound must be one of {', '.join(BOUNDS)}, got {bound!r}")
        if top1_step is not None and not top1_step > 0:
            raise InputError(f"top1_step must be > 0, got {top1_step}")
        self.bins, self.evaluate_many, self.cost, self.latency = bins, evaluate_many, cost, latency
        self.population, self.generations = population, generations
        self.mutation_ratio, self.mutate_prob = mutation_ratio, mutate_prob
        self.rng = random.Random(seed)
        self.space = space
        self.use_predictor = predictor is not None
        self.prior = list(prior)
        self.warmup = max(MIN_ROWS, warmup if warmup is not None else min(population, 2 * MIN_ROWS + 4))
        self.margin = margin
        self.known = dict(known or {})
        self.on_evaluated = on_evaluated  # called after each batch of evaluations (a round)
        self.rounds = rounds
        self.top1_step, self.bound, self.trust_z = top1_step, bound, trust_z
        self.untrusted_rounds = 0  # rounds in which the predictor had shown no skill: nothing ruled out
        self.max_evaluations = max_evaluations  # None: no cap
        self.replayed = 0
        self.evaluated: dict[ArchConfig, Candidate] = {}
        self.pool: dict[ArchConfig, float | None] = {}  # every candidate drawn, in draw order
        self.bin_of: dict[ArchConfig, int] = {}
        self.best: list[Candidate | None] = [None] * bins.count
        self.predicted_before: dict[ArchConfig, float] = {}
        self.model: AccuracyPredictor | None = None
        self._fitted_on = -1
        self._distance = _gap(bins.low, bins.high, cost)

    # -- drawing ---------------------------------------------------------------------------------
    def _draw_in_bin(self, i: int) -> ArchConfig:
        low, high = self.bins.bounds(i)
        try:
            return descend_into(_gap(low, high, self.cost), self.rng, self.space, f"{low:g}..{high:g} {self.bins.unit}")
        except InputError:  # an empty bin: any subnet of the range
            return self._draw_anywhere()

    def _draw_anywhere(self) -> ArchConfig:
        return sample_where(self._distance, self.rng, self.space,
                            f"{self.bins.low:g}..{self.bins.high:g} {self.bins.unit}")

    def _child(self, parents: Sequence[Candidate], tries: int = 50) -> ArchConfig:
        for _ in range(tries):
            if self.rng.random() < self.mutation_ratio:
                arch = mutate(self.rng.choice(parents).arch, self.rng, self.mutate_prob, self.space)
            else:
                arch = crossover(self.rng.choice(parents).arch, self.rng.choice(parents).arch, self.rng, self.space)
            if self._distance(arch) == 0.0:
                return arch
        return self._draw_anywhere()

    def _add(self, archs: Sequence[ArchConfig]) -> list[ArchConfig]:
        new = []
        for arch in archs:
            if arch not in self.pool:
                self.pool[arch] = None
                self.bin_of[arch] = self.bins.index(self.cost(arch))
                new.append(arch)
        return new

    # -- evaluating ------------------------------------------------------------------------------
    def _better(self, a: Candidate, b: Candidate | None) -> bool:
        return b is None or (a.top1, -self.cost(a.arch)) > (b.top1, -self.cost(b.arch))

    @property
    def exhausted(self) -> bool:
        """Whether ``max_evaluations`` are spent (replayed ones count: they were spent before a resume)."""
        return self.max_evaluations is not None and len(self.evaluated) >= self.max_evaluations

    def _evaluate(self, archs: Sequence[ArchConfig], generation: int) -> None:
        if self.max_evaluations is not None:
            archs = list(archs)[:max(0, self.max_evaluations - len(self.evaluated))]
        fresh = [a for a in archs if a not in self.known]
        results = dict(zip(fresh, self.evaluate_many(fresh))) if fresh else {}
        for arch in archs:
            if arch in self.known:
                c = self.known[arch]
                self.replayed += 1
            else:
                r = results[arch]
                c = Candidate(arch, count_flops(arch), float(r.top1),
                              None if self.latency is None else float(self.latency(arch)), generation, r.rank,
                              r.seconds, r.world_size)
            self.evaluated[arch] = c
            i = self.bin_of[arch]
            if self._better(c, self.best[i]):
                self.best[i] = c
        if self.on_evaluated is not None:
            self.on_evaluated()

    def _refit(self) -> None:
        rows = len(self.evaluated) + len(self.prior)
        if rows < MIN_ROWS:
            return
        if rows != self._fitted_on:
            archs = [a for a, _ in self.prior] + list(self.evaluated)
            top1 = [t for _, t in self.prior] + [c.top1 for c in self.evaluated.values()]
            current = [False] * len(self.prior) + [True] * len(self.evaluated)
            self.model = AccuracyPredictor.fit(archs, top1, current=current, space=self.space)
            self._fitted_on = rows
            waiting = [a for a in self.pool if a not in self.evaluated]
        else:
            waiting = [a for a, p in self.pool.items() if p is None and a not in self.evaluated]
        for arch, p in zip(waiting, self.model.predict(waiting)):
            self.pool[arch] = p

    def trusted(self) -> bool:
        """Whether the predictor has shown skill on held-out rows: the Kendall tau of its exact leave-one-out
        predictions with the real top-1 is ``trust_z`` null standard errors above 0 (`tau_is_significant`)."""
        return self.model is not None and tau_is_significant(self.model.loo_tau, min(self.model.rows, TAU_ROWS),
                                                             self.trust_z)

    def threshold(self) -> float:
        """How far above its prediction a candidate's real top-1 may lie: ``margin`` times the leave-one-out
        RMSE (``bound="rmse"``, the default); the 90th percentile of the leave-one-out residuals, no less
        than 0 (``bound="q90"``); or the larger of the RMSE bound and the largest residual (``bound="max"``).
        On the benchmark's stand-in q90 needed more real evaluations than rmse for the same front, and max
        more than no predictor at all (``benchmarks/bench_search.py --front-sim``)."""
        spread = self.margin * self.model.loo_rmse
        residuals = sorted(self.model.loo_residuals)
        if self.bound == "max":
            spread = max([spread] + residuals)
        elif self.bound == "q90" and residuals:  # the 90th percentile of the residuals, no less than 0
            spread = max(0.0, residuals[min(len(residuals) - 1, int(0.9 * len(residuals)))])
        return spread

    def can_change(self, arch: ArchConfig, upper: float, best: Candidate | None) -> bool:
        """Whether a candidate whose top-1 is at most ``upper`` could become its bin's best: beat its
        top-1, or tie it at a lower cost. With ``top1_step`` (top-1 counts images: 100 / images) the
        bound is first rounded down to a top-1 the held-out set can give."""
        if best is None:
            return True
        if self.top1_step is not None:
            upper = math.floor(upper / self.top1_step + 1e-9) * self.top1_step
        tolerance = 1e-9 * max(1.0, abs(best.top1))
        if upper > best.top1 + tolerance:
            return True
        return upper >= best.top1 - tolerance and self.cost(arch) < self.cost(best.arch)

    def _decide(self, new: Sequence[ArchConfig], generation: int) -> None:
        """Evaluate what can change the front (all of ``new`` without a predictor, all that is waiting while
        the predictor has shown no skill)."""
        if not self.use_predictor:
            self._evaluate([a for a in new if a not in self.evaluated], generation)
            return
        rounds = 0
        while (generation == self.generations or self.rounds is None or rounds < self.rounds) and not self.exhausted:
            self._refit()
            if self.model is None or (not self.prior and len(self.evaluated) < self.warmup):
                batch = [a for a in self.pool if a not in self.evaluated][:max(1, self.warmup - len(self.evaluated))]
                if not batch:
                    return
                self._evaluate(batch, generation)
                continue
            rounds += 1
            if not self.trusted():  # predictions no better than chance: rule nothing out
                # the first drawn waiting candidate of each bin, then the skill is measured again
                firsts: dict[int, ArchConfig] = {}
                for arch in self.pool:
                    if arch not in self.evaluated:
                        firsts.setdefault(self.bin_of[arch], arch)
                batch = [a for _, a in sorted(firsts.items())]
                if not batch:
                    return
                self.untrusted_rounds += 1
                self._evaluate_predicted(batch, generation)
                continue
            threshold = self.threshold()
            picks: dict[int, ArchConfig] = {}
            for arch, p in self.pool.items():
                if arch in self.evaluated:
                    continue
                i = self.bin_of[arch]
                other = picks.get(i)
                if other is None or (p, -self.cost(arch)) > (self.pool[other], -self.cost(other)):
                    picks[i] = arch
            batch = [a for i, a in sorted(picks.items()) if self.can_change(a, self.pool[a] + threshold, self.best[i])]
            if not batch:
                return
            self._evaluate_predicted(batch, generation)

    def _evaluate_predicted(self, batch: Sequence[ArchConfig], generation: int) -> None:
        """Evaluate ``batch``, keeping the prediction each had before (for the Kendall tau reported)."""
        for arch in batch:
            self.predicted_before[arch] = self.pool[arch]
        self._evaluate(batch, generation)

    def run(self, on_generation: Callable[[int], None] | None = None) -> FrontResult:
        """Search; ``on_generation(g)`` after each generation's decisions (g = 0: the initial population)."""
        order = list(range(self.bins.count))
        self.rng.shuffle(order)
        draws = [self._draw_in_bin(order[k % len(order)]) for k in range(self.population)]
        self._decide(self._add(draws), 0)
        if on_generation:
            on_generation(0)
        for g in range(1, self.generations + 1):
            if self.exhausted:
                break
            parents = self.front()
            if not parents:
                raise InputError("no candidate was evaluated in the first generation")
            self._decide(self._add([self._child(parents) for _ in range(self.population)]), g)
            if on_generation:
                on_generation(g)
        return FrontResult(self.bins, list(self.best), list(self.evaluated.values()), dict(self.pool),
                           dict(self.predicted_before), self.model, self.replayed, self.trusted(),
                           self.untrusted_rounds)

    def front(self) -> list[Candidate]:
        return [c for c in self.best if c is not None]
