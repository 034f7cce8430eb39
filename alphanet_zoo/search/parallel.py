"""A generation's candidates split across the processes of a ``torchrun`` run, results gathered on every one.

Which process evaluates which candidate depends only on the candidates (their estimated cost),
never on timing, so every process knows the split without talking; each evaluates its share,
and one all-gather gives everyone every result in the candidates' order. A failure on one
process (an unreadable image) is passed along and raised on every process, so all of them stop
with the same message instead of waiting for each other.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence, TypeVar

from .. import distributed
from ..errors import AlphaNetError, InputError
from .evolution import Evaluation

T = TypeVar("T")


def assign(costs: Sequence[float], world_size: int) -> list[int]:
    """The rank of each item: the costliest first, each to the least loaded rank (ties: the lowest
    rank, then the earlier item). Deterministic: the same costs give the same split everywhere."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    loads = [0.0] * world_size
    owners = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-float(costs[i]), i)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        owners[i] = rank
        loads[rank] += float(costs[i])
    return owners


def map_over_ranks(fn: Callable[[T], Any], items: Sequence[T], costs: Sequence[float],
                   on_done: Callable[[int], None] | None = None) -> list[tuple[Any, int, float]]:
    """``[(fn(item), rank that ran it, seconds)]`` for every item, on every process.

    This process runs ``fn`` on its share (`assign`) and ``on_done(i)`` after each; the results
    are all-gathered. Outside a process group it runs everything here.
    """
    rank, world = distributed.rank_and_world()
    owners = assign(costs, world)
    mine: dict[int, tuple[str, Any, float]] = {}
    for i, item in enumerate(items):
        if owners[i] != rank:
            continue
        start = time.perf_counter()
        try:
            mine[i] = ("ok", fn(item), time.perf_counter() - start)
        except AlphaNetError as e:
            if world == 1:
                raise
            mine[i] = ("error", (e.exit_code, f"rank {rank}: {e}"), 0.0)  # a message pickles; any error may not
            break  # the run stops: tell the others now rather than after the rest of the share
        if on_done is not None:
            on_done(i)
    merged: dict[int, tuple[str, Any, float]] = {}
    for part in distributed.all_gather_object(mine, "gathering the candidates' results"):
        merged.update(part)
    errors = [merged[i][1] for i in sorted(merged) if merged[i][0] == "error"]
    if errors:
        code, message = errors[0]
        raise (InputError if code == InputError.exit_code else AlphaNetError)(message)
    return [(merged[i][1], owners[i], merged[i][2]) for i in range(len(items))]


def evaluate_across_ranks(evaluate: Callable[[Any], float], cost: Callable[[Any], float],
                          on_done: Callable[[int], None] | None = None):
    """An ``evaluate_many`` for `EvolutionSearch`: ``evaluate(arch) -> top-1`` over this run's processes."""

    def evaluate_many(archs: Sequence[Any]) -> list[Evaluation]:
        results = map_over_ranks(evaluate, archs, [cost(a) for a in archs], on_done)
        world = distributed.rank_and_world()[1]
        return [Evaluation(float(top1), rank, seconds, world) for top1, rank, seconds in results]

    return evaluate_many
