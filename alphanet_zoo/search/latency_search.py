"""The latency side of ``alphanet-search --latency-ms``: the table (rank 0 loads or builds it, every
process gets the same), the predictor, and the end-to-end check of the best candidates."""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from .. import distributed
from ..cli import Console, progress
from ..errors import AlphaNetError
from .evolution import Candidate, SearchResult, rank_key
from .latency import LatencyPredictor, LatencyTable, load_or_build, time_in_turns
from .latency_runtimes import Runtime, make_runtime

log = logging.getLogger("alphanet_zoo")
REFERENCE = "a0"  # the smallest subnet, timed beside every checked candidate


@dataclass
class LatencySetup:
    """The runtime (on rank 0), the table every process shares, and its predictor."""

    runtime: Runtime | None
    table: LatencyTable
    predictor: LatencyPredictor
    path: str
    num_classes: int

    @property
    def table_id(self) -> str:
        """A hash of the numbers the predictions come from (a resumed search must use the same)."""
        data = {"entries": self.table.entries, "scale": self.table.scale, "offset": self.table.offset_ms}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def create(cls, args: argparse.Namespace, num_classes: int, console: Console, quiet: dict) -> "LatencySetup":
        import torch

        rank, _ = distributed.rank_and_world()
        threads = args.threads or torch.get_num_threads()
        runtime, shared = None, None
        if rank == 0:
            runtime = make_runtime(args.backend, threads, args.batch_size or 1)
            try:
                table, path, built = load_or_build(runtime, args.latency_table, num_classes=num_classes,
                                                   max_mflops=args.flops, progress=progress)
            except BaseException as e:
                distributed.broadcast_object(("error", str(e)), what="sharing the latency table")
                raise
            shared = ("ok", (table.to_dict(), str(path), built))
        shared = distributed.broadcast_object(shared, what="waiting for rank 0's latency table")
        if shared[0] == "error":
            raise AlphaNetError(f"rank 0 could not make the latency table: {shared[1]}")
        data, path, built = shared[1]
        table = LatencyTable.from_dict(data)
        v = table.validation or {}
        if v:
            console.status(f"latency table {'built' if built else 'loaded'}: {path} ({table.describe()}; "
                           f"{len(table.entries)} layers, {table.build_seconds:.0f} s to build); predictor error on "
                           f"{v.get('subnets')} random subnets measured end to end: median "
                           f"{100 * v['median_rel_error']:.1f} %, worst {100 * v['worst_rel_error']:.1f} %")
        return cls(runtime, table, LatencyPredictor(table, num_classes), path, num_classes)

    def check_best(self, result: SearchResult, budget_ms: float, top: int, main_rank: bool,
                   console: Console) -> tuple[Candidate, dict[str, Any]]:
        """Measure the most accurate candidates end to end (rank 0), beside the reference; the first
        that meets the budget is the one reported. Every process gets the same answer."""
        shared = None
        if main_rank:
            try:
                shared = ("ok", self._measure(result, budget_ms, top, console))
            except BaseException as e:
                distributed.broadcast_object(("error", str(e)), what="sharing the measured latency")
                raise
        shared = distributed.broadcast_object(shared, what="waiting for rank 0's latency measurement")
        if shared[0] == "error":
            raise AlphaNetError(f"rank 0 could not measure the best candidates: {shared[1]}")
        chosen, checked = shared[1]
        return next(c for c in result.history if c.arch == chosen), checked

    def _measure(self, result: SearchResult, budget_ms: float, top: int, console: Console):
        """The candidates by merit (`rank_key`), each measured end to end in turns with the reference
        until one meets the budget (the median of its calls, as a user times it), at most ``top`` of
        them. After a miss, candidates that the misses so far say would miss too (predicted times the
        worst measured/predicted ratio above the budget) are skipped."""
        from ..registry import MODELS

        assert self.runtime is not None
        reference = MODELS[REFERENCE].arch
        with self.runtime.active():
            reference_run = self.runtime.model(reference, self.num_classes)
        tried: list[dict[str, Any]] = []
        measured: list[Candidate] = []
        chosen, factor = None, 1.0
        bar = progress(total=top, desc="measuring the best", unit="subnet")

        def meets(c: Candidate, order: str) -> bool:
            with self.runtime.active():
                timed, ref = time_in_turns([self.runtime.model(c.arch, self.num_classes), reference_run])
            bar.update(1)
            tried.append({"top1": c.top1, "mflops": round(c.mflops, 4), "predicted_ms": round(c.latency_ms, 4),
                          "measured_ms": round(timed["median_ms"], 4), "fastest_turn_ms": round(timed["ms"], 4),
                          "reference_ms": round(ref["median_ms"], 4), "order": order, "arch": c.arch.to_dict()})
            measured.append(c)
            return timed["median_ms"] <= budget_ms

        for c in sorted(result.history, key=rank_key, reverse=True):
            if len(tried) >= top:
                break
            if c.latency_ms * factor > budget_ms:
                continue
            if meets(c, "merit"):
                chosen = c
                break
            factor = max(factor, tried[-1]["measured_ms"] / c.latency_ms)
        # Every candidate the misses leave was predicted too close to the budget: the fastest predicted
        # ones next (the budget is a constraint; accuracy gives way), as long as measurements remain.
        rest = sorted((c for c in result.history if c not in measured), key=lambda c: (c.latency_ms, -c.top1))
        for c in rest if chosen is None else ():
            if len(tried) >= top:
                break
            if meets(c, "fastest"):
                chosen = c
                break
        bar.close()
        if chosen is None:  # none met it: the fastest of those measured, with a warning
            fastest = min(range(len(tried)), key=lambda i: tried[i]["measured_ms"])
            chosen = measured[fastest]
            log.warning("none of the %d candidates measured end to end met %g ms; reporting the fastest of them "
                        "(%.2f ms); the machine may be busy, or the latency table stale (rebuild it)",
                        len(tried), budget_ms, tried[fastest]["measured_ms"])
        row = next(t for t in tried if t["arch"] == chosen.arch.to_dict())
        key = self.table.key
        validation = self.table.validation or {}
        checked = {
            "budget_ms": budget_ms, "backend": key["runtime"], "version": key["version"], "threads": key["threads"],
            "batch_size": key["batch_size"], "machine": key["machine"], "table": self.path,
            "predicted_ms": row["predicted_ms"], "measured_ms": row["measured_ms"],
            "fastest_turn_ms": row["fastest_turn_ms"], "meets_budget": row["measured_ms"] <= budget_ms,
            "reference": {"name": REFERENCE, "measured_ms": row["reference_ms"],
                          "predicted_ms": round(self.predictor(reference), 4)},
            "predictor": {"scale": self.table.scale, "offset_ms": self.table.offset_ms,
                          "median_rel_error": validation.get("median_rel_error"),
                          "worst_rel_error": validation.get("worst_rel_error"),
                          "validation_subnets": validation.get("subnets")},
            "tried": tried,
        }
        return chosen.arch, checked

