"""Front search as a library call: ``alphanet_zoo.search_front("200:1200:10")``, what ``alphanet-search --front`` runs.

    import alphanet_zoo
    result = alphanet_zoo.search_front("200:1200:10", evaluator="surrogate", max_evaluations=537, seed=0)
    [(c.mflops, c.top1) for c in result.front]

``evaluator`` is ``"surrogate"`` (the AttentiveNAS authors' accuracy predictor with simulated
held-out noise, `alphanet_zoo.search.surrogate`) or any ``evaluate_many(archs) -> [Evaluation]``
(``SubnetEvaluator`` on a supernet, wrapped by `evaluate_across_ranks` under torchrun).
``algorithm``: ``"guided"`` (`GuidedFrontSearch`, the default), ``"official"`` (the authors' loop,
`OfficialSearch`) or ``"evolution"`` (`FrontSearch`, optionally with its skill-tested predictor).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from ..config import ArchConfig
from ..errors import InputError
from ..flops import count_flops
from .evolution import Candidate, Evaluation
from .front import Bins, FrontResult, FrontSearch
from .guided import GuidedFrontSearch
from .official import OfficialSearch
from .surrogate import DEFAULT_IMAGES, SurrogateEvaluator

ALGORITHMS = ("guided", "official", "evolution")
EvaluateMany = Callable[[Sequence[ArchConfig]], Sequence[Evaluation]]


def make_front_search(algorithm: str, bins: Bins, evaluate_many: EvaluateMany, *,
                      cost: Callable[[ArchConfig], float] = count_flops,
                      latency: Callable[[ArchConfig], float] | None = None, seed: int = 0,
                      max_evaluations: int | None = None, known: Mapping[ArchConfig, Candidate] | None = None,
                      top1_step: float | None = None, on_evaluated: Callable[[], None] | None = None,
                      **options: Any):
    """The search object for ``algorithm`` (its ``run(callback)`` returns a `FrontResult`). ``options`` go
    to the algorithm: ``population``, ``generations``, ``predictor``... for evolution; ``parents``,
    ``mutations``, ``crossovers``, ``mutate_prob``, ``iterations`` for official; ``explore``,
    ``round_size`` for guided."""
    common = dict(cost=cost, latency=latency, seed=seed, known=known, on_evaluated=on_evaluated,
                  max_evaluations=max_evaluations)
    if algorithm == "guided":
        return GuidedFrontSearch(bins, evaluate_many, top1_step=top1_step, **common, **options)
    if algorithm == "official":
        return OfficialSearch(bins, evaluate_many, **common, **options)
    if algorithm == "evolution":
        return FrontSearch(bins, evaluate_many, top1_step=top1_step or None, **common, **options)
    raise InputError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")


def search_front(front: str | Bins, *, evaluator: str | EvaluateMany = "surrogate", algorithm: str = "guided",
                 max_evaluations: int | None = None, seed: int = 0, surrogate_images: int = DEFAULT_IMAGES,
                 top1_step: float | None = None, on_round: Callable[[int], None] | None = None,
                 **options: Any) -> FrontResult:
    """The best subnet per bin of ``front`` (``"MIN:MAX:STEP"`` MFLOPs, or `Bins`); see the module docstring.
    With the surrogate, ``top1_step`` defaults to 100 / ``surrogate_images`` (the measurement's grain; 0 when
    noise-free)."""
    bins = front if isinstance(front, Bins) else Bins.parse(front)
    if isinstance(evaluator, str):
        if evaluator != "surrogate":
            raise InputError(f"evaluator must be 'surrogate' or a callable, got {evaluator!r}")
        evaluator = SurrogateEvaluator(surrogate_images, seed)
        if top1_step is None:
            top1_step = 100.0 / surrogate_images if surrogate_images else 0.0
    search = make_front_search(algorithm, bins, evaluator, seed=seed, max_evaluations=max_evaluations,
                               top1_step=top1_step, **options)
    return search.run(on_round)
