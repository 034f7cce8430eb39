"""``alphanet-search``: evolutionary search for the best subnet of a supernet under a FLOPs and/or latency budget.

    alphanet-search --supernet alphanet_pretrained.pth.tar --flops 300 --flops-min 280 \\
        --data /data/imagenet/heldout --calib-data /data/imagenet/train --out best.json
    alphanet-search ... --latency-ms 8 --backend onnxruntime --threads 2 --batch-size 1 --plot search.png
    torchrun --nproc_per_node 8 --no-python alphanet-search ... --history history.jsonl
    alphanet-search ... --history history.jsonl --resume          # after an interruption (--no-resume: afresh)
    alphanet-search ... --front 200:1200:10 --predictor auto --population 1000 --out front.json
    alphanet-search --front 200:1200:10 --evaluator surrogate --seed 0 --out front.json   # no supernet, seconds
    alphanet-search --front 200:1200:10 --evaluator surrogate --algorithm official --out official.json

``best.json`` (`alphanet_zoo.search.report`) holds the architecture under ``architecture`` with
what the search knows of it; ``alphanet-extract --arch best.json``, ``alphanet-eval --arch
best.json`` and ``alphanet-export --arch best.json`` take it. Each candidate is calibrated and
scored exactly as ``alphanet-extract`` and ``alphanet-eval`` would with the same ``--calib-*``,
``--seed`` and ``--batch-size`` flags. Under ``torchrun`` each generation's candidates are split
across the processes and the result is the same as in one process. ``--front`` searches with the
guided algorithm (`alphanet_zoo.search.guided`) unless ``--predictor``, ``--population`` or
``--generations`` ask for the evolution; ``--evaluator surrogate`` evaluates on the AttentiveNAS
authors' accuracy predictor (`alphanet_zoo.search.surrogate`). The front search itself is the
library's `alphanet_zoo.search.run.make_front_search` (``alphanet_zoo.search_front``).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Sequence

from .. import distributed
from .._io import check_writable_file, write_json
from ..allocator import keep_freed_memory
from ..data import labelled_samples
from ..errors import InputError, UsageError
from ..flops import count_flops
from ..search.budget import Budget
from ..search.evaluate import SubnetEvaluator, heldout_subset, load_calibration_images, load_heldout_images
from ..search.evolution import EvolutionSearch, pareto_front
from ..config import SEARCH_SPACE, ArchConfig
from ..search.front import BOUNDS, DEFAULT_BOUND, Bins
from ..search.history import fingerprint, front_history_rows, history_rows, read_history, write_history
from ..search.latency_runtimes import BACKENDS, table_runtime
from ..search.latency_search import LatencySetup
from ..search.parallel import evaluate_across_ranks
from ..search.plot import plot_front, plot_search, require_matplotlib
from ..search.predictor import read_evaluations
from ..search.guided import DEFAULT_EVALUATIONS
from ..search.report import best_document, front_document, front_lines, front_table
from ..search.run import ALGORITHMS, make_front_search
from ..search.surrogate import DEFAULT_IMAGES, SurrogateEvaluator
from ..search.sampling import flops_range
from ..supernet import Supernet
from . import flags, running
from .running import Console, cli_main, progress

PROG = "alphanet-search"
POPULATION, GENERATIONS = 64, 20
EVAL_BATCH_SIZE = 128
FRONT_MARGIN = 1.0


def _backend(text: str) -> str:
    """``--backend``: a runtime latency tables are built on, by any of its names."""
    try:
        return table_runtime(text).name
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parser() -> flags.ArgumentParser:
    parser = flags.command_parser(
        PROG,
        "Evolutionary search for the most accurate subnet of a supernet under a budget: MFLOPs (the paper's count, "
        "analytic) and/or latency on this machine with a chosen runtime (from a table of per-layer timings measured "
        "here). Each candidate is extracted, BN-calibrated on training images and scored on held-out images; the "
        "Pareto front found is printed and the best written as JSON. Under torchrun the candidates of each "
        "generation are split across the processes, with the same result as one process.",
        [flags.calibration_flags(), flags.seed_flags("seed of the search, the calibration draws and "
                                                              "the held-out subset"),
         flags.workers_flags(4), flags.device_flags(), flags.threads_flags(),
         flags.output_flags("where to write the best architecture (JSON)", required=True), flags.dist_flags(),
         flags.resume_flags("continue the search a history file (FILE, or --history) recorded: its candidates are "
                            "not evaluated again, and the result is that of an uninterrupted run",
                            "start afresh, the default (--history is rewritten)"),
         flags.json_flags()])
    parser.add_argument("--batch-size", type=flags.integer(1, 65536), default=None, metavar="N",
                        help=f"images per batch when scoring held-out images (default {EVAL_BATCH_SIZE}); with "
                             "--latency-ms also the batch size latency is measured at (default 1)")
    parser.add_argument("--supernet", metavar="PATH",
                        help="supernet checkpoint (official release, alphanet-train checkpoint, or .safetensors); "
                             "with --data and --calib-data, needed for real evaluations")
    parser.add_argument("--evaluator", choices=("real", "surrogate"), default="real",
                        help="what an evaluation is: real (the subnet extracted from --supernet, BN-calibrated on "
                             "--calib-data, scored on --data; the default) or surrogate (the AttentiveNAS authors' "
                             "accuracy predictor, a random forest fit on real ImageNet evaluations of this search "
                             "space, drawn as top-1 on --surrogate-images simulated images: for comparing search "
                             "methods, or a predicted front in seconds; no supernet or images needed)")
    parser.add_argument("--surrogate-images", type=flags.integer(0, 10**9), default=DEFAULT_IMAGES, metavar="N",
                        help="with --evaluator surrogate: held-out images each evaluation is simulated on (binomial "
                             f"noise following --seed; 0: noise-free; default {DEFAULT_IMAGES}, ImageNet's validation set)")
    parser.add_argument("--max-evaluations", type=flags.integer(1, 10**9), default=None, metavar="E",
                        help="stop any search after E evaluator calls (real or surrogate); the guided front search "
                             f"spends exactly this many (default {DEFAULT_EVALUATIONS}, a tenth of the official search's)")
    parser.add_argument("--algorithm", choices=ALGORITHMS, default=None,
                        help="with --front: guided (a predictor fit on every evaluation picks what to evaluate and "
                             "which measured subnet wins each bin; the default), official (the authors' loop: 512 + "
                             "19 x 256 evaluations, 10-MFLOPs bins) or evolution (a population per generation, with "
                             "--predictor; the default when --predictor, --population or --generations is given)")
    parser.add_argument("--verify-top", type=flags.integer(1, 10_000), default=None, metavar="K",
                        help="with --evaluator surrogate --front: evaluate K of the front's bins for real (with "
                             "--supernet, --data and --calib-data): the Pareto-optimal bins, spread evenly over the "
                             "range; their measured top-1 is written as verified_top1")
    parser.add_argument("--flops", type=flags.number(0, open_low=True), metavar="MFLOPS",
                        help="budget: at most this many MFLOPs (give --flops, --latency-ms or both)")
    parser.add_argument("--flops-min", type=flags.number(0), metavar="MFLOPS",
                        help="search only subnets with at least this many MFLOPs (default: no floor)")
    parser.add_argument("--latency-ms", type=flags.number(0, open_low=True), metavar="MS",
                        help="budget: at most this many milliseconds per batch on this machine with --backend, "
                             "--threads and --batch-size (predicted from a latency table, re-anchored each run to the "
                             "smallest, a middle and the largest subnet measured now; the best is measured)")
    parser.add_argument("--backend", type=_backend, default="onnxruntime", metavar="RUNTIME",
                        help=f"runtime latency is measured on, one of {', '.join(BACKENDS)} (or another name of "
                             "one, as alphanet-bench takes them: tflite is litert): ONNX Runtime or OpenVINO running "
                             "the file alphanet-export writes, PyTorch eager on the CPU, CUDA, or the phone runtimes "
                             "ExecuTorch (XNNPACK) and LiteRT on this CPU, a stand-in for a phone's (their tables take "
                             "long to build: each layer is converted)")
    parser.add_argument("--latency-table", metavar="FILE",
                        help="latency table to use (built there when missing); default: the cache file for this "
                             "machine, runtime and version, threads and batch size, under $ALPHANET_ZOO_CACHE or "
                             "~/.cache/alphanet_zoo/latency")
    parser.add_argument("--measure-top", type=flags.integer(1, 1000), default=5, metavar="N",
                        help="with --latency-ms: measure candidates end to end, most accurate first, up to N of them, "
                             "and report the first that meets the budget (after a miss, those the misses show "
                             "would miss too are skipped; when none is left, the fastest predicted are tried)")
    parser.add_argument("--data", metavar="DIR",
                        help="held-out labelled images scored for accuracy (ImageNet layout for a 1000-class "
                             "supernet; otherwise class folders of the training classes)")
    parser.add_argument("--population", type=flags.integer(2, 100_000), default=None, metavar="N",
                        help=f"candidates per generation (default {POPULATION})")
    parser.add_argument("--generations", type=flags.integer(0, 100_000), default=None, metavar="N",
                        help=f"generations after the initial population (default {GENERATIONS})")
    parser.add_argument("--parent-ratio", type=flags.number(0, 1, open_low=True), default=0.25, metavar="R",
                        help="share of the population kept as parents")
    parser.add_argument("--mutation-ratio", type=flags.number(0, 1), default=0.5, metavar="R",
                        help="share of the children made by mutation (the rest by crossover)")
    parser.add_argument("--mutate-prob", type=flags.number(0, 1), default=0.1, metavar="P",
                        help="probability of redrawing each choice in a mutation")
    parser.add_argument("--val-images", type=flags.integer(0), default=5000, metavar="N",
                        help="held-out images scored per candidate (a seeded subset; 0: all)")
    parser.add_argument("--crop-size", type=flags.integer(8, 4096), default=224, metavar="N",
                        help="image crop side before the resize (224: the published preprocessing)")
    parser.add_argument("--no-resize", action="store_true",
                        help="feed the crops as they are instead of resizing to each subnet's resolution "
                             "(for supernets trained with data.multi_resolution=false)")
    parser.add_argument("--history", metavar="FILE",
                        help="also write every evaluated candidate (JSON lines, rewritten after each generation)")
    parser.add_argument("--front", metavar="MIN:MAX:STEP",
                        help="search a whole Pareto front in one run: the best subnet per bin of STEP between MIN "
                             "and MAX MFLOPs (milliseconds, predicted from the latency table, with --latency-ms: "
                             "then MAX must not exceed it); --out gets the front (JSON). Replaces --flops/--flops-min")
    parser.add_argument("--predictor", default=None, metavar="auto|FILE|none",
                        help="with --front: rank candidates by an accuracy predictor (ridge regression on the "
                             "architecture, refitted as evaluations arrive) and evaluate for real only those that "
                             "can change the front. auto: fitted on this run's evaluations; FILE: also on an "
                             "earlier run's history (JSON lines with arch and top1); none: evaluate every "
                             "candidate (default). With a predictor, --population candidates are drawn and "
                             "predicted per generation, whatever their number the real evaluations are not")
    parser.add_argument("--predictor-margin", type=flags.number(0), default=FRONT_MARGIN, metavar="K",
                        help="with --predictor: a candidate is evaluated when its predicted top-1 plus K times the "
                             "predictor's leave-one-out error beats its bin's best (larger: safer, more "
                             "evaluations)")
    parser.add_argument("--predictor-bound", choices=BOUNDS, default=DEFAULT_BOUND,
                        help="with --predictor: how far above its prediction a candidate's top-1 may be: rmse "
                             "(K times the leave-one-out error, the default), q90 (the 90th percentile of the "
                             "leave-one-out residuals) or max (the largest, and at least K times the error). "
                             "Whatever the bound, a prediction rules nothing out until the "
                             "predictor's leave-one-out Kendall tau shows skill (3 null standard errors)")
    parser.add_argument("--predictor-rounds", type=flags.integer(1, 1_000_000), default=None, metavar="N",
                        help="with --predictor: at most N rounds of real evaluations per generation (default: until "
                             "no candidate can change the front, which keeps the candidates those of --predictor "
                             "none while the predictor is right); those left in doubt stay candidates, and the "
                             "last generation runs until none is left. 2 took ~35 %% fewer evaluations on a "
                             "stand-in accuracy")
    parser.add_argument("--channels-last", action="store_true",
                        help="run candidates in channels-last memory format (faster on CPUs), after checking on "
                             "the smallest subnet that every held-out prediction stays as in the default format "
                             "(otherwise the default is kept)")
    parser.add_argument("--plot", metavar="PNG", help="plot top-1 against MFLOPs (and predicted latency) with the "
                                                      "Pareto front (needs matplotlib: the 'plot' extra)")
    return parser


def _check(args: argparse.Namespace) -> None:
    args.bins = None
    evolution_flags = [flag for flag, value in (("--predictor", args.predictor), ("--population", args.population),
                                                ("--generations", args.generations)) if value is not None]
    if args.front is None and args.algorithm not in (None, "evolution"):
        raise UsageError("--algorithm applies to --front searches")
    if args.algorithm is None:
        args.algorithm = "evolution" if evolution_flags or args.front is None else "guided"
    if args.front is not None and args.algorithm != "evolution" and evolution_flags:
        raise UsageError(f"{' and '.join(evolution_flags)} only apply to --algorithm evolution")
    args.predictor = args.predictor or "none"
    args.population = args.population or POPULATION
    args.generations = args.generations if args.generations is not None else GENERATIONS
    real = args.evaluator == "real" or args.verify_top is not None
    if args.verify_top is not None and (args.evaluator != "surrogate" or args.front is None):
        raise UsageError("--verify-top applies to --evaluator surrogate --front searches")
    if args.evaluator != "surrogate" and args.surrogate_images != DEFAULT_IMAGES:
        raise UsageError("--surrogate-images applies to --evaluator surrogate")
    if real:
        missing = [flag for flag, value in (("--supernet", args.supernet), ("--data", args.data),
                                            ("--calib-data", args.calib_data)) if not value]
        if missing:
            raise UsageError(f"real evaluations need {', '.join(missing)} (or --evaluator surrogate, which needs no "
                             "supernet or images)")
    if args.front is not None:
        if args.flops is not None or args.flops_min is not None:
            raise UsageError("--front MIN:MAX:STEP replaces --flops and --flops-min: give one or the other")
        try:
            args.bins = Bins.parse(args.front, "MFLOPs" if args.latency_ms is None else "ms")
        except InputError as e:
            raise UsageError(str(e)) from None
        if args.latency_ms is not None and args.bins.high > args.latency_ms:
            raise UsageError(f"--front {args.front} is in milliseconds with --latency-ms: MAX must not exceed "
                             f"--latency-ms {args.latency_ms:g}")
        smallest, largest = flops_range()
        if args.latency_ms is None and (args.bins.high < smallest or args.bins.low > largest):
            raise UsageError(f"--front {args.front} misses the search space: its subnets have {smallest:.2f} to "
                             f"{largest:.2f} MFLOPs")
    elif args.predictor != "none":
        raise UsageError("--predictor applies to --front searches")
    if args.predictor not in ("auto", "none") and not Path(args.predictor).is_file():
        raise InputError(f"--predictor: not auto, none or a file: {args.predictor}")
    if args.flops is None and args.latency_ms is None and args.bins is None:
        raise UsageError("give a budget: --flops MFLOPS, --latency-ms MS, or both (or --front MIN:MAX:STEP)")
    smallest, largest = flops_range()
    for flag, value in (("--flops", args.flops), ("--flops-min", args.flops_min)):
        if value is not None and not smallest <= value <= largest:
            raise UsageError(f"{flag} {value:g} is outside the search space's range: the smallest subnet has "
                             f"{smallest:.2f} MFLOPs, the largest {largest:.2f}")
    if args.flops_min is not None and args.flops is not None and args.flops_min > args.flops:
        raise UsageError(f"--flops-min {args.flops_min:g} is above --flops {args.flops:g}")
    if args.latency_ms is None:
        given = [flag for flag, value in (("--latency-table", args.latency_table),
                                          ("--backend", None if args.backend == "onnxruntime" else args.backend))
                 if value is not None]
        if given:
            raise UsageError(f"{' and '.join(given)} only apply with --latency-ms")
    args.resume = flags.resume_choice(args, False)
    if args.resume:
        if args.resume is True and not args.history:
            raise UsageError("--resume needs the history to continue: --resume FILE or --history FILE")
        if args.resume is not True and not args.history:
            args.history = args.resume
    for flag, path in (("--supernet", args.supernet), ("--data", args.data), ("--calib-data", args.calib_data)):
        if real and not Path(path).exists():
            raise InputError(f"{flag}: not found: {path}")
    for flag, path in (("--out", args.out), ("--history", args.history), ("--plot", args.plot)):
        if path:
            check_writable_file(path, flag)
    if args.plot:
        try:
            require_matplotlib()
        except ImportError as e:
            raise UsageError(str(e)) from None


@cli_main(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _check(args)
    with distributed.torchrun(args.device, args.dist_timeout, PROG) as ctx:
        return _search(args, ctx.device)


def _search(args: argparse.Namespace, device) -> int:
    rank, world = distributed.rank_and_world()
    main_rank = rank == 0
    console = Console(args.json) if main_rank else running.SilentConsole(args.json)
    quiet = {} if main_rank else {"disable": True}
    running.set_threads(args.threads)
    if device.type == "cpu":
        keep_freed_memory()  # half of a candidate's time went to mapping and unmapping activations
    args.batch_size_used = args.batch_size or EVAL_BATCH_SIZE

    real = _RealSetup.create(args, device, console, quiet, world) if args.evaluator == "real" else None
    num_classes = real.supernet.num_classes if real else SEARCH_SPACE.num_classes
    latency = _latency(args, num_classes, console, quiet) if args.latency_ms is not None else None
    if args.bins is not None and latency is None:
        smallest, largest = flops_range()
        budget = Budget.create(min(args.bins.high, largest), max(args.bins.low, smallest))
    else:
        budget = Budget.create(args.flops, args.flops_min, args.latency_ms, latency.predictor if latency else None)
    if real:
        real.load_images(args, console, quiet)
        console.status(f"{real.heldout_images} held-out images, {real.calibration.images.shape[0]} calibration "
                       f"images; searching {budget.describe()}")
        evaluate_many = evaluate_across_ranks(real.evaluator, count_flops)
    else:
        surrogate = SurrogateEvaluator(args.surrogate_images, args.seed)
        evaluate_many = surrogate
        console.status(f"surrogate evaluations (the AttentiveNAS accuracy predictor, "
                       f"{args.surrogate_images or 'no'} simulated images); searching {budget.describe()}")

    settings = {"seed": args.seed, "flops": args.flops, "flops_min": args.flops_min, "latency_ms": args.latency_ms,
                "latency_table": latency.table_id if latency else None, "population": args.population,
                "parent_ratio": args.parent_ratio, "mutation_ratio": args.mutation_ratio,
                "mutate_prob": args.mutate_prob, "num_classes": num_classes}
    if real:
        settings.update(val_images=args.val_images, heldout=real.heldout_count, crop_size=args.crop_size,
                        no_resize=args.no_resize, batch_size=args.batch_size_used, calibration=real.calibration_id)
    else:
        settings.update(evaluator="surrogate", surrogate_images=args.surrogate_images)
    if args.algorithm != "evolution" or args.max_evaluations is not None:
        settings.update(algorithm=args.algorithm, max_evaluations=args.max_evaluations)
    prior = ()
    if args.bins is not None:
        settings.update(front=[args.bins.low, args.bins.high, args.bins.step, args.bins.unit],
                        generations=args.generations, predictor=None if args.predictor == "none" else "ridge/2",
                        margin=args.predictor_margin, rounds=args.predictor_rounds, bound=args.predictor_bound)
        if args.predictor not in ("auto", "none"):
            prior = distributed.broadcast_or_raise(lambda: read_evaluations(args.predictor),
                                                   "reading the predictor's history")
            settings["prior"] = fingerprint({"rows": [[a.to_dict(), t] for a, t in prior]})
    search_id = fingerprint(settings)
    known = None
    if args.resume:
        source = args.history if args.resume is True else args.resume
        known = distributed.broadcast_or_raise(lambda: read_history(source, search_id, budget.latency),
                                               "reading the history to resume")
        console.status(f"resuming from {source}: {len(known)} candidates already evaluated")

    if args.bins is not None:
        return _front(args, evaluate_many, real, latency, prior, known, search_id, console, quiet,
                      world=world, main_rank=main_rank, device=device)
    search = EvolutionSearch(None, budget=budget, population=args.population, generations=args.generations,
                             parent_ratio=args.parent_ratio, mutation_ratio=args.mutation_ratio,
                             mutate_prob=args.mutate_prob, seed=args.seed, known=known,
                             evaluate_many=evaluate_many, max_evaluations=args.max_evaluations)
    bar = progress(total=args.generations + 1, desc="generations", unit="gen", **quiet)
    start = time.perf_counter()

    def report(generation: int, population) -> None:
        best = max(population, key=lambda c: c.top1)
        bar.update(1)
        bar.set_postfix(best=f"{best.top1:.2f}%", evaluated=len(search.evaluated))
        if args.history and main_rank:
            write_history(args.history, history_rows(search.evaluated.values(), search_id))

    try:
        result = search.run(report)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    chosen, checked = result.best, None
    if latency is not None:
        chosen, checked = latency.check_best(result, args.latency_ms, args.measure_top, progress if main_rank else None)

    document = best_document(chosen, result, world_size=world, seed=args.seed, budget=budget,
                             heldout_images=real.heldout_images if real else None,
                             calibration=real.calibration_description if real else None, latency=checked,
                             search_id=search_id, seconds=seconds, replayed=search.replayed)
    _describe_evaluator(document, evaluate_many, real)
    if main_rank:

        write_json(args.out, document)
        if args.plot:

            plot_search(result.history, chosen, args.plot, checked["measured_ms"] if checked else None,
                        args.latency_ms)
    console.json({**document, "best": chosen.to_dict(), "pareto": [c.to_dict() for c in result.pareto]})
    for line in front_lines(result, chosen, seconds):
        console.result(line)
    what = f"{chosen.mflops:.2f} MFLOPs"
    if checked:
        what += (f", {checked['measured_ms']:.2f} ms measured (quartiles {checked['spread_ms']:.2f} ms apart; "
                 f"{checked['held_ms']:.2f} ms in the machine's slower state), {checked['predicted_ms']:.2f} ms "
                 f"predicted ({100 * checked['prediction_error']:+.1f} %)")
    on = f"on {real.heldout_images} held-out images" if real else "(surrogate)"
    console.status(f"best: {what}, top-1 {chosen.top1:.2f} % {on} "
                   f"-> {args.out}" + (f" (plot: {args.plot})" if args.plot else ""))
    distributed.barrier("finishing")
    return 0


def _front(args: argparse.Namespace, evaluate_many, real: "_RealSetup | None", latency, prior, known,
           search_id: str, console: Console, quiet: dict, *, world: int, main_rank: bool, device) -> int:
    predicted_ms = latency.predictor if latency is not None else None
    images = real.heldout_images if real else args.surrogate_images
    options = {}
    if args.algorithm == "evolution":
        options = dict(population=args.population, generations=args.generations,
                       mutation_ratio=args.mutation_ratio, mutate_prob=args.mutate_prob,
                       predictor=None if args.predictor == "none" else "auto", prior=prior,
                       margin=args.predictor_margin, rounds=args.predictor_rounds, bound=args.predictor_bound)
    search = make_front_search(args.algorithm, args.bins, evaluate_many, cost=predicted_ms or count_flops,
                               latency=predicted_ms, seed=args.seed, max_evaluations=args.max_evaluations,
                               known=known, top1_step=100.0 / images if images else 0.0, **options)
    if args.algorithm == "guided":
        bar = progress(total=search.max_evaluations, desc="evaluations", unit="eval", **quiet)
    else:
        steps = args.generations + 1 if args.algorithm == "evolution" else search.iterations
        bar = progress(total=steps, desc="generations", unit="gen", **quiet)
    start = time.perf_counter()

    def report(step: int) -> None:
        if args.algorithm == "guided":
            bar.update(len(search.evaluated) - bar.n)
        else:
            bar.update(1)
        bar.set_postfix(bins=f"{sum(c is not None for c in search.best)}/{args.bins.count}",
                        evaluated=len(search.evaluated))
        if args.history and main_rank:
            write_history(args.history, front_history_rows(search, search_id))

    try:
        result = search.run(report)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    evolution = args.algorithm == "evolution"
    document = front_document(result, predictor_mode=args.predictor if evolution else "none",
                              margin=args.predictor_margin, bound=args.predictor_bound,
                              world_size=world, seed=args.seed, search_id=search_id,
                              heldout_images=real.heldout_images if real else None,
                              calibration=real.calibration_description if real else None,
                              seconds=seconds, population=args.population if evolution else None,
                              generations=args.generations if evolution else None,
                              latency=None if latency is None else {"backend": args.backend, "table": latency.path,
                                                                    "table_id": latency.table_id,
                                                                    "anchor": latency.anchor and latency.anchor.to_dict()})
    document["algorithm"] = args.algorithm
    document["max_evaluations"] = args.max_evaluations
    if args.algorithm == "guided":
        document["predictor"].update(mode="guided", model="ridge (one-hot)",
                                     loo_rmse=None if result.predictor is None else round(result.predictor.loo_rmse, 4))
    _describe_evaluator(document, evaluate_many, real)
    if args.verify_top:
        _verify(args, document, result, device, console, quiet, world)
    if main_rank:
        write_json(args.out, document)
        if args.plot:
            plot_front(result, args.plot)
    console.json(document)
    for line in front_table(result, seconds):
        console.result(line)
    kind = "real" if real else "surrogate"
    console.status(f"front: {len(result.front)} of {args.bins.count} bins, {result.evaluations} {kind} evaluations "
                   f"-> {args.out}" + (f" (plot: {args.plot})" if args.plot else ""))
    distributed.barrier("finishing")
    return 0


def _describe_evaluator(document: dict, evaluate_many, real: "_RealSetup | None") -> None:
    """Say what the top-1 figures are: real measurements, or the surrogate's draws (never to be taken as accuracy)."""
    if real:
        document["evaluator"] = "real"
        document["channels_last"] = real.evaluator.channels_last
        return
    described = evaluate_many.describe()
    document["evaluator"] = "surrogate"
    document["surrogate"] = {**described, "note": "top-1 figures are the AttentiveNAS predictor's (its scale: their "
                                                  "supernet before fine-tuning), with simulated noise: not measured "
                                                  "accuracy"}


