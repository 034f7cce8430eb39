"""Issue 33's check: a latency budget that holds on the day it is used, with a table reused across runs.

    python benchmarks/bench_latency_anchor.py --table /tmp/table.json --runs 5 --threads 2 [--table-scale 1.3]

One ONNX Runtime latency table (``--threads``, batch 1) is built once (or reused from ``--table``);
then, ``--runs`` times: a0 is timed in a process of its own (exported as ``alphanet-export`` writes
it, opened with ONNX Runtime as the package opens it, the median of its calls), the budget is set to
``--factor`` (1.25) times that, ``alphanet-search --latency-ms`` runs on the same table (surrogate
evaluator, its own process), and the subnet it returns is timed in a process of its own, in turns with
a0 (blocks of 20 calls: on a shared VM the speed changes for seconds to minutes at a time, and a0 beside
it tells which speed the machine had then). Printed per run: a0, the budget, a0 in the search's anchor
(its slower state), the anchor's scale, the winner's predicted / search-measured (median of its calls) /
held (in the machine's slower state) milliseconds, whether the search's check met the budget, its
own-process milliseconds, own-process / budget, a0 beside it, and the winner / a0 beside it over the
budget's factor (the answer judged at the machine's speed of that moment: <= 1 when it holds); then
how many runs were refused and how many winners measured within the budget (+ ``--tolerance``, 5 %),
and within it at the machine's speed of the moment. ``--table-scale`` multiplies the table's milliseconds
first (a table built on a busy machine). ``--json FILE`` keeps the rows.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_TIME = r"""
import json, os, statistics, sys, tempfile, time
import numpy as np
from alphanet_zoo import AlphaNet
from alphanet_zoo.config import ArchConfig
from alphanet_zoo.export import to_onnx
from alphanet_zoo.export.runtime import onnxruntime_session
archs, threads, calls = [ArchConfig.from_dict(a) for a in json.loads(sys.argv[1])], int(sys.argv[2]), int(sys.argv[3])
block = 20
with tempfile.TemporaryDirectory() as folder:
    runs = []
    for i, arch in enumerate(archs):
        path = os.path.join(folder, f"model{i}.onnx")
        to_onnx(AlphaNet(arch).eval(), path, verify=False)
        session = onnxruntime_session(path, threads)
        feed = {session.get_inputs()[0].name: np.random.RandomState(0).standard_normal(
            (1, 3, arch.resolution, arch.resolution)).astype(np.float32)}
        for _ in range(20):
            session.run(None, feed)
        runs.append((session, feed))
    times = [[] for _ in archs]
    for _ in range(max(1, calls // block)):  # blocks in turns: every model sees the machine's spells alike
        for (session, feed), t in zip(runs, times):
            block_times = []
            for _ in range(block):
                start = time.perf_counter()
                session.run(None, feed)
                block_times.append((time.perf_counter() - start) * 1e3)
            t.append(block_times)
flat = [[v for b in t for v in b] for t in times]
print(json.dumps([{"median_ms": statistics.median(f), "quartiles_ms": statistics.quantiles(f, n=4),
                   "blocks_ms": [statistics.median(b) for b in t]} for f, t in zip(flat, times)]))
"""


def own_process_ms(arch: dict, threads: int, calls: int, *others: dict) -> list[dict]:
    """``arch`` (and ``others``, timed in turns with it in blocks of 20 calls) exported and timed in a
    fresh Python process (what a deployer measures): per model its median, quartiles and block medians."""
    done = subprocess.run([sys.executable, "-c", _TIME, json.dumps([arch, *others]), str(threads), str(calls)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_table(path: Path, threads: int, scale: float) -> Path:
    """The table at ``path`` (built here when missing); with ``scale`` != 1 a copy with its ms scaled."""
    from alphanet_zoo.search.latency import LatencyTable, load_or_build
    from alphanet_zoo.search.latency_runtimes import make_runtime

    if not path.is_file():
        runtime = make_runtime("onnxruntime", threads, 1)
        try:
            table, _, _ = load_or_build(runtime, path)
        finally:
            runtime.close()
        print(f"table built: {path} ({table.build_seconds:.0f} s)", flush=True)
    if scale == 1.0:
        return path
    table = LatencyTable.load(path)
    table.entries = {k: v * scale for k, v in table.entries.items()}
    table.offset_ms *= scale
    scaled = path.with_name(f"{path.stem}.x{scale:g}.json")
    table.save(scaled)
    return scaled


def search(table: Path, budget: float, threads: int, seed: int, out: Path) -> dict | None:
    """``alphanet-search --latency-ms`` in its own process; None when it refuses."""
    done = subprocess.run([sys.executable, "-m", "alphanet_zoo.commands.search", "--evaluator", "surrogate",
                           "--seed", str(seed), "--latency-ms", f"{budget:.4f}", "--backend", "onnxruntime",
                           "--threads", str(threads), "--batch-size", "1", "--latency-table", str(table),
                           "--out", str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        print("  refused or failed: " + (done.stderr.strip().splitlines() or ["?"])[-1], flush=True)
        return None
    return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, default=Path(tempfile.gettempdir()) / "alphanet_anchor_table.json")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--factor", type=float, default=1.25, help="budget = factor x a0 measured just before")
    parser.add_argument("--tolerance", type=float, default=0.05, help="timing noise allowed over the budget")
    parser.add_argument("--table-scale", type=float, default=1.0, help="multiply the table's ms first")
    parser.add_argument("--calls", type=int, default=200, help="timed calls per own-process measurement")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    from alphanet_zoo.registry import MODELS

    table = build_table(args.table, args.threads, args.table_scale)
    a0 = MODELS["a0"].arch.to_dict()
    rows = []
    print(f"{'run':>3} {'a0 ms':>7} {'budget':>7} {'a0 srch':>7} {'scale':>6} {'pred':>7} {'search':>7} {'held':>7} "
          f"{'meets':>5} {'own':>7} {'own/bud':>8} {'a0 own':>7} {'w/a0/f':>7}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for run in range(args.runs):
            a0_ms = own_process_ms(a0, args.threads, args.calls)[0]["median_ms"]
            budget = args.factor * a0_ms
            best = search(table, budget, args.threads, run, Path(folder) / f"best{run}.json")
            row = {"run": run, "a0_ms": a0_ms, "budget_ms": budget, "refused": best is None}
            if best is not None:
                lat = best["latency"]
                own, beside = own_process_ms(best["architecture"], args.threads, args.calls, a0)
                smallest = lat["anchor"]["references"][0]
                a0_beside = beside["median_ms"]
                same_state = statistics.median(w / r for w, r in zip(own["blocks_ms"], beside["blocks_ms"]))
                row.update(scale=lat["anchor"]["scale"], predicted_ms=lat["predicted_ms"], meets=lat["meets_budget"],
                           a0_search_ms=smallest["measured_ms"], a0_search_fastest_ms=smallest["fastest_ms"],
                           search_measured_ms=lat["measured_ms"], held_ms=lat["held_ms"], own_ms=own["median_ms"],
                           own_quartiles_ms=own["quartiles_ms"], ratio=own["median_ms"] / budget,
                           a0_beside_ms=a0_beside, same_state=same_state / args.factor, mflops=best["mflops"],
                           architecture=best["architecture"],
                           latency=lat)
                print(f"{run:>3} {a0_ms:7.3f} {budget:7.3f} {row['a0_search_ms']:7.3f} {row['scale']:6.3f} "
                      f"{row['predicted_ms']:7.3f} {row['search_measured_ms']:7.3f} {row['held_ms']:7.3f} "
                      f"{str(row['meets']):>5} {row['own_ms']:7.3f} {row['ratio']:8.3f} {a0_beside:7.3f} "
                      f"{row['same_state']:7.3f}", flush=True)
            rows.append(row)
    done = [r for r in rows if not r["refused"]]
    within = [r for r in done if r["ratio"] <= 1 + args.tolerance]
    print(f"refused: {len(rows) - len(done)} of {len(rows)}; within the budget (+{100 * args.tolerance:g} %): "
          f"{len(within)} of {len(done)}; at the speed of the moment: "
          f"{sum(r['same_state'] <= 1 + args.tolerance for r in done)} of {len(done)}"
          + (f"; own/budget median {statistics.median(r['ratio'] for r in done):.3f}, "
                                              f"worst {max(r['ratio'] for r in done):.3f}" if done else ""))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if within and len(within) == len(rows) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
