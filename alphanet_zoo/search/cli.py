"""``alphanet-search``: evolutionary search for the best subnet of a supernet at a FLOPs budget.

    alphanet-search --supernet alphanet_pretrained.pth.tar --flops 300 --flops-min 280 \\
        --data /data/imagenet/heldout --calib-data /data/imagenet/train --out best.json

``best.json`` is a plain architecture config: ``alphanet-extract --arch best.json``,
``alphanet-eval --arch best.json`` and ``alphanet-export --arch best.json`` take it. Each candidate is
calibrated and scored exactly as ``alphanet-extract`` and ``alphanet-eval`` would with the same
``--calib-*``, ``--seed`` and ``--batch-size`` flags.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Sequence

from .. import cli
from ..cli import Console, cli_main, progress
from ..errors import InputError, UsageError


def _parser() -> cli.ArgumentParser:
    parser = cli.command_parser(
        "alphanet-search",
        "Evolutionary search for the most accurate subnet of a supernet under a FLOPs budget (the paper's count, "
        "analytic). Each candidate is extracted, BN-calibrated on training images and scored on held-out images; "
        "the Pareto front found is printed and the best config written as JSON.",
        [cli.calibration_flags(required=True), cli.seed_flags("seed of the search, the calibration draws and "
                                                              "the held-out subset"),
         cli.batch_flags(128), cli.workers_flags(4), cli.device_flags(), cli.threads_flags(),
         cli.output_flags("where to write the best architecture (JSON)", required=True), cli.json_flags()])
    parser.add_argument("--supernet", metavar="PATH", required=True,
                       help="supernet checkpoint (official release, alphanet-train checkpoint, or .safetensors)")
    parser.add_argument("--flops", type=cli.number(0, open_low=True), required=True, metavar="MFLOPS",
                        help="budget: at most this many MFLOPs")
    parser.add_argument("--flops-min", type=cli.number(0), metavar="MFLOPS",
                        help="search only subnets with at least this many MFLOPs (default: no floor)")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="held-out labelled images scored for accuracy (ImageNet layout for a 1000-class "
                             "supernet; otherwise class folders of the training classes)")
    parser.add_argument("--population", type=cli.integer(2, 100_000), default=64, metavar="N",
                        help="candidates per generation")
    parser.add_argument("--generations", type=cli.integer(0, 100_000), default=20, metavar="N",
                        help="generations after the initial population")
    parser.add_argument("--parent-ratio", type=cli.number(0, 1, open_low=True), default=0.25, metavar="R",
                        help="share of the population kept as parents")
    parser.add_argument("--mutation-ratio", type=cli.number(0, 1), default=0.5, metavar="R",
                        help="share of the children made by mutation (the rest by crossover)")
    parser.add_argument("--mutate-prob", type=cli.number(0, 1), default=0.1, metavar="P",
                        help="probability of redrawing each choice in a mutation")
    parser.add_argument("--val-images", type=cli.integer(0), default=5000, metavar="N",
                        help="held-out images scored per candidate (a seeded subset; 0: all)")
    parser.add_argument("--crop-size", type=cli.integer(8, 4096), default=224, metavar="N",
                        help="image crop side before the resize (224: the published preprocessing)")
    parser.add_argument("--no-resize", action="store_true",
                        help="feed the crops as they are instead of resizing to each subnet's resolution "
                             "(for supernets trained with data.multi_resolution=false)")
    parser.add_argument("--history", metavar="FILE", help="also write every evaluated candidate (JSON lines)")
    return parser


def _describe(arch) -> str:
    return (f"res {arch.resolution} w {','.join(map(str, arch.width))} d {''.join(map(str, arch.depth))} "
            f"k {''.join(map(str, arch.kernel_size))} e {''.join(map(str, arch.expand_ratio))}")


@cli_main("alphanet-search")
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(args.json)

    from .._io import check_writable_file, write_json, write_text
    from ..data import labelled_samples
    from ..supernet import Supernet
    from .evaluate import SubnetEvaluator, heldout_subset, load_calibration_images, load_heldout_images
    from .evolution import EvolutionSearch
    from .sampling import flops_range

    smallest, largest = flops_range()
    for flag, value in (("--flops", args.flops), ("--flops-min", args.flops_min)):
        if value is not None and not smallest <= value <= largest:
            raise UsageError(f"{flag} {value:g} is outside the search space's range: the smallest subnet has "
                             f"{smallest:.2f} MFLOPs, the largest {largest:.2f}")
    if args.flops_min is not None and args.flops_min > args.flops:
        raise UsageError(f"--flops-min {args.flops_min:g} is above --flops {args.flops:g}")
    for flag, path in (("--supernet", args.supernet), ("--data", args.data), ("--calib-data", args.calib_data)):
        if not Path(path).exists():
            raise InputError(f"{flag}: not found: {path}")
    check_writable_file(args.out, "--out")
    if args.history:
        check_writable_file(args.history, "--history")
    cli.set_threads(args.threads)
    device = cli.parse_device(args.device)

    console.status(f"loading supernet {args.supernet}")
    supernet = Supernet.from_checkpoint(args.supernet).to(device).eval()
    heldout_samples, _ = labelled_samples(args.data, supernet.num_classes)
    bad = sorted({s.target for s in heldout_samples if not 0 <= s.target < supernet.num_classes})
    if bad:
        raise InputError(f"{args.data}: class index {bad[0]} is outside the supernet's {supernet.num_classes} classes")
    calibration = load_calibration_images(
        cli.calibration_from_args(args, crop_size=args.crop_size),
        lambda it: progress(it, total=args.calib_batches, desc="calibration images", unit="batch"))
    heldout = load_heldout_images(heldout_subset(heldout_samples, args.val_images, args.seed + 1), args.batch_size,
                                  args.crop_size, args.workers, lambda it: progress(it, desc="held-out images"))
    low = args.flops_min if args.flops_min is not None else smallest
    console.status(f"{heldout.images.shape[0]} held-out images, {calibration.images.shape[0]} calibration images; "
                   f"searching {low:.1f}..{args.flops:.1f} MFLOPs")

    evaluator = SubnetEvaluator(supernet, calibration, heldout, device, resize=not args.no_resize)
    search = EvolutionSearch(evaluator, args.flops, args.flops_min, population=args.population,
                             generations=args.generations, parent_ratio=args.parent_ratio,
                             mutation_ratio=args.mutation_ratio, mutate_prob=args.mutate_prob, seed=args.seed)
    bar = progress(total=args.generations + 1, desc="generations", unit="gen")
    start = time.perf_counter()

    def report(generation: int, population) -> None:
        best = max(population, key=lambda c: c.top1)
        bar.update(1)
        bar.set_postfix(best=f"{best.top1:.2f}%", evaluated=len(search.evaluated))

    result = search.run(report)
    bar.close()

    write_json(args.out, result.best.arch.to_dict())
    if args.history:
        write_text(args.history, "".join(json.dumps(c.to_dict()) + "\n" for c in result.history))

    console.json({"best": result.best.to_dict(), "pareto": [c.to_dict() for c in result.pareto],
                  "evaluated": len(result.history), "seconds": round(time.perf_counter() - start, 3)})
    console.result(f"Pareto front of {len(result.history)} evaluated subnets ({time.perf_counter() - start:.0f} s):")
    console.result(f"{'MFLOPs':>9} {'top-1 %':>8}  architecture")
    for c in result.pareto:
        mark = "  <- best" if c.arch == result.best.arch else ""
        console.result(f"{c.mflops:>9.2f} {c.top1:>8.2f}  {_describe(c.arch)}{mark}")
    console.status(f"best: {result.best.mflops:.2f} MFLOPs, top-1 {result.best.top1:.2f} % on "
                   f"{heldout.images.shape[0]} held-out images -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
