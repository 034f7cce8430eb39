"""Search speed and latency tables: candidates per minute, time to build a table, the predictor's error.

    python benchmarks/bench_search.py [--candidates 6] [--calib 8x32] [--heldout 256] [--crop-size 224]
                                      [--backend onnxruntime --threads 2 --batch-size 1] [--skip-table]
                                      [--device cpu] [--json out.json]
    python benchmarks/bench_search.py --profile [--rounds 3 --candidates 2]   # real-evaluation cost, by lever
    python benchmarks/bench_search.py --front-sim [--seeds 5]                 # the predictor's savings
    python benchmarks/bench_search.py --profile-commands [--rounds 3]         # the allocator in eval/extract

``--profile``: the cost of one real evaluation (extract, BN calibration on 256 images, top-1 on
256 held-out images at 224) for each variant: ``default`` (glibc's allocator as it comes),
``keep_freed_memory`` (`alphanet_zoo.allocator.keep_freed_memory`) and that plus
channels-last. Each variant runs in its own process (the allocator setting is process-wide),
the variants interleaved round after round on the same subnets; wall, user and system seconds per
candidate are reported as median and min..max over every candidate timed.

``--front-sim``: `FrontSearch` over 200..600 MFLOPs by 20 with and without the predictor (each
``--variants`` SOURCE:BOUND: ``auto``, or ``file`` pooled with the history of an earlier predictor
run of another seed as ``--predictor FILE`` does; BOUND as ``--predictor-bound``), the
accuracy given by a stand-in for a trained supernet (no trained checkpoint is available to this
benchmark): the published AlphaNet curve of top-1 against MFLOPs, small per-choice effects and
per-subnet noise of a 5000-image held-out set, rounded to 1/5000. Reported per seed: real
evaluations without the predictor and its front's mean top-1 over the bins; the real evaluations
the predictor search needed to reach that mean (``fewer_x``: how many times fewer), and to reach
the same mean of the noise-free accuracy (``fewer_x_true``: the front a larger held-out set would
rank the same); Kendall tau of the predictions made before each
evaluation; and candidates scored (predicted or evaluated) per minute, counting each real
evaluation at ``--seconds-per-eval`` (a measured cost from ``--profile``) plus the predictor's own
measured time.

1. Candidates per minute: `SubnetEvaluator` (extract, BN calibration, held-out top-1: what
   ``alphanet-search`` does per candidate) on random subnets at 250-450 MFLOPs, with the images
   decoded once beforehand (as the command does), on generated photo-like images. The time to
   decode the images is reported apart: a search pays it once.
2. A latency table built from scratch (in a temporary cache) for ``--backend`` at ``--threads``
   and ``--batch-size``: seconds for the layers, seconds for the end-to-end fit, and the
   predictor's median and worst relative error on the validation subnets.

Numbers depend on the machine and its load; the script prints what it ran on.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import alphanet_zoo
from alphanet_zoo.export.timing import cpu_name


def make_images(root: Path, classes: int, per_class: int, seed: int) -> Path:
    """Photo-like 500x375 JPEGs in synset folders."""
    rng = np.random.RandomState(seed)
    for c in range(classes):
        folder = root / alphanet_zoo.imagenet.synsets()[c]
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            coarse = Image.fromarray((rng.rand(25, 33, 3) * 255).astype(np.uint8))
            base = np.asarray(coarse.resize((500, 375), Image.Resampling.BICUBIC), dtype=np.float32)
            pixels = np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:04d}.JPEG", quality=90)
    return root


def candidates_per_minute(args, work: Path) -> dict:
    from alphanet_zoo.data import calibration_batches, labelled_samples
    from alphanet_zoo.search import SubnetEvaluator, sample_in_range
    from alphanet_zoo.search.evaluate import load_calibration_images, load_heldout_images
    from alphanet_zoo.supernet import Supernet

    batches, batch_size = (int(v) for v in args.calib.split("x"))
    train = make_images(work / "train", 8, -(-batches * batch_size // 8), 0)
    heldout = make_images(work / "heldout", 8, -(-args.heldout // 8), 1)
    supernet = Supernet().eval().to(args.device)  # random weights: speed does not depend on them
    start = time.perf_counter()
    calibration = load_calibration_images(calibration_batches(train, batches, batch_size, 0, args.workers,
                                                              args.crop_size))
    samples, _ = labelled_samples(heldout, 1000)
    held = load_heldout_images(samples[:args.heldout], 64, args.crop_size, args.workers)
    decode_s = time.perf_counter() - start
    evaluator = SubnetEvaluator(supernet, calibration, held, args.device)
    rng = random.Random(0)
    archs = [sample_in_range(250, 450, rng) for _ in range(args.candidates)]
    evaluator(archs[0])  # warm-up: first-call allocations
    times = []
    for arch in archs:
        t = time.perf_counter()
        evaluator(arch)
        times.append(time.perf_counter() - t)
    return {"calibration_images": batches * batch_size, "heldout_images": len(held.images), "crop_size": args.crop_size,
            "candidates": len(archs), "mean_mflops": round(statistics.mean(alphanet_zoo.count_flops(a)
                                                                             for a in archs), 1),
            "seconds_per_candidate": round(statistics.median(times), 2),
            "candidates_per_minute": round(60 / statistics.median(times), 2), "decode_once_s": round(decode_s, 1)}


def latency_table(args, work: Path) -> dict:
    from alphanet_zoo.commands.running import progress
    from alphanet_zoo.search.latency import load_or_build
    from alphanet_zoo.search.latency_runtimes import make_runtime

    os.environ["ALPHANET_ZOO_CACHE"] = str(work / "cache")
    runtime = make_runtime(args.backend, args.threads, args.batch_size)
    start = time.perf_counter()
    try:
        table, path, _ = load_or_build(runtime, progress=progress)
    finally:
        runtime.close()
    v = table.validation
    return {"backend": args.backend, "version": table.key["version"], "threads": args.threads,
            "batch_size": args.batch_size, "layers": len(table.entries),
            "build_s": round(time.perf_counter() - start, 1),
            "scale": round(table.scale, 4), "offset_ms": round(table.offset_ms, 4),
            "median_rel_error": round(v["median_rel_error"], 4), "worst_rel_error": round(v["worst_rel_error"], 4),
            "table_sum_median_rel_error": round(v["table_sum_median_rel_error"], 4),
            "points": [(p["mflops"], p["measured_ms"], p["predicted_ms"]) for p in v["points"] if not p["fit"]]}


VARIANTS = ("default", "keep_freed_memory", "keep_freed_memory+channels_last")


def eval_cost_variant(variant: str, candidates: int, threads: int) -> dict:
    """In this process: seconds (wall, user, system) per real evaluation for ``variant``."""
    import resource

    from alphanet_zoo.data import TensorBatches
    from alphanet_zoo.search import SubnetEvaluator, sample_in_range
    from alphanet_zoo.allocator import keep_freed_memory
    from alphanet_zoo.supernet import Supernet

    torch.set_num_threads(threads)
    if variant != "default":
        keep_freed_memory()
    g = torch.Generator().manual_seed(0)
    calibration = TensorBatches(torch.randint(0, 256, (256, 3, 224, 224), dtype=torch.uint8, generator=g),
                                torch.zeros(256, dtype=torch.long), 32)
    heldout = TensorBatches(torch.randint(0, 256, (256, 3, 224, 224), dtype=torch.uint8, generator=g),
                            torch.randint(0, 1000, (256,), generator=g), 128)
    evaluator = SubnetEvaluator(Supernet().eval(), calibration, heldout, channels_last=variant.endswith("last"))
    rng = random.Random(0)
    archs = [sample_in_range(300, 450, rng) for _ in range(candidates + 1)]
    evaluator(archs[0])  # warm-up
    rows = []
    for arch in archs[1:]:
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        evaluator(arch)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        rows.append({"wall": t1 - t0, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
                     "mflops": round(alphanet_zoo.count_flops(arch), 1), "resolution": arch.resolution})
    return {"variant": variant, "rows": rows}


def _spread(values) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "n": len(values)}


def eval_cost(args) -> dict:
    """Interleave the variants, each in a fresh process, ``--rounds`` times."""
    import subprocess

    per_variant: dict[str, list] = {v: [] for v in VARIANTS}
    for round_ in range(args.rounds):
        for variant in VARIANTS:
            done = subprocess.run([sys.executable, __file__, "--variant", variant, "--candidates",
                                   str(args.candidates), "--torch-threads", str(args.torch_threads or 1)],
                                  capture_output=True, text=True, check=True)
            rows = json.loads(done.stdout.strip().splitlines()[-1])["rows"]
            per_variant[variant] += rows
            print(f"round {round_} {variant}: " + ", ".join(f"{r['wall']:.1f}s (sys {r['sys']:.1f})" for r in rows),
                  file=sys.stderr, flush=True)
    out = {}
    for variant, rows in per_variant.items():
        out[variant] = {k: _spread([r[k] for r in rows]) for k in ("wall", "user", "sys")}
        out[variant]["candidates_per_minute"] = round(60 / out[variant]["wall"]["median"], 2)
    base = out["default"]["wall"]["median"]
    for variant in VARIANTS:
        out[variant]["speedup"] = round(base / out[variant]["wall"]["median"], 2)
    return {"threads": args.torch_threads or 1, "calibration_images": 256, "heldout_images": 256,
            "crop_size": 224, "rounds": args.rounds, "variants": out}


COMMAND_RUNNER = """
import resource, sys, time
if sys.argv[1] == "keep_freed_memory":
    from alphanet_zoo.allocator import keep_freed_memory
    keep_freed_memory()
