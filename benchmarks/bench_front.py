"""Front search methods compared on a surrogate benchmark: the AttentiveNAS authors' accuracy predictor as oracle.

    python benchmarks/bench_front.py --front 200:1200:10 --seeds 5 --images 50000 --plot front_quality.png

For each seed, the official AlphaNet front search (`OfficialSearch`, 5,376 evaluations at its
defaults) and the guided search (`GuidedFrontSearch`, a tenth of them) run on the same surrogate
evaluator (the forest's top-1 drawn on ``--images`` simulated held-out images). The quality of a
front is the mean, over every bin the official search fills, of its winners' **noise-free**
surrogate top-1 (what the subnet is worth, not what it measured). Printed: per seed and as the
median of the seeds, the official's final quality, the guided search's at its budget, the
difference, how many evaluations the official loop needs to reach the guided search's
quality and how many the guided search needs to come within 0.02 of the official's final one; then front quality against evaluations for both (the official's after each generation,
the guided search's at fractions of its budget), as a table and, with ``--plot``, a figure.
The searches see only their evaluator's answers; the benchmark alone reads the noise-free values.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from alphanet_zoo.search.front import Bins
from alphanet_zoo.search.guided import DEFAULT_EVALUATIONS, GuidedFrontSearch
from alphanet_zoo.search.official import OfficialSearch
from alphanet_zoo.search.surrogate import SurrogateEvaluator, shipped_surrogate

FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def quality(best, filled) -> float:
    """Mean noise-free surrogate top-1 of the winners of the bins ``filled`` (NaN where a bin is empty)."""
    archs = [best[i].arch if best[i] is not None else None for i in filled]
    values = shipped_surrogate().predict([a for a in archs if a is not None])
    out, k = [], 0
    for a in archs:
        if a is None:
            out.append(np.nan)
        else:
            out.append(values[k])
            k += 1
    return float(np.nanmean(out)) if out else float("nan")


def run_seed(bins: Bins, seed: int, images: int, budget: int) -> dict:
    step = 100.0 / images if images else 0.0
    curve_official = []
    official = OfficialSearch(bins, SurrogateEvaluator(images, seed), seed=seed)
    start = time.perf_counter()
    official.run(lambda g: curve_official.append((official.calls, list(official.best))))
    official_seconds = time.perf_counter() - start
    filled = [i for i, c in enumerate(official.best) if c is not None]
    curve_official = [(calls, quality(best, filled)) for calls, best in curve_official]
    curve_guided = []
    for fraction in FRACTIONS:
        n = max(1, round(budget * fraction))
        start = time.perf_counter()
        result = GuidedFrontSearch(bins, SurrogateEvaluator(images, seed), seed=seed, max_evaluations=n,
                                   top1_step=step).run()
        seconds = time.perf_counter() - start
        missing = sum(result.best[i] is None for i in filled)
        curve_guided.append((result.evaluations, quality(result.best, filled), missing, seconds))
    final = curve_guided[-1]
    reach = next((calls for calls, q in curve_official if q >= final[1]), None)
    official_final = curve_official[-1][1]
    guided_reach = next((n for n, q, *_ in curve_guided if q >= official_final - 0.02), None)
    return {"seed": seed, "official": curve_official[-1][1], "official_evaluations": curve_official[-1][0],
            "official_seconds": official_seconds, "guided": final[1], "guided_evaluations": final[0],
            "guided_seconds": final[3], "missing": final[2], "reach": reach, "guided_reach": guided_reach, "filled": len(filled),
            "curve_official": curve_official, "curve_guided": curve_guided}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--front", default="200:1200:10")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=50_000, help="simulated held-out images (0: noise-free)")
    parser.add_argument("--budget", type=int, default=DEFAULT_EVALUATIONS, help="the guided search's evaluations")
    parser.add_argument("--plot", metavar="PNG")
    args = parser.parse_args(argv)
    bins = Bins.parse(args.front)
    print(f"surrogate benchmark (oracle: the AttentiveNAS authors' accuracy predictor), front {args.front} "
          f"({bins.count} bins), {args.images or 'no'} simulated held-out images; quality: mean noise-free top-1 "
          "of the bin winners over the bins the official search fills")
    print(f"{'seed':>4} {'official':>9} {'evals':>6} {'guided':>9} {'evals':>6} {'diff':>8} {'missing':>7} "
          f"{'official evals to reach guided':>31} {'guided evals to official-0.02':>30} {'s official':>10} "
          f"{'s guided':>9}")
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        r = run_seed(bins, seed, args.images, args.budget)
        rows.append(r)
        print(f"{seed:>4} {r['official']:>9.4f} {r['official_evaluations']:>6} {r['guided']:>9.4f} "
              f"{r['guided_evaluations']:>6} {r['guided'] - r['official']:>+8.4f} {r['missing']:>7} "
              f"{str(r['reach'] or 'never'):>31} {str(r['guided_reach'] or '> budget'):>30} "
              f"{r['official_seconds']:>10.1f} {r['guided_seconds']:>9.1f}",
              flush=True)
    diffs = [r["guided"] - r["official"] for r in rows]
    print(f"median of {len(rows)} seeds: official {statistics.median(r['official'] for r in rows):.4f} "
          f"({rows[0]['official_evaluations']} evaluations), guided "
          f"{statistics.median(r['guided'] for r in rows):.4f} ({rows[0]['guided_evaluations']} evaluations), "
          f"difference {statistics.median(diffs):+.4f} (min {min(diffs):+.4f}, max {max(diffs):+.4f}); "
          f"bar: >= -0.02")
    print("\nfront quality against evaluations (median over seeds)")
    print(f"{'search':>8} {'evaluations':>11} {'quality':>9}")
    for k in range(len(rows[0]["curve_guided"])):
        print(f"{'guided':>8} {rows[0]['curve_guided'][k][0]:>11} "
              f"{statistics.median(r['curve_guided'][k][1] for r in rows):>9.4f}")
    for k in range(len(rows[0]["curve_official"])):
        print(f"{'official':>8} {rows[0]['curve_official'][k][0]:>11} "
              f"{statistics.median(r['curve_official'][k][1] for r in rows):>9.4f}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.ticker
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, key, style in (("official", "curve_official", "o-"), ("guided", "curve_guided", "s-")):
            xs = [p[0] for p in rows[0][key]]
            ys = [statistics.median(r[key][k][1] for r in rows) for k in range(len(xs))]
            ax.plot(xs, ys, style, label=name)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("evaluations")
        ax.set_ylabel("mean noise-free surrogate top-1 of bin winners")
        ax.set_title(f"front {args.front}, {args.images} images, median of {len(rows)} seeds")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
