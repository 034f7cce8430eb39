"""What ``alphanet-search`` writes and prints: ``best.json`` and the Pareto front.

``best.json`` (format ``alphanet_zoo.search/1``)::

    {
      "format": "alphanet_zoo.search/1",
      "architecture": {...},            # what alphanet-extract/-eval/-export --arch best.json read
      "mflops": 301.2, "top1": 71.25,   # top-1 % on the held-out images, after BN calibration
      "latency_ms": 7.9 | null,         # predicted (latency search)
      "generation": 7, "evaluated": 412, "replayed": 0 (candidates read from a resumed history),
      "world_size": 2, "seed": 0, "search": "5f0c3a9e1b2d" (the history's settings fingerprint),
      "budget": {"min_mflops", "max_mflops", "latency_ms"},
      "heldout_images": 5000, "calibration": {"data", "num_batches", "batch_size", "seed", "crop_size", "recipe"},
      "latency": null | {"budget_ms", "backend", "version", "threads", "batch_size", "machine", "table",
                         "predicted_ms", "measured_ms" (the median of its calls, timed in turns with the
                         reference), "fastest_turn_ms", "meets_budget",
                         "reference": {"name": "a0", "measured_ms", "predicted_ms"},
                         "predictor": {"scale", "offset_ms", "median_rel_error", "worst_rel_error", ...},
                         "tried": [{"top1", "mflops", "predicted_ms", "measured_ms", ..., "arch"}]},
      "seconds": 812.3
    }

The reported candidate is the history's best (highest top-1, then fewest predicted milliseconds,
then fewest MFLOPs); in a latency search, the first in that order whose end-to-end measurement
meets the budget (``latency.tried`` lists those measured, in order; see
`alphanet_zoo.search.latency_search.LatencySetup.check_best`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .budget import Budget
from .evolution import Candidate, SearchResult

BEST_FORMAT = "alphanet_zoo.search/1"


def best_document(best: Candidate, result: SearchResult, *, world_size: int, seed: int, budget: Budget,
                  heldout_images: int, calibration, latency: dict[str, Any] | None, search_id: str,
                  seconds: float, replayed: int = 0) -> dict[str, Any]:
    return {
        "format": BEST_FORMAT, "architecture": best.arch.to_dict(), "mflops": round(best.mflops, 4),
        "top1": best.top1, "latency_ms": None if best.latency_ms is None else round(best.latency_ms, 4),
        "generation": best.generation, "evaluated": len(result.history), "replayed": replayed,
        "world_size": world_size, "seed": seed, "search": search_id,
        "budget": {"min_mflops": budget.min_mflops, "max_mflops": budget.max_mflops,
                   "latency_ms": budget.max_latency_ms},
        "heldout_images": heldout_images,
        "calibration": dataclasses.asdict(calibration) if calibration is not None else None,
        "latency": latency, "seconds": round(seconds, 3),
    }


def describe(arch) -> str:
    return (f"res {arch.resolution} w {','.join(map(str, arch.width))} d {''.join(map(str, arch.depth))} "
            f"k {''.join(map(str, arch.kernel_size))} e {''.join(map(str, arch.expand_ratio))}")


def front_lines(result: SearchResult, best: Candidate, seconds: float) -> list[str]:
    """The Pareto front as table lines (against predicted latency in a latency search, else MFLOPs), best marked."""
    timed = best.latency_ms is not None
    front = result.latency_pareto if timed else result.pareto
    if best not in front:
        front = sorted(front + [best], key=lambda c: c.latency_ms if timed else c.mflops)
    lines = [f"Pareto front of {len(result.history)} evaluated subnets ({seconds:.0f} s):",
             f"{'MFLOPs':>9} {'ms':>8} {'top-1 %':>8}  architecture" if timed
             else f"{'MFLOPs':>9} {'top-1 %':>8}  architecture"]
    for c in front:
        mark = "  <- best" if c.arch == best.arch else ""
        ms = f" {c.latency_ms:>8.2f}" if timed else ""
        lines.append(f"{c.mflops:>9.2f}{ms} {c.top1:>8.2f}  {describe(c.arch)}{mark}")
    return lines