elif sys.argv[1] == "default":  # the commands set it themselves: undo it for the default variant
    import alphanet_zoo.allocator as allocator
    allocator.keep_freed_memory = lambda *a, **k: False
from importlib import import_module
main = import_module("alphanet_zoo.commands." + sys.argv[2]).main
t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
code = main(sys.argv[3:])
t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
print({"wall": t1 - t0, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime, "rc": code})
"""


def command_cost(args) -> dict:
    """``alphanet-eval`` (BN calibration then top-1) and ``alphanet-extract`` (BN calibration, written
    out) of A0 with glibc's allocator as it comes and with `alphanet_zoo.allocator.keep_freed_memory`,
    each run in a fresh process, the variants interleaved ``--rounds`` times; wall, user and system
    seconds of the command's ``main`` (imports excluded)."""
    import ast
    import subprocess

    work = Path(tempfile.mkdtemp(prefix="bench_commands_"))
    train = make_images(work / "train", 8, 16, 0)
    heldout = make_images(work / "heldout", 8, 32, 1)
    parity = Path(__file__).resolve().parents[1] / "tests" / "parity"  # the tests' deterministic supernet
    supernet = work / "supernet.pth.tar"
    subprocess.run([sys.executable, str(parity / "make_official_checkpoint.py"), str(supernet), "--salt", "0",
                    "--keys", str(parity / "official_supernet_keys.json")], check=True)
    calib = ["--calib-data", str(train), "--calib-batches", "4", "--calib-batch-size", "32", "--workers", "0",
             "--threads", str(args.torch_threads or 1), "--device", "cpu"]
    commands = {"eval": ["--arch", "a0", "--weights", "random", *calib, "--data", str(heldout), "--batch-size", "64"],
                "extract": ["--arch", "a0", "--supernet", str(supernet), *calib, "--out", str(work / "out")]}
    rows: dict = {}
    for round_ in range(args.rounds):
        for command, argv in commands.items():
            for variant in ("default", "keep_freed_memory"):
                done = subprocess.run([sys.executable, "-c", COMMAND_RUNNER, variant, command, *argv],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(done.stderr[-2000:])
                row = ast.literal_eval(done.stdout.strip().splitlines()[-1])
                rows.setdefault(command, {}).setdefault(variant, []).append(row)
                print(f"round {round_} {command} {variant}: {row['wall']:.1f}s (sys {row['sys']:.1f})",
                      file=sys.stderr, flush=True)
    out = {}
    for command, variants in rows.items():
        out[command] = {v: {k: _spread([r[k] for r in rs]) for k in ("wall", "user", "sys")}
                        for v, rs in variants.items()}
        out[command]["speedup"] = round(out[command]["default"]["wall"]["median"]
                                        / out[command]["keep_freed_memory"]["wall"]["median"], 2)
    return {"threads": args.torch_threads or 1, "calibration_images": 128, "heldout_images": 256, "rounds": args.rounds,
            "commands": out}


ANCHORS = [(203, 77.87), (279, 78.94), (317, 79.20), (357, 79.41), (444, 80.01), (491, 80.29), (596, 80.62),
           (709, 80.78)]  # the published AlphaNet-A0..A6 (MFLOPs, top-1)


def stand_in_top1(arch, noise_std: float = 0.25) -> float:
    """The stand-in for a trained supernet's held-out top-1 (see the module docstring)."""
    import hashlib

    noise = random.Random(int(hashlib.sha256(repr(arch).encode()).hexdigest()[:12], 16)).gauss(0, noise_std)
    return round((stand_in_true(arch) + noise) * 50) / 50  # 5000 images: steps of 0.02 %


def stand_in_true(arch) -> float:
    """The stand-in's accuracy without the held-out set's noise (what a larger held-out set tends to)."""
    import math

    f = alphanet_zoo.count_flops(arch)
    for (f0, a0), (f1, a1) in zip(ANCHORS, ANCHORS[1:]):
        if f <= f1 or f1 == ANCHORS[-1][0]:
            curve = a0 + (a1 - a0) * (math.log(f) - math.log(f0)) / (math.log(f1) - math.log(f0))
            break
    effects = 0.08 * (sum(arch.depth) - 25) - 0.05 * (sum(arch.kernel_size) - 28) + 0.002 * (arch.width[-1] - 1888) \
        - 0.1 * (arch.resolution - 240) / 48
    return curve - 1.0 + effects


def front_sim(args) -> dict:
    from alphanet_zoo.search.evolution import Evaluation
    from alphanet_zoo.search.front import Bins, FrontSearch

    def evaluate_many(archs):
        return [Evaluation(stand_in_top1(a, args.noise)) for a in archs]

    bins = Bins.parse(args.front)
    runs = []
    margins = [float(m) for m in str(args.margin).split(",")]
    variants = [v.split(":") for v in args.variants.split(",")]
    for seed in range(args.seeds):
        none = FrontSearch(bins, evaluate_many, population=args.population, generations=args.generations,
                           seed=seed).run()
        target = statistics.mean(c.top1 for c in none.front)
        prior_cache: dict = {}
        for margin in margins:
            for source, bound in variants:
                if source == "file" and not prior_cache:  # an earlier run: another seed, the default rule
                    earlier = FrontSearch(bins, evaluate_many, population=args.predictor_population,
                                          generations=args.predictor_generations, seed=1000 + seed,
                                          predictor="auto", top1_step=0.02).run()
                    prior_cache["rows"] = [(c.arch, c.top1) for c in earlier.history]
                prior = prior_cache["rows"] if source == "file" else ()
                runs.append(_front_sim_auto(args, bins, evaluate_many, seed, margin, none, target,
                                            statistics.mean(stand_in_true(c.arch) for c in none.front),
                                            bound, prior))
                runs[-1]["variant"] = f"{source}:{bound}"
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    summary = {}
    for margin in margins:
        for source, bound in variants:
            mine = [r for r in runs if r["margin"] == margin and r["variant"] == f"{source}:{bound}"]
            summary[f"{source}:{bound}:{margin}"] = {
                k: _spread([r[k] for r in mine if r[k] is not None])
                for k in ("fewer_x", "fewer_x_true", "kendall_tau", "none_evaluations", "auto_evaluations_to_reach",
                          "auto_evaluations_total", "total_fewer_x", "none_front_mean_top1", "auto_front_mean_top1",
                          "scored_per_minute_none", "scored_per_minute_auto")
                if any(r[k] is not None for r in mine)}
            summary[f"{source}:{bound}:{margin}"]["reached"] = sum(r["fewer_x"] is not None for r in mine)
    return {"front": args.front, "noise_std": args.noise,
            "none": {"population": args.population, "generations": args.generations},
            "auto": {"population": args.predictor_population, "generations": args.predictor_generations,
                     "margins": margins, "rounds": args.predictor_rounds or None, "variants": args.variants},
            "seconds_per_eval": args.seconds_per_eval, "runs": runs,
            "summary": summary}


def _front_sim_auto(args, bins, evaluate_many, seed: int, margin: float, none, target: float,
                    target_true: float, bound: str = "rmse", prior=()) -> dict:
    """One predictor search; the real evaluations it had made when its front first reached ``target``
    (mean measured top-1 over the bins), and ``target_true`` (the same, without the noise). ``prior``:
    an earlier run's evaluations (``--predictor FILE``)."""
    from alphanet_zoo.search.front import FrontSearch

    reached: list[int] = []
    reached_true: list[int] = []

    def check() -> None:
        front = search.front()
        if len(front) < bins.count:
            return
        if not reached and statistics.mean(c.top1 for c in front) >= target:
            reached.append(len(search.evaluated))
        if not reached_true and statistics.mean(stand_in_true(c.arch) for c in front) >= target_true:
            reached_true.append(len(search.evaluated))

    search = FrontSearch(bins, evaluate_many, population=args.predictor_population,
                         generations=args.predictor_generations, seed=seed, predictor="auto", margin=margin,
                         on_evaluated=check, rounds=args.predictor_rounds or None, prior=prior, bound=bound,
                         top1_step=0.02)
    start = time.perf_counter()
    auto = search.run()
    predictor_s = time.perf_counter() - start
    minutes_auto = (len(auto.history) * args.seconds_per_eval + predictor_s) / 60
    return {"seed": seed, "margin": margin, "bound": bound, "prior_rows": len(prior),
            "none_evaluations": len(none.history),
            "none_front_mean_top1": round(target, 3), "auto_evaluations_total": len(auto.history),
            "total_fewer_x": round(len(none.history) / len(auto.history), 2),
            "auto_candidates": len(auto.pool),
            "auto_front_mean_top1": round(statistics.mean(c.top1 for c in auto.front), 3),
            "auto_evaluations_to_reach": reached[0] if reached else None,
            "fewer_x": round(len(none.history) / reached[0], 1) if reached else None,
            "none_front_mean_true": round(target_true, 3),
            "auto_front_mean_true": round(statistics.mean(stand_in_true(c.arch) for c in auto.front), 3),
            "auto_evaluations_to_reach_true": reached_true[0] if reached_true else None,
            "fewer_x_true": round(len(none.history) / reached_true[0], 1) if reached_true else None,
            "kendall_tau": round(auto.kendall_tau, 3), "trusted": auto.trusted,
            "untrusted_rounds": auto.untrusted_rounds, "search_seconds": round(predictor_s, 1),
            "scored_per_minute_none": round(60 / args.seconds_per_eval, 2),
            "scored_per_minute_auto": round(len(auto.pool) / minutes_auto, 2)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--calib", default="8x32", help="calibration batches x batch size")
    parser.add_argument("--heldout", type=int, default=256)
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--skip-table", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--profile", action="store_true", help="real-evaluation cost per lever, interleaved")
    parser.add_argument("--profile-commands", action="store_true",
                        help="alphanet-eval and alphanet-extract with and without keep_freed_memory, interleaved")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--front-sim", action="store_true", help="the predictor's savings on a stand-in accuracy")
    parser.add_argument("--front", default="200:600:20")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--predictor-population", type=int, default=1000)
    parser.add_argument("--predictor-generations", type=int, default=10)
    parser.add_argument("--predictor-rounds", type=int, default=0, help="rounds per generation (0: no limit)")
    parser.add_argument("--margin", default="1.0", help="predictor margins, comma-separated")
    parser.add_argument("--variants", default="auto:max,auto:rmse,file:max,file:rmse",
                        help="comma-separated SOURCE:BOUND: SOURCE auto (this run only) or file (pooled with an "
                             "earlier run of another seed, as --predictor FILE); BOUND max, rmse or q90 "
                             "(`FrontSearch.threshold`)")
    parser.add_argument("--noise", type=float, default=0.25, help="the stand-in's per-subnet noise (top-1 points)")
    parser.add_argument("--seconds-per-eval", type=float, default=31.6,
                        help="seconds a real evaluation costs (measured by --profile: keep_freed_memory)")
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(eval_cost_variant(args.variant, args.candidates, args.torch_threads or 1)))
        return {}
    if args.profile or args.front_sim or args.profile_commands:
        report = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                  "load_average": os.getloadavg()}
        if args.profile:
            report["eval_cost"] = eval_cost(args)
        if args.front_sim:
            report["front_sim"] = front_sim(args)
        if args.profile_commands:
            report["command_cost"] = command_cost(args)
        report["load_average_after"] = os.getloadavg()
        print(json.dumps(report, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return report
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    report = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "torch": torch.__version__, "device": args.device,
              "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    with tempfile.TemporaryDirectory(prefix="bench_search_") as tmp:
        if not args.skip_search:
            report["search"] = candidates_per_minute(args, Path(tmp))
            print(json.dumps(report["search"]), file=sys.stderr)
        if not args.skip_table:
            report["latency_table"] = latency_table(args, Path(tmp))
    report["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
