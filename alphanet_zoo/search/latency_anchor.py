"""A cached latency table re-anchored to today's machine before a search.

A table is measured once and reused for days; the machine drifts (clocks, load, other tenants), so its
absolute milliseconds go stale while its ranking stays useful. Before a search a few reference subnets
(the smallest, one in the middle of the FLOPs range, the largest the search may pick) are timed end to
end, in turns, as a deployer runs them; the table's predictions are then mapped onto today's
milliseconds: exact at each reference, linear in the table's prediction between two of them, and in
proportion below the smallest and above the largest (`Anchor.map`).

A reference's figure is the median of its quietest turn (`latency.robust_ms`), the statistic the
table is built and fitted on: the anchor follows the machine's drift, not the load of the minute
(the median of all its calls is recorded beside it; the winner of a search is still checked on the
median of its calls).

    anchor = measure_anchor(runtime, predictor, reference_subnets(max_mflops=260))
    today = AnchoredPredictor(predictor, anchor)       # today(arch) -> ms on this machine, now
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

    def describe(self) -> str:
        parts = ", ".join(f"{r['name']} {r['measured_ms']:.2f} ms (median {r.get('median_ms', r['measured_ms']):.2f}, "
                          f"table {r['predicted_ms']:.2f})" for r in self.references)
        return f"latency table re-anchored to this machine now: {parts}; scale x{self.scale:.3f}"

    def to_dict(self) -> dict[str, Any]:
        """For best.json / front.json (milliseconds rounded; ``spread_ms``: the interquartile range of the calls)."""
        rounded = [{k: round(v, 4) if k.endswith("_ms") else v for k, v in r.items()} for r in self.references]
        return {"scale": round(self.scale, 4), "method": "interpolated between the references",
                "references": rounded}


def measure_anchor(runtime, predictor: Callable[[ArchConfig], float], references: Sequence[tuple[str, ArchConfig]],
                   num_classes: int = 1000, rounds: int = 8) -> Anchor:
    """Time ``references`` end to end on ``runtime`` (in turns) beside the table's predictions."""
    names, archs = zip(*references)
    timed = measure_models(runtime, list(archs), num_classes, rounds=rounds)
    rows = [{"name": name, "mflops": round(count_flops(arch, num_classes), 2),
             "predicted_ms": predictor(arch), "measured_ms": t["ms"], "median_ms": t["median_ms"],
             "spread_ms": t.get("p75_ms", t["median_ms"]) - t.get("p25_ms", t["median_ms"]),
             "arch": arch.to_dict()} for name, arch, t in zip(names, archs, timed)]
    return Anchor(rows)


class AnchoredPredictor:
    """``predictor(arch)`` mapped by ``anchor`` onto today's milliseconds (cached per architecture)."""

    def __init__(self, predictor: Callable[[ArchConfig], float], anchor: Anchor) -> None:
        self.table_predictor, self.anchor = predictor, anchor
        self._predict = functools.lru_cache(maxsize=65536)(lambda arch: anchor.map(predictor(arch)))

    def __call__(self, arch: ArchConfig) -> float:
        return self._predict(arch)
