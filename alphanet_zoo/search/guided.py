"""A front search on a fixed budget of evaluations, guided by a predictor fit on them (``--algorithm guided``).

The official front search (`alphanet_zoo.search.official`) spends 5,376 evaluations on 100 bins and
keeps, per bin, the candidate whose measured top-1 was highest. This one spends ``max_evaluations``
(537 by default on 100 bins: a tenth) and learns from every one of them:

1. **Explore**: ``explore`` of the budget goes to subnets drawn inside each bin, round robin over
   the bins in a shuffled order, so every bin is measured before any is refined.
2. **Refine**, in rounds of ``round_size`` evaluations: a ridge predictor on one-hot architecture
   features (`AccuracyPredictor`, ``encoding="onehot"``) is fit on every evaluation so far; each
   bin keeps a population of unevaluated candidates, made by mutating and crossing the best
   predicted subnets of the bin and its neighbours (a child outside the bin is walked back into it
   by single-choice changes), re-predicted after each fit. The bins whose best waiting candidate
   is predicted furthest above the bin's current estimate get the round's evaluations.
3. **Choose**: each bin's winner is the evaluated subnet with the highest estimate, the measured
   top-1 and the prediction combined by their variances (the measurement's binomial noise on the
   held-out images, the predictor's leave-one-out error). A measurement that is high by chance
   does not win on its own, which is where most of the official search's loss lies: its winners
   are, on the surrogate at 50,000 images, 0.34 points below what they measured.

The search learns only from its evaluations: it never sees the evaluator's internals. Decisions
depend only on the results in draw order, draws come from one ``random.Random(seed)`` and fits are
one-thread float64, so one process and several give the same front; ``known`` (a history read
back) replays evaluations for ``--resume``.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Mapping, Sequence

from ..config import SEARCH_SPACE, ArchConfig, SearchSpace
from ..errors import InputError
from ..flops import count_flops
from .evolution import Candidate, Evaluation
from .front import Bins, FrontResult, _gap
from .official import cross, mutate_other, official_evaluations
from .predictor import AccuracyPredictor
from .sampling import _descend, _get, descend_into, genes, sample_where

DEFAULT_EVALUATIONS = official_evaluations() // 10  # 537: a tenth of the official search's
MIN_FIT = 8  # evaluations before the predictor is fit


class ResidualKernel:
    """What the linear predictor misses, learned near the evaluated subnets: kernel ridge regression of its
    residuals with ``exp(-d / length)``, d the number of choices two subnets differ in (a Gaussian process
    posterior mean with the linear fit as its mean). One-thread float64, as the predictor."""

    def __init__(self, archs: Sequence[ArchConfig], residuals: Sequence[float], noise_var: Sequence[float],
                 length: float, space: SearchSpace, residual_var: float) -> None:
        import torch

        from .predictor import _one_thread

        self.length, self.space = length, space
        with _one_thread():
            self.x = torch.tensor([self._codes(a) for a in archs], dtype=torch.float64)
            r = torch.tensor(list(residuals), dtype=torch.float64)
            noise = torch.tensor(list(noise_var), dtype=torch.float64)
            # the linear fit's out-of-sample error less the measurement noise: what a kernel can still explain
            self.signal = max(residual_var - float(noise.mean()), 1e-6)
            k = self.signal * torch.exp(-self._distance(self.x, self.x) / length)
            self.alpha = torch.linalg.solve(k + torch.diag(noise + 1e-6 * self.signal), r)

    def _codes(self, arch: ArchConfig) -> list[float]:
        return [float(_get(arch, gene)) for gene, _ in genes(self.space)]

    @staticmethod
    def _distance(a, b):
        return (a[:, None, :] != b[None, :, :]).sum(-1).to(a.dtype)

    def predict(self, archs: Sequence[ArchConfig]) -> list[float]:
        import torch

        from .predictor import _one_thread

        if not archs:
            return []
        with _one_thread():
            x = torch.tensor([self._codes(a) for a in archs], dtype=torch.float64)
            k = self.signal * torch.exp(-self._distance(x, self.x) / self.length)
            return [float(v) for v in k @ self.alpha]


class GuidedFrontSearch:
    """Best subnet per bin of ``bins`` with at most ``max_evaluations`` calls of ``evaluate_many``.

    ``cost(arch)``: what the bins cut (MFLOPs by default); ``latency(arch)``: recorded on candidates.
    ``top1_step``: 100 / held-out images when known (the measurement's noise follows from it; 0: the
    evaluator is exact; None: the noise is estimated from the fit's residuals).
    """

    def __init__(self, bins: Bins, evaluate_many: Callable[[Sequence[ArchConfig]], Sequence[Evaluation]], *,
                 cost: Callable[[ArchConfig], float] = count_flops,
                 latency: Callable[[ArchConfig], float] | None = None, seed: int = 0,
                 space: SearchSpace = SEARCH_SPACE, max_evaluations: int | None = None, explore: float = 0.35,
                 round_size: int | None = None, children: int = 48, keep: int = 12, neighbours: int = 2,
                 mutate_prob: float = 0.08, parents: int = 4, kernel_length: float | None = 8.0,
                 top1_step: float | None = None, known: Mapping[ArchConfig, Candidate] | None = None,
                 on_evaluated: Callable[[], None] | None = None) -> None:
        self.max_evaluations = DEFAULT_EVALUATIONS if max_evaluations is None else int(max_evaluations)
        if self.max_evaluations < 1:
            raise InputError(f"max_evaluations must be >= 1, got {max_evaluations}")
        if not 0 < explore <= 1:
            raise InputError(f"explore must be in (0, 1], got {explore}")
        self.bins, self.evaluate_many, self.cost, self.latency = bins, evaluate_many, cost, latency
        self.rng, self.space = random.Random(seed), space
        self.explore = explore
        self.round_size = round_size or max(1, math.ceil(bins.count / 4))
        self.children, self.keep, self.neighbours = children, keep, neighbours
        self.mutate_prob, self.parents = mutate_prob, parents
        self.kernel_length = kernel_length  # None: the linear predictor alone
        self.kernel: ResidualKernel | None = None
        self.top1_step = top1_step
        self.known = dict(known or {})
        self.on_evaluated = on_evaluated
        self.evaluated: dict[ArchConfig, Candidate] = {}
        self.bin_of: dict[ArchConfig, int] = {}
        self.waiting: list[dict[ArchConfig, float]] = [{} for _ in range(bins.count)]  # per bin: arch -> prediction
        self.model: AccuracyPredictor | None = None
        self.predicted_before: dict[ArchConfig, float] = {}
        self.replayed = 0
        self.rounds = 0

    # -- drawing ---------------------------------------------------------------------------------
    def _bin(self, arch: ArchConfig) -> int | None:
        if arch not in self.bin_of:
            self.bin_of[arch] = self.bins.index(self.cost(arch))
        return self.bin_of[arch]

    def _draw_in_bin(self, i: int) -> ArchConfig | None:
        low, high = self.bins.bounds(i)
        try:
            return descend_into(_gap(low, high, self.cost), self.rng, self.space, f"{low:g}..{high:g}")
        except InputError:
            return None

    def _into_bin(self, arch: ArchConfig, i: int, tries: int = 24) -> ArchConfig | None:
        """``arch`` walked into bin ``i`` by at most ``tries`` random single-choice changes, each kept if it
        brings the subnet closer (None: it did not get there)."""
        low, high = self.bins.bounds(i)
        arch = _descend(arch, _gap(low, high, self.cost), self.rng, self.space, tries)
        return arch if arch is not None and self._bin(arch) == i else None

    # -- evaluating ------------------------------------------------------------------------------
    @property
    def best(self) -> list[Candidate | None]:
        """Per bin, the evaluated candidate with the highest measured top-1 so far (progress reports)."""
        best: list[Candidate | None] = [None] * self.bins.count
        for a, c in self.evaluated.items():
            i = self._bin(a)
            if i is not None and (best[i] is None or c.top1 > best[i].top1):
                best[i] = c
        return best

    @property
    def remaining(self) -> int:
        return self.max_evaluations - len(self.evaluated)

    def _evaluate(self, archs: Sequence[ArchConfig]) -> None:
        archs = [a for a in dict.fromkeys(archs) if a not in self.evaluated][:max(0, self.remaining)]
        if not archs:
            return
        fresh = [a for a in archs if a not in self.known]
        results = dict(zip(fresh, self.evaluate_many(fresh))) if fresh else {}
        for arch in archs:
            if arch in self.known:
                c, self.replayed = self.known[arch], self.replayed + 1
            else:
                r = results[arch]
                c = Candidate(arch, count_flops(arch), float(r.top1),
                              None if self.latency is None else float(self.latency(arch)), self.rounds, r.rank,
                              r.seconds, r.world_size)
            self.evaluated[arch] = c
            i = self._bin(arch)
            if i is not None:
                p = self.waiting[i].pop(arch, None)
                if p is not None:
                    self.predicted_before[arch] = p
        if self.on_evaluated is not None:
            self.on_evaluated()

    def _fit(self) -> None:
        if len(self.evaluated) >= MIN_FIT:
            archs = list(self.evaluated)
            top1 = [self.evaluated[a].top1 for a in archs]
            self.model = AccuracyPredictor.fit(archs, top1, space=self.space, encoding="onehot")
            if self.kernel_length is not None:
                linear = self.model.predict(archs)
                self.kernel = ResidualKernel(archs, [t - p for t, p in zip(top1, linear)],
                                             [self._noise_var(t) for t in top1], self.kernel_length, self.space,
                                             self.model.loo_rmse ** 2)

    def predict(self, archs: Sequence[ArchConfig]) -> list[float]:
        """The predictor's top-1 for each subnet: the linear fit, plus the residual kernel's correction."""
        linear = self.model.predict(archs)
        if self.kernel is None:
            return linear
        return [p + c for p, c in zip(linear, self.kernel.predict(archs))]

    def _noise_var(self, top1: float) -> float:
        """Variance of a measured top-1 (points squared): binomial on the held-out images when their number
        is known, otherwise what the fit's residuals leave after the predictor's own error."""
        if self.top1_step == 0:  # exact measurements (a noise-free evaluator)
            return 1e-12
        if self.top1_step is not None:
            p = min(max(top1 / 100.0, 1e-4), 1 - 1e-4)
            return 100.0 * self.top1_step * p * (1 - p)  # (100 points)^2 p (1 - p) / images
        return 0.5 * self.model.loo_rmse ** 2 if self.model is not None else 1.0

    def _model_var(self) -> float:
        """Variance of the predictor's error on a subnet (the leave-one-out residuals less the measurement's
        own noise, at least a small floor)."""
        if self.model is None:
            return math.inf
        residual = self.model.loo_rmse ** 2
        noise = sum(self._noise_var(c.top1) for c in self.evaluated.values()) / max(1, len(self.evaluated))
        return max(residual - noise, 0.05 * residual, 1e-6)

    def estimates(self) -> dict[ArchConfig, float]:
        """Each evaluated subnet's top-1 estimate: measurement and prediction weighted by their inverse variances."""
        archs = list(self.evaluated)
        if self.model is None:
            return {a: self.evaluated[a].top1 for a in archs}
        predicted = self.model.predict(archs)  # the linear fit alone: the kernel would echo the measurement
        model_var = self._model_var()
        out = {}
        for a, p in zip(archs, predicted):
            y = self.evaluated[a].top1
            noise_var = self._noise_var(y)
            out[a] = (y / noise_var + p / model_var) / (1 / noise_var + 1 / model_var)
        return out

    # -- refining --------------------------------------------------------------------------------
    def _parents(self, i: int, estimate: Mapping[ArchConfig, float]) -> list[ArchConfig]:
        near = [a for a, c in self.evaluated.items()
                if (j := self._bin(a)) is not None and abs(j - i) <= self.neighbours]
        near.sort(key=lambda a: (-estimate[a], self.cost(a)))
        waiting = sorted(self.waiting[i], key=lambda a: -self.waiting[i][a])
        return near[:self.parents] + waiting[:self.parents]

    def _grow(self, i: int, estimate: Mapping[ArchConfig, float]) -> None:
        """New unevaluated candidates for bin ``i`` from its parents; the ``keep`` best predicted stay."""
        parents = self._parents(i, estimate)
        if not parents:
            drawn = self._draw_in_bin(i)
            parents = [drawn] if drawn is not None else []
        if not parents:
            return
        new = []
        for _ in range(self.children):
            if len(parents) > 1 and self.rng.random() < 0.3:
                child = cross(self.rng.choice(parents), self.rng.choice(parents), self.rng, self.space)
            else:
                child = mutate_other(self.rng.choice(parents), self.rng, self.mutate_prob, self.space)
            child = self._into_bin(child, i)
            if child is not None and child not in self.evaluated and child not in self.waiting[i]:
                new.append(child)
        new = list(dict.fromkeys(new))
        pool = list(self.waiting[i]) + new
        predicted = self.predict(pool)
        ranked = sorted(zip(pool, predicted), key=lambda t: (-t[1], self.cost(t[0])))[:self.keep]
        self.waiting[i] = dict(ranked)

    def _refine_round(self) -> bool:
        self._fit()
        if self.model is None:  # the exploration found too few subnets to fit on: nothing to refine with
            return False
        estimate = self.estimates()
        best_estimate: list[float | None] = [None] * self.bins.count
        for a, e in estimate.items():
            i = self._bin(a)
            if i is not None and (best_estimate[i] is None or e > best_estimate[i]):
                best_estimate[i] = e
        gains = []
        for i in range(self.bins.count):
            self._grow(i, estimate)
            if self.waiting[i]:
                arch, p = max(self.waiting[i].items(), key=lambda t: (t[1], -self.cost(t[0])))
                gain = math.inf if best_estimate[i] is None else p - best_estimate[i]
                gains.append((gain, -i, arch))
        if not gains:
            return False
        gains.sort(key=lambda t: (t[0], t[1]), reverse=True)
        self.rounds += 1
        self._evaluate([arch for _, _, arch in gains[:min(self.round_size, self.remaining)]])
        return True

    # -- the search ------------------------------------------------------------------------------
    def run(self, on_round: Callable[[int], None] | None = None) -> FrontResult:
        """Search; ``on_round(r)`` after each round of evaluations (r = 0: the exploration)."""
        order = list(range(self.bins.count))
        self.rng.shuffle(order)
        # at least the rows the predictor needs before it is fit
        explore = min(self.max_evaluations, max(MIN_FIT, round(self.explore * self.max_evaluations)))
        draws: list[ArchConfig] = []
        misses = 0
        k = 0
        while len(draws) < explore and misses < len(order):
            arch = self._draw_in_bin(order[k % len(order)])
            k += 1
            if arch is None or arch in draws:
                misses += 1
                continue
            misses = 0
            draws.append(arch)
        if not draws:
            draws = [sample_where(_gap(self.bins.low, self.bins.high, self.cost), self.rng, self.space)]
        self._evaluate(draws)
        if on_round:
            on_round(0)
        while self.remaining > 0 and self._refine_round():
            if on_round:
                on_round(self.rounds)
        return self.result()

    def result(self) -> FrontResult:
        """The front: per bin the evaluated subnet with the highest estimate (see the module docstring)."""
        self._fit()
        estimate = self.estimates()
        best: list[Candidate | None] = [None] * self.bins.count
        for a, c in self.evaluated.items():
            i = self._bin(a)
            if i is None:
                continue
            other = best[i]
            if other is None or (estimate[a], -self.cost(a)) > (estimate[other.arch], -self.cost(other.arch)):
                best[i] = c
        pool: dict[ArchConfig, float | None] = {a: None for a in self.evaluated}
        for waiting in self.waiting:
            pool.update(waiting)
        return FrontResult(self.bins, best, list(self.evaluated.values()), pool, dict(self.predicted_before),
                           self.model, self.replayed, self.model is not None, 0, len(self.evaluated))
