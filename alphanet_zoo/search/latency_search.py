"""The latency side of a search under a latency budget (``alphanet-search --latency-ms``): the table
(rank 0 loads or builds it, every process gets the same), re-anchored to this machine now
(`latency_anchor`), the predictor, and the end-to-end check of the best candidates."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .. import distributed
from ..errors import InputError
from ..export import timing
from ..registry import MODELS
from .evolution import Candidate, SearchResult, rank_key
from .latency import SUBNET_ROUNDS, SUBNET_TURNS, LatencyPredictor, LatencyTable, load_or_build, summary
from .latency_anchor import (Anchor, AnchoredPredictor, held_ms, measure_anchor, ratio_to, reference_subnets,
                             slower_state_ms)
from .latency_runtimes import Runtime, make_runtime

log = logging.getLogger("alphanet_zoo")
REFERENCE = "a0"  # the smallest subnet, timed beside every checked candidate


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class LatencySetup:
    """The runtime (on rank 0), the table every process shares, and its predictor (re-anchored to
    today's machine when ``anchor`` is set: what the search and its budget use)."""

    runtime: Runtime | None
    table: LatencyTable
    predictor: LatencyPredictor | AnchoredPredictor
    path: str
    num_classes: int
    built: bool = False
    anchor: Anchor | None = None

    @property
    def table_id(self) -> str:
        """A hash of the numbers the predictions come from (a resumed search must use the same)."""
        data = {"entries": self.table.entries, "scale": self.table.scale, "offset": self.table.offset_ms}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def create(cls, backend: str, *, threads: int | None, batch_size: int, table_path: str | None,
               max_mflops: float | None, num_classes: int, progress: Callable | None = None,
               anchor: bool = True) -> "LatencySetup":
        """Rank 0 loads the table at ``table_path`` or builds it on ``backend`` (``progress`` wraps its loops)
        and, with ``anchor``, times the reference subnets (`reference_subnets`) to re-anchor it; every
        process gets the same table and predictor. A failure on rank 0 is one error on every rank."""
        threads = threads or torch.get_num_threads()
        made: dict[str, Any] = {}

        def make() -> tuple[dict, str, bool, list | None]:
            made["runtime"] = runtime = make_runtime(backend, threads, batch_size)
            table, path, built = load_or_build(runtime, table_path, num_classes=num_classes,
                                               max_mflops=max_mflops, progress=progress)
            references = None
            if anchor:
                references = measure_anchor(runtime, LatencyPredictor(table, num_classes),
                                            reference_subnets(max_mflops=max_mflops), num_classes).references
            return table.to_dict(), str(path), built, references

        data, path, built, references = distributed.broadcast_or_raise(make, "making the latency table")
        table = LatencyTable.from_dict(data)
        setup = cls(made.get("runtime"), table, LatencyPredictor(table, num_classes), path, num_classes, built)
        if references is not None:
            setup.anchor = Anchor(references)
            setup.predictor = AnchoredPredictor(setup.predictor, setup.anchor)
        return setup

    def table_ms(self, arch) -> float:
        """The table's own prediction (before re-anchoring)."""
        predictor = self.predictor
        return getattr(predictor, "table_predictor", predictor)(arch)

    def refuse_below(self, budget_ms: float) -> None:
        """An `InputError` when ``budget_ms`` is below the smallest subnet's latency measured now (in the
        machine's slower state: a budget has to hold whenever the deployer times it)."""
        if self.anchor is None:
            return
        smallest = self.anchor.smallest()
        if budget_ms < smallest["measured_ms"]:
            fastest = smallest.get("fastest_ms", smallest["measured_ms"])
            spells = (" (this machine changes speed for seconds at a time: the budget would hold only while it is "
                      "fast)" if fastest <= budget_ms else "")
            raise InputError(f"no subnet fits in {budget_ms:g} ms: the smallest measures {smallest['measured_ms']:.2f} "
                             f"ms end to end on this runtime now, in the machine's slower turns ({fastest:.2f} ms "
                             f"in its fastest, median of its calls {smallest.get('median_ms', fastest):.2f} ms"
                             f"{spells}; {self.table.describe()})")

    def describe(self) -> str:
        """One line on the table and its predictor's measured error."""
        table, v = self.table, self.table.validation or {}
        text = (f"latency table {'built' if self.built else 'loaded'}: {self.path} ({table.describe()}; "
                f"{len(table.entries)} layers, {table.build_seconds:.0f} s to build)")
        if v:
            text += (f"; predictor error on {v.get('subnets')} random subnets measured end to end: median "
                     f"{100 * v['median_rel_error']:.1f} %, worst {100 * v['worst_rel_error']:.1f} %")
        return text

    def check_best(self, result: SearchResult, budget_ms: float, top: int,
                   progress: Callable | None = None) -> tuple[Candidate, dict[str, Any]]:
        """Measure the most accurate candidates end to end (rank 0), beside the reference; the first
        that meets the budget is the one reported. Every process gets the same answer."""
        chosen, checked = distributed.broadcast_or_raise(lambda: self._measure(result, budget_ms, top, progress),
                                                         "measuring the best candidates")
        return next(c for c in result.history if c.arch == chosen), checked

    def _measure(self, result: SearchResult, budget_ms: float, top: int, progress: Callable | None):
        """The candidates by merit (`rank_key`), each measured end to end in turns with the reference (the
        smallest subnet) until one meets the budget, at most ``top`` of them. A candidate's figure
        (``held_ms``) is its latency in the machine's slower state: its median ratio to the reference over
        their turns times the reference's slower state over every turn the reference was timed in (the
        anchor's and each check's; `latency_anchor.slower_state_ms`), and at least the median of its calls.
        After a miss, candidates that the misses so far say would miss too (predicted times the worst
        held/predicted ratio above the budget) are skipped."""
        assert self.runtime is not None
        reference = MODELS[REFERENCE].arch
        smallest = self.anchor.smallest() if self.anchor is not None else {}
        reference_turns = list(smallest.get("turns_ms", [])) if smallest.get("arch") == reference.to_dict() else []
        with self.runtime.active():
            reference_run = self.runtime.model(reference, self.num_classes)
        tried: list[dict[str, Any]] = []
        measured: list[Candidate] = []
        chosen, factor = None, 1.0
        bar = progress(total=top, desc="measuring the best", unit="subnet") if progress else _NoBar()

        def meets(c: Candidate, order: str) -> bool:
            with self.runtime.active():
                turns = timing.time_in_turns([self.runtime.model(c.arch, self.num_classes), reference_run],
                                             rounds=SUBNET_ROUNDS, **SUBNET_TURNS)
            timed, ref = map(summary, turns)
            reference_turns.extend(ref["turns_ms"])
            ratio, held = ratio_to(timed["turns_ms"], ref["turns_ms"]), held_ms(timed, ref, reference_turns)
            bar.update(1)
            tried.append({"top1": c.top1, "mflops": round(c.mflops, 4), "predicted_ms": round(c.latency_ms, 4),
                          "table_ms": round(self.table_ms(c.arch), 4), "measured_ms": round(timed["median_ms"], 4),
                          "held_ms": round(held, 4), "ratio_to_reference": round(ratio, 4),
                          "spread_ms": round(timed.get("p75_ms", 0.0) - timed.get("p25_ms", 0.0), 4),
                          "fastest_turn_ms": round(timed["ms"], 4), "reference_ms": round(ref["median_ms"], 4),
                          "order": order, "arch": c.arch.to_dict()})
            measured.append(c)
            return held <= budget_ms

        for c in sorted(result.history, key=rank_key, reverse=True):
            if len(tried) >= top:
                break
            if c.latency_ms * factor > budget_ms:
                continue
            if meets(c, "merit"):
                chosen = c
                break
            factor = max(factor, tried[-1]["held_ms"] / c.latency_ms)
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
            fastest = min(range(len(tried)), key=lambda i: tried[i]["held_ms"])
            chosen = measured[fastest]
            log.warning("none of the %d candidates measured end to end met %g ms in the machine's slower state; "
                        "reporting the fastest of them (%.2f ms); the machine may be busy, or the latency table "
                        "stale (rebuild it)", len(tried), budget_ms, tried[fastest]["held_ms"])
        row = next(t for t in tried if t["arch"] == chosen.arch.to_dict())
        key = self.table.key
        validation = self.table.validation or {}
        checked = {
            "budget_ms": budget_ms, "backend": key["runtime"], "version": key["version"], "threads": key["threads"],
            "batch_size": key["batch_size"], "machine": key["machine"], "table": self.path,
            "predicted_ms": row["predicted_ms"], "table_ms": row["table_ms"], "measured_ms": row["measured_ms"],
            "spread_ms": row["spread_ms"], "held_ms": row["held_ms"],
            "prediction_error": round(row["predicted_ms"] / row["held_ms"] - 1, 4),
            "fastest_turn_ms": row["fastest_turn_ms"], "meets_budget": row["held_ms"] <= budget_ms,
            "reference": {"name": REFERENCE, "measured_ms": row["reference_ms"],
                          "held_ms": round(slower_state_ms(reference_turns), 4),
                          "fastest_turn_ms": round(min(reference_turns), 4),
                          "predicted_ms": round(self.predictor(reference), 4),
                          "table_ms": round(self.table_ms(reference), 4)},
            "anchor": None if self.anchor is None else self.anchor.to_dict(),
            "predictor": {"scale": self.table.scale, "offset_ms": self.table.offset_ms,
                          "median_rel_error": validation.get("median_rel_error"),
                          "worst_rel_error": validation.get("worst_rel_error"),
                          "validation_subnets": validation.get("subnets")},
            "tried": tried,
        }
        return chosen.arch, checked