def _verify(args: argparse.Namespace, document: dict, result, device, console: Console, quiet: dict,
            world: int) -> None:
    """Evaluate for real K Pareto-optimal bins of a surrogate front, spread evenly over the range."""
    front = pareto_front(result.front)
    if len(front) > args.verify_top:
        step = (len(front) - 1) / max(1, args.verify_top - 1)
        front = [front[round(k * step)] for k in range(args.verify_top)] if args.verify_top > 1 else [front[-1]]
    real = _RealSetup.create(args, device, console, quiet, world)
    real.load_images(args, console, quiet)
    evaluate_many = evaluate_across_ranks(real.evaluator, count_flops)
    measured = evaluate_many([c.arch for c in front])
    by_arch = {c.arch: r.top1 for c, r in zip(front, measured)}
    for row in document["bins"]:
        if not row.get("empty"):
            value = by_arch.get(ArchConfig.from_dict(row["architecture"]))
            if value is not None:
                row["verified_top1"] = float(value)
    document["verified"] = {"bins": len(measured), "heldout_images": real.heldout_images,
                            "calibration": dataclasses.asdict(real.calibration_description),
                            "supernet": str(args.supernet)}
    console.status(f"verified {len(measured)} bins with real evaluations on {real.heldout_images} held-out images")


