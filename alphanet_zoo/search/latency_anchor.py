"""A cached latency table re-anchored to today's machine before a search, and the machine's slower state.

A table is measured once and reused for days; the machine drifts (clocks, load, other tenants), so its
absolute milliseconds go stale while its ranking stays useful. Before a search a few reference subnets
(the smallest, one in the middle of the FLOPs range, the largest the search may pick) are timed end to
end, in turns, as a deployer runs them; the table's predictions are then mapped onto today's
milliseconds: exact at each reference, linear in the table's prediction between two of them, and in
proportion below the smallest and above the largest (`Anchor.map`).

A shared machine also changes speed for seconds to minutes at a time (on a 2-core VM, two ONNX Runtime
threads ran a0 in 3.7 ms or in 5.7 ms, the whole VM switching between the two every few seconds or
minutes, whatever the process did). A deployer times the subnet at a moment of their own, so a budget
holds only if it holds in the slower state: a reference's figure (``measured_ms``) is its latency in the
slowest state its turns saw that lasted two turns (`slower_state_ms`; one slow turn is a blip of load).
Subnets timed side by side take the same state, so each reference is the smallest's slower state times
its median ratio to the smallest over their turns (`ratio_to`): a state the smallest's turns saw counts
for all. The quietest turn (``fastest_ms``) and the median of the calls are recorded beside it.

    anchor = measure_anchor(runtime, predictor, reference_subnets(max_mflops=260))
    today = AnchoredPredictor(predictor, anchor)       # today(arch) -> ms on this machine, at its slower
"""
from __future__ import annotations

import functools
import random
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..config import SEARCH_SPACE, ArchConfig, SearchSpace
from ..flops import count_flops
from .latency import measure_models
from .sampling import flops_range, sample_in_range

SEED = 2033  # the middle and the capped largest references are the same subnets every run
SLOW_STATE_TURNS = 2  # a slower state counts when it lasts this many turns
STATE_CHANGE = 1.15  # slower / fastest turn beyond which the machine is said to have changed speed


def slower_state_ms(turns_ms: Sequence[float]) -> float:
    """The machine's slower state from a subnet's turn medians: the `SLOW_STATE_TURNS`-th slowest turn."""
    ordered = sorted(turns_ms, reverse=True)
    return ordered[min(SLOW_STATE_TURNS, len(ordered)) - 1]


def ratio_to(turns_ms: Sequence[float], reference_turns_ms: Sequence[float]) -> float:
    """The median over turns of a subnet's turn median / the reference's in the same round (timed side
    by side, both take the machine's state of the moment, which cancels)."""
    return statistics.median(t / r for t, r in zip(turns_ms, reference_turns_ms))


def held_ms(timed: dict[str, Any], reference: dict[str, Any], reference_turns_ms: Sequence[float]) -> float:
    """A subnet's latency in the machine's slower state: its `ratio_to` the reference it was timed beside
    (both `latency.summary` dicts) times the reference's `slower_state_ms` over ``reference_turns_ms``
    (every turn the reference was timed in), and at least the median of its own calls."""
    return max(ratio_to(timed["turns_ms"], reference["turns_ms"]) * slower_state_ms(reference_turns_ms),
               timed["median_ms"])


def reference_subnets(space: SearchSpace = SEARCH_SPACE,
                      max_mflops: float | None = None) -> list[tuple[str, ArchConfig]]:
    """(name, subnet): the smallest, a middle one and the largest of the space up to ``max_mflops``
    (fewer when the range is too narrow to tell them apart)."""
    low, high = flops_range(space)
    if max_mflops is not None and max_mflops < high:
        high = max_mflops
    if high <= low + 1.0:
        return [("smallest", space.smallest())]
    rng = random.Random(SEED)
    tolerance = max(2.0, (high - low) / 20)
    middle = sample_in_range(max(low, (low + high) / 2 - tolerance), min(high, (low + high) / 2 + tolerance), rng,
                             space)
    largest = space.largest() if count_flops(space.largest()) <= high else \
        sample_in_range(max(low, high - tolerance), high, rng, space)
    return [("smallest", space.smallest()), ("middle", middle), ("largest", largest)]


