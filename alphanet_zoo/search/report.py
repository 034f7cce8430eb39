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
                         reference), "spread_ms", "held_ms" (in the machine's slower state: what the
                         budget is checked on), "prediction_error" (predicted / held - 1),
                         "fastest_turn_ms", "meets_budget",
                         "reference": {"name": "a0", "measured_ms", "held_ms", "fastest_turn_ms", "predicted_ms"},
                         "anchor": {"scale", "method", "references": [{"name", "predicted_ms", "measured_ms",
                                    "fastest_ms", "median_ms", "turns_ms", ...}]},
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

from ..flops import count_flops
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


FRONT_FORMAT = "alphanet_zoo.front/1"


def front_document(result, *, predictor_mode: str, margin: float, world_size: int, seed: int, search_id: str,
                   heldout_images: int, calibration, seconds: float, population: int, generations: int,
                   latency: dict[str, Any] | None = None, bound: str | None = None) -> dict[str, Any]:
    """``alphanet-search --front`` output (format ``alphanet_zoo.front/1``), for a `FrontResult`::

        {"format": "alphanet_zoo.front/1", "cost": "MFLOPs" | "ms",
         "range": {"min", "max", "step"},
         "bins": [{"low", "high", "mflops", "latency_ms", "top1" (real, on the held-out images),
                   "predicted_top1" (what the predictor said before it was evaluated; null: evaluated
                   without a prediction), "generation", "architecture"}
                  | {"low", "high", "empty": true}],
         "totals": {"real_evaluations", "replayed", "predicted_only", "candidates", "generations", "population"},
         "predictor": {"mode": "none" | "auto" | FILE, "model": "ridge", "kendall_tau" (predictions made
                       before each evaluation against the real top-1), "tau_pairs", "loo_rmse", "alpha",
                       "margin", "bound", "rows", "loo_tau" (leave-one-out predictions against the real top-1),
                       "trusted" (whether that tau showed skill at the end), "untrusted_rounds" (rounds in
                       which it had not, so nothing was ruled out: each bin's first waiting candidate was
                       evaluated)},
         "predicted_only": [{"mflops", "predicted_top1" (the last prediction), "architecture"}],
         "world_size", "seed", "search", "heldout_images", "calibration", "seconds"}

    Every ``top1`` is a real evaluation; predictions are only ever under keys named ``predicted_*``.
    """
    bins = result.bins
    rows = []
    for i, c in enumerate(result.best):
        low, high = bins.bounds(i)
        row: dict[str, Any] = {"low": round(low, 6), "high": round(high, 6)}
        if c is None:
            row["empty"] = True
        else:
            p = result.predicted_before.get(c.arch)
            row.update({"mflops": round(c.mflops, 4),
                        "latency_ms": None if c.latency_ms is None else round(c.latency_ms, 4),
                        "top1": c.top1, "predicted_top1": None if p is None else round(p, 4),
                        "generation": c.generation, "architecture": c.arch.to_dict()})
        rows.append(row)
    evaluated = {c.arch for c in result.history}
    predicted_only = [a for a in result.pool if a not in evaluated]
    model = result.predictor
    tau = result.kendall_tau
    predicted_rows = []
    for a in predicted_only:
        p = result.pool[a]
        predicted_rows.append({"mflops": round(count_flops(a), 4), "predicted_top1": None if p is None else round(p, 4),
                               "architecture": a.to_dict()})
    return {
        "format": FRONT_FORMAT, "cost": bins.unit,
        "range": {"min": bins.low, "max": bins.high, "step": bins.step},
        "bins": rows,
        "totals": {"real_evaluations": result.evaluations, "replayed": result.replayed,
                   "predicted_only": len(predicted_only), "candidates": len(result.pool),
                   "generations": generations, "population": population},
        "predictor": {"mode": predictor_mode, "model": None if predictor_mode == "none" else "ridge",
                      "kendall_tau": None if tau is None else round(tau, 4), "tau_pairs": result.tau_pairs,
                      "loo_rmse": None if model is None else round(model.loo_rmse, 4),
                      "alpha": None if model is None else model.alpha, "rows": None if model is None else model.rows,
                      "margin": margin if predictor_mode != "none" else None,
                      "bound": bound if predictor_mode != "none" else None,
                      "loo_tau": None if model is None or model.loo_tau is None else round(model.loo_tau, 4),
                      "trusted": None if model is None else result.trusted,
                      "untrusted_rounds": result.untrusted_rounds},
        "predicted_only": predicted_rows,
        "world_size": world_size, "seed": seed, "search": search_id, "heldout_images": heldout_images,
        "calibration": dataclasses.asdict(calibration) if calibration is not None else None,
        "latency": latency, "seconds": round(seconds, 3),
    }


def front_table(result, seconds: float) -> list[str]:
    """The front bin by bin as table lines (top-1 real; ``~`` marks the prediction made before evaluating)."""
    bins = result.bins
    evaluated = result.evaluations
    timed = any(c.latency_ms is not None for c in result.history)
    lines = [f"Front over {bins.low:g}..{bins.high:g} {bins.unit} by {bins.step:g}: {evaluated} evaluations, "
             f"{len(result.pool) - evaluated} candidates only predicted ({seconds:.0f} s)",
             f"{'bin':>15} {'MFLOPs':>9}" + (f" {'ms':>8}" if timed else "") + f" {'top-1 %':>8} {'~pred':>7}  "
             "architecture"]
    for i, c in enumerate(result.best):
        low, high = bins.bounds(i)
        span = f"{low:g}..{high:g}"
        if c is None:
            lines.append(f"{span:>15} {'-':>9}" + (f" {'-':>8}" if timed else "") + f" {'-':>8} {'':>7}  "
                         "(nothing evaluated)")
            continue
        p = result.predicted_before.get(c.arch)
        pred = f"{p:>7.2f}" if p is not None else f"{'':>7}"
        ms = f" {c.latency_ms:>8.2f}" if timed and c.latency_ms is not None else ""
        lines.append(f"{span:>15} {c.mflops:>9.2f}{ms} {c.top1:>8.2f} {pred}  {describe(c.arch)}")
    tau = result.kendall_tau
    if tau is not None:
        lines.append(f"predictor: Kendall tau {tau:.3f} over {result.tau_pairs} candidates predicted before evaluation")
    if result.untrusted_rounds:
        lines.append(f"predictor: no skill shown on held-out evaluations in {result.untrusted_rounds} round(s), "
                     "which ruled nothing out")
    return lines