class _RealSetup:
    """What real evaluations need: the supernet, calibration and held-out images, the evaluator."""

    def __init__(self, supernet: Supernet, device) -> None:
        self.supernet, self.device = supernet, device
        self.evaluator: SubnetEvaluator | None = None

    @classmethod
    def create(cls, args: argparse.Namespace, device, console: Console, quiet: dict, world: int) -> "_RealSetup":
        console.status(f"loading supernet {args.supernet}" + (f" ({world} processes)" if world > 1 else ""))
        return cls(Supernet.from_checkpoint(args.supernet).to(device).eval(), device)

    def load_images(self, args: argparse.Namespace, console: Console, quiet: dict) -> None:
        samples, _ = labelled_samples(args.data, self.supernet.num_classes)
        bad = sorted({s.target for s in samples if not 0 <= s.target < self.supernet.num_classes})
        if bad:
            raise InputError(f"{args.data}: class index {bad[0]} is outside the supernet's "
                             f"{self.supernet.num_classes} classes")
        batches = running.calibration_from_args(args, crop_size=args.crop_size)
        self.calibration = load_calibration_images(
            batches, lambda it: progress(it, total=args.calib_batches, desc="calibration images", unit="batch",
                                         **quiet))
        heldout = load_heldout_images(heldout_subset(samples, args.val_images, args.seed + 1), args.batch_size_used,
                                      args.crop_size, args.workers,
                                      lambda it: progress(it, desc="held-out images", **quiet))
        self.heldout_count = len(samples)
        self.heldout_images = int(heldout.images.shape[0])
        self.calibration_description = batches.describe()
        self.calibration_id = [batches.num_batches, batches.batch_size, len(batches.samples)]
        self.evaluator = SubnetEvaluator(self.supernet, self.calibration, heldout, self.device,
                                         resize=not args.no_resize)
        if args.channels_last:
            reference = self.supernet.space.smallest()
            self.evaluator.channels_last = distributed.broadcast_or_raise(
                lambda: self.evaluator.same_predictions(reference), "checking channels-last")
            console.status("channels-last: " + ("same predictions as the default format, used"
                                                if self.evaluator.channels_last
                                                else "predictions differ from the default format, not used"))


def _latency(args: argparse.Namespace, num_classes: int, console: Console, quiet: dict):
    setup = LatencySetup.create(args.backend, threads=args.threads, batch_size=args.batch_size or 1,
                                table_path=args.latency_table, max_mflops=args.flops, num_classes=num_classes,
                                progress=progress if not quiet else None)
    console.status(setup.describe())
    if setup.anchor is not None:
        console.status(setup.anchor.describe())
    setup.refuse_below(args.latency_ms)
    return setup


if __name__ == "__main__":
    sys.exit(main())
