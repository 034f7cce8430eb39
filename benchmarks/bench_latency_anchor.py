"""Issue 33's check: a latency budget that holds on the day it is used, with a table reused across runs.

    python benchmarks/bench_latency_anchor.py --table /tmp/table.json --runs 5 --threads 2 [--table-scale 1.3]

One ONNX Runtime latency table (``--threads``, batch 1) is built once (or reused from ``--table``);
then, ``--runs`` times: a0 is timed in a process of its own (exported as ``alphanet-export`` writes
it, opened with ONNX Runtime as the package opens it, the median of its calls), the budget is set to
``--factor`` (1.25) times that, ``alphanet-search --latency-ms`` runs on the same table (surrogate
evaluator, its own process), and the subnet it returns is timed in a process of its own. Printed per
run: a0, the budget, a0 in the search's anchor (quietest turn), the anchor's scale, the winner's
predicted / search-measured milliseconds, whether the search's check met the budget, its own-process
milliseconds and own-process / budget; then how many runs were refused and how many
winners measured within the budget (+ ``--tolerance``, 5 %). ``--table-scale`` multiplies the table's
milliseconds first (a table built on a busy machine). ``--json FILE`` keeps the rows.
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

_TIME_ONE = r"""
import json, os, statistics, sys, tempfile, time
import numpy as np
from alphanet_zoo import AlphaNet
from alphanet_zoo.config import ArchConfig
from alphanet_zoo.export import to_onnx
from alphanet_zoo.export.runtime import onnxruntime_session
arch, threads, calls = ArchConfig.from_dict(json.loads(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "model.onnx")
    to_onnx(AlphaNet(arch).eval(), path, verify=False)
    session = onnxruntime_session(path, threads)
    feed = {session.get_inputs()[0].name: np.random.RandomState(0).standard_normal(
        (1, 3, arch.resolution, arch.resolution)).astype(np.float32)}
    for _ in range(20):
        session.run(None, feed)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
print(json.dumps({"median_ms": statistics.median(times), "quartiles_ms": statistics.quantiles(times, n=4)}))
"""


def own_process_ms(arch: dict, threads: int, calls: int) -> dict:
    """``arch`` exported and timed in a fresh Python process (what a deployer measures)."""
    done = subprocess.run([sys.executable, "-c", _TIME_ONE, json.dumps(arch), str(threads), str(calls)],
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
    print(f"{'run':>3} {'a0 ms':>7} {'budget':>7} {'a0 srch':>7} {'scale':>6} {'pred':>7} {'search':>7} {'meets':>5} "
          f"{'own':>7} {'own/bud':>8}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for run in range(args.runs):
            a0_ms = own_process_ms(a0, args.threads, args.calls)["median_ms"]
            budget = args.factor * a0_ms
            best = search(table, budget, args.threads, run, Path(folder) / f"best{run}.json")
            row = {"run": run, "a0_ms": a0_ms, "budget_ms": budget, "refused": best is None}
            if best is not None:
                lat = best["latency"]
                own = own_process_ms(best["architecture"], args.threads, args.calls)
                smallest = lat["anchor"]["references"][0]
                row.update(scale=lat["anchor"]["scale"], predicted_ms=lat["predicted_ms"], meets=lat["meets_budget"],
                           a0_search_ms=smallest["measured_ms"], a0_search_median_ms=smallest["median_ms"],
                           search_measured_ms=lat["measured_ms"], own_ms=own["median_ms"],
                           own_quartiles_ms=own["quartiles_ms"], ratio=own["median_ms"] / budget,
                           mflops=best["mflops"], anchor=lat["anchor"])
                print(f"{run:>3} {a0_ms:7.3f} {budget:7.3f} {row['a0_search_ms']:7.3f} {row['scale']:6.3f} "
                      f"{row['predicted_ms']:7.3f} {row['search_measured_ms']:7.3f} {str(row['meets']):>5} "
                      f"{row['own_ms']:7.3f} {row['ratio']:8.3f}", flush=True)
            rows.append(row)
    done = [r for r in rows if not r["refused"]]
    within = [r for r in done if r["ratio"] <= 1 + args.tolerance]
    print(f"refused: {len(rows) - len(done)} of {len(rows)}; within the budget (+{100 * args.tolerance:g} %): "
          f"{len(within)} of {len(done)}" + (f"; own/budget median {statistics.median(r['ratio'] for r in done):.3f}, "
                                              f"worst {max(r['ratio'] for r in done):.3f}" if done else ""))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if within and len(within) == len(rows) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