@dataclass
class Anchor:
    """The references' table predictions and today's end-to-end measurements (ms), and the mapping."""

    references: list[dict[str, Any]]

    @property
    def scale(self) -> float:
        """The median of measured / predicted over the references (1: the table still holds)."""
        return statistics.median(r["measured_ms"] / r["predicted_ms"] for r in self.references)

    @functools.cached_property
    def _points(self) -> list[tuple[float, float]]:
        """(predicted, measured) by prediction; measured made non-decreasing (noise must not invert the map)."""
        points: list[tuple[float, float]] = []
        for r in sorted(self.references, key=lambda r: r["predicted_ms"]):
            p, m = float(r["predicted_ms"]), float(r["measured_ms"])
            if points and p <= points[-1][0]:
                continue
            points.append((p, max(m, points[-1][1]) if points else m))
        return points

    def map(self, predicted_ms: float) -> float:
        """Today's milliseconds for a table prediction (monotone; exact at the references)."""
        points = self._points
        (p0, m0), (pn, mn) = points[0], points[-1]
        if predicted_ms <= p0:
            return m0 * (predicted_ms / p0)
        if predicted_ms >= pn:
            return mn * (predicted_ms / pn)
        for (a, ma), (b, mb) in zip(points, points[1:]):
            if predicted_ms <= b:
                return ma + (mb - ma) * (predicted_ms - a) / (b - a)
        return mn  # unreachable

    def smallest(self) -> dict[str, Any]:
        return min(self.references, key=lambda r: r["mflops"])

    def changed_speed(self) -> bool:
        """Whether the smallest's turns saw the machine change speed (`STATE_CHANGE`)."""
        turns = self.smallest().get("turns_ms") or [0.0]
        return min(turns) > 0 and slower_state_ms(turns) / min(turns) > STATE_CHANGE

    def describe(self) -> str:
        parts = ", ".join(f"{r['name']} {r['measured_ms']:.2f} ms (fastest turn "
                          f"{r.get('fastest_ms', r['measured_ms']):.2f}, table {r['predicted_ms']:.2f})"
                          for r in self.references)
        text = f"latency table re-anchored to this machine now: {parts}; scale x{self.scale:.3f}"
        if self.changed_speed():
            s = self.smallest()
            text += (f"; the machine changed speed while it was timed (the smallest {s['fastest_ms']:.2f} to "
                     f"{s['measured_ms']:.2f} ms): budgets are held at its slower")
        return text

    def to_dict(self) -> dict[str, Any]:
        """For best.json / front.json (milliseconds rounded; ``spread_ms``: the interquartile range of the calls)."""
        def rounded(v):
            return [round(x, 4) for x in v] if isinstance(v, list) else round(v, 4)

        rows = [{k: rounded(v) if k.endswith("_ms") else v for k, v in r.items()} for r in self.references]
        return {"scale": round(self.scale, 4), "method": "interpolated between the references, at the machine's "
                "slower state", "references": rows}


def measure_anchor(runtime, predictor: Callable[[ArchConfig], float], references: Sequence[tuple[str, ArchConfig]],
                   num_classes: int = 1000, rounds: int = 8) -> Anchor:
    """Time ``references`` end to end on ``runtime`` (in turns) beside the table's predictions; each one's
    ``measured_ms`` is its latency in the machine's slower state (see the module's docstring)."""
    names, archs = zip(*references)
    timed = measure_models(runtime, list(archs), num_classes, rounds=rounds)
    flops = [count_flops(arch, num_classes) for arch in archs]
    smallest = timed[flops.index(min(flops))]
    rows = [{"name": name, "mflops": round(mflops, 2), "predicted_ms": predictor(arch),
             "measured_ms": held_ms(t, smallest, smallest["turns_ms"]),
             "fastest_ms": t["ms"], "median_ms": t["median_ms"],
             "spread_ms": t.get("p75_ms", t["median_ms"]) - t.get("p25_ms", t["median_ms"]),
             "turns_ms": t["turns_ms"], "arch": arch.to_dict()}
            for name, arch, mflops, t in zip(names, archs, flops, timed)]
    return Anchor(rows)


class AnchoredPredictor:
    """``predictor(arch)`` mapped by ``anchor`` onto today's milliseconds (cached per architecture)."""

    def __init__(self, predictor: Callable[[ArchConfig], float], anchor: Anchor) -> None:
        self.table_predictor, self.anchor = predictor, anchor
        self._predict = functools.lru_cache(maxsize=65536)(lambda arch: anchor.map(predictor(arch)))

    def __call__(self, arch: ArchConfig) -> float:
        return self._predict(arch)
