"""The official AlphaNet front search as a baseline: its generations against a hand-written replay of
the loop, its evaluation count, and the cap on evaluations."""
from __future__ import annotations

import random

import pytest

from alphanet_zoo.config import SEARCH_SPACE
from alphanet_zoo.flops import count_flops
from alphanet_zoo.search.evolution import Evaluation
from alphanet_zoo.search.front import Bins
from alphanet_zoo.search.official import OfficialSearch, cross, mutate_other, official_evaluations
from alphanet_zoo.search.sampling import genes
from alphanet_zoo.search.surrogate import SurrogateEvaluator


def score(arch):
    """A deterministic top-1 that ties often (so the strict "better" rule matters)."""
    return float(sum(arch.depth) + arch.kernel_size[2] // 2 + (arch.resolution == 224))


def recording_evaluator(calls):
    def evaluate_many(archs):
        calls.append(list(archs))
        return [Evaluation(score(a)) for a in archs]
    return evaluate_many


def test_the_official_loop_matches_a_hand_replay_of_three_generations():
    bins = Bins.parse("250:450:20")
    calls = []
    search = OfficialSearch(bins, recording_evaluator(calls), seed=5, parents=6, mutations=3, crossovers=2,
                            mutate_prob=0.2, iterations=3)
    result = search.run()

    # the replay: the same random stream, the loop written out step by step
    rng = random.Random(5)
    table = genes(SEARCH_SPACE)

    def inside(a):
        return 250 <= count_flops(a) <= 450

    def draw(make):
        while True:
            a = make()
            if inside(a):
                return a

    generation = [SEARCH_SPACE.smallest()] if inside(SEARCH_SPACE.smallest()) else []
    generation += [draw(lambda: SEARCH_SPACE.sample(rng)) for _ in range(6 - len(generation))]
    best = {}
    expected_batches = []
    for g in range(3):
        expected_batches.append(generation)
        for a in generation:
            k = min(int((count_flops(a) - 250) // 20), bins.count - 1)
            if k not in best or score(a) > score(best[k]):
                best[k] = a
        if g == 2:
            break
        parents = [best[k] for k in sorted(best)]

        def mutant():
            a = rng.choice(parents)
            for gene, options in table:
                if rng.random() < 0.2:
                    field, index = gene
                    value = getattr(a, field) if index is None else getattr(a, field)[index]
                    a = mutate_other_one(a, gene, rng.choice([o for o in options if o != value]))
            return a

        def crossing():
            a, b = rng.choice(parents), rng.choice(parents)
            child = a
            for gene, _ in table:
                if rng.random() >= 0.5:
                    field, index = gene
                    value = getattr(b, field) if index is None else getattr(b, field)[index]
                    child = mutate_other_one(child, gene, value)
            return child

        generation = [draw(mutant) for _ in range(3)] + [draw(crossing) for _ in range(2)]

    assert [b for b in calls] == [list(dict.fromkeys(b)) for b in expected_batches]
    assert result.evaluations == 6 + 2 * 5 == official_evaluations(6, 3, 2, 3)
    assert [None if c is None else c.arch for c in result.best] == [best.get(k) for k in range(bins.count)]
    assert calls[0][0] == SEARCH_SPACE.smallest() or count_flops(SEARCH_SPACE.smallest()) < 250


def mutate_other_one(arch, gene, value):
    from alphanet_zoo.search.sampling import _set
    return _set(arch, gene, value)


def test_operators_change_only_what_they_draw():
    rng = random.Random(0)
    a, b = SEARCH_SPACE.smallest(), SEARCH_SPACE.largest()
    assert mutate_other(a, rng, 0.0) == a
    m = mutate_other(a, rng, 1.0)  # every choice moved to another option
    assert all(getattr(m, f) != getattr(a, f) if i is None else getattr(m, f)[i] != getattr(a, f)[i]
               for (f, i), _ in genes(SEARCH_SPACE))
    c = cross(a, b, rng)
    assert all((getattr(c, f) if i is None else getattr(c, f)[i]) in
               ((getattr(a, f), getattr(b, f)) if i is None else (getattr(a, f)[i], getattr(b, f)[i]))
               for (f, i), _ in genes(SEARCH_SPACE))


def test_the_official_defaults_spend_5376_evaluations_on_the_surrogate():
    evaluator = SurrogateEvaluator(0, seed=0)
    result = OfficialSearch(Bins.parse("200:1200:10"), evaluator, seed=0).run()
    assert official_evaluations() == 5376 == result.evaluations
    assert evaluator.calls <= 5376  # repeats inside one generation are evaluated once, and counted as spent
    filled = [c for c in result.best if c is not None]
    assert len(filled) >= 95 and all(200 <= c.mflops <= 1200 for c in filled)


@pytest.mark.parametrize("cap", [1, 7, 100])
def test_max_evaluations_caps_the_official_loop(cap):
    evaluator = SurrogateEvaluator(50_000, seed=1)
    result = OfficialSearch(Bins.parse("300:600:10"), evaluator, seed=1, parents=40, mutations=10, crossovers=10,
                            max_evaluations=cap).run()
    assert result.evaluations == cap and evaluator.calls <= cap
