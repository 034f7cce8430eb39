"""``alphanet-search``: evolutionary search for the best subnet of a supernet at a FLOPs budget.

    alphanet-search --supernet alphanet_pretrained.pth.tar --flops 300 --flops-min 280 \\
        --data /data/imagenet/heldout --calib-data /data/imagenet/train --out best.json

``best.json`` is a plain architecture config: ``alphanet-extract --arch best.json``,
``alphanet-eval --arch best.json`` and ``alphanet-export --arch best.json`` take it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from .._cli import CLIError, cli_main, progress
from .._io import atomic_path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alphanet-search",
        description="Evolutionary search for the most accurate subnet of a supernet under a FLOPs budget "
                    "(the paper's count, analytic). Each candidate is extracted, BN-calibrated on training "
                    "images and scored on held-out images; the Pareto front found is printed and the best "
                    "config written as JSON.")
    parser.add_argument("--supernet", required=True, metavar="CKPT",
                        help="supernet checkpoint (official release, alphanet-train checkpoint, or .safetensors)")
    parser.add_argument("--flops", type=float, required=True, metavar="MFLOPS", help="budget: at most this many MFLOPs")
    parser.add_argument("--flops-min", type=float, metavar="MFLOPS",
                        help="search only subnets with at least this many MFLOPs (default: no floor)")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="held-out labelled images scored for accuracy (ImageNet layout for a 1000-class "
                             "supernet; otherwise an ImageFolder with the training classes)")
    parser.add_argument("--calib-data", required=True, metavar="DIR", help="training images for BN calibration")
    parser.add_argument("--out", required=True, metavar="best.json", help="where to write the best config")
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--parent-ratio", type=float, default=0.25)
    parser.add_argument("--mutation-ratio", type=float, default=0.5)
    parser.add_argument("--mutate-prob", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-images", type=int, default=5000,
                        help="held-out images scored per candidate (a seeded subset; 0: all)")
    parser.add_argument("--calib-batches", type=int, default=16, help="BN calibration batches per candidate")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--crop-size", type=int, default=224, help="image crop side before the resize")
    parser.add_argument("--no-resize", action="store_true",
                        help="feed the crops as they are instead of resizing to each subnet's resolution "
                             "(for supernets trained with data.multi_resolution=false)")
    parser.add_argument("--workers", type=int, default=4, help="image decoding processes")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--history", metavar="FILE.jsonl", help="also write every evaluated candidate (JSON lines)")
    return parser


def _check(args: argparse.Namespace) -> None:
    for name in ("population", "calib_batches", "batch_size", "crop_size"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.population < 2:
        raise CLIError(f"--population must be at least 2, got {args.population}")
    if args.generations < 0 or args.val_images < 0 or args.workers < 0:
        raise CLIError("--generations, --val-images and --workers must not be negative")
    for flag, path in (("--supernet", args.supernet), ("--data", args.data), ("--calib-data", args.calib_data)):
        if not Path(path).exists():
            raise CLIError(f"{flag}: not found: {path}")
    if not Path(args.out).resolve().parent.is_dir():
        raise CLIError(f"--out: folder {Path(args.out).resolve().parent} does not exist")


def _describe(arch) -> str:
    return (f"res {arch.resolution} w {','.join(map(str, arch.width))} d {''.join(map(str, arch.depth))} "
            f"k {''.join(map(str, arch.kernel_size))} e {''.join(map(str, arch.expand_ratio))}")


@cli_main("alphanet-search")
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _check(args)

    import torch

    from ..supernet import Supernet
    from ..train.distributed import resolve_device
    from .evaluate import SubnetEvaluator, labelled_samples, load_calibration_images, load_heldout_images
    from .evolution import EvolutionSearch
    from .sampling import flops_range

    smallest, _ = flops_range()
    if args.flops < smallest:
        raise CLIError(f"--flops {args.flops:g}: no subnet is that small; the smallest has {smallest:.2f} MFLOPs")
    if args.flops_min is not None and args.flops_min > args.flops:
        raise CLIError(f"--flops-min {args.flops_min:g} is above --flops {args.flops:g}")
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    print(f"loading supernet {args.supernet}", file=sys.stderr)
    supernet = Supernet.from_checkpoint(args.supernet).to(device).eval()
    heldout_samples = labelled_samples(args.data, supernet.num_classes)
    calib_samples = labelled_samples(args.calib_data, supernet.num_classes)
    bad = sorted({t for _, t in heldout_samples if not 0 <= t < supernet.num_classes})
    if bad:
        raise CLIError(f"{args.data}: class index {bad[0]} is outside the supernet's {supernet.num_classes} classes")
    calib_count = args.calib_batches * args.batch_size
    calibration = load_calibration_images(calib_samples, calib_count, args.batch_size, args.crop_size, args.seed,
                                          args.workers, lambda it: progress(it, desc="calibration images"))
    heldout = load_heldout_images(heldout_samples, args.val_images or None, args.batch_size, args.crop_size,
                                  args.seed + 1, args.workers, lambda it: progress(it, desc="held-out images"))
    print(f"{heldout.images.shape[0]} held-out images, {calibration.images.shape[0]} calibration images; "
          f"searching {args.flops_min if args.flops_min is not None else smallest:.1f}..{args.flops:.1f} MFLOPs",
          file=sys.stderr)

    evaluator = SubnetEvaluator(supernet, calibration, heldout, device, resize=not args.no_resize)
    search = EvolutionSearch(evaluator, args.flops, args.flops_min, population=args.population,
                             generations=args.generations, parent_ratio=args.parent_ratio,
                             mutation_ratio=args.mutation_ratio, mutate_prob=args.mutate_prob, seed=args.seed)
    bar = progress(None, total=args.generations + 1, desc="generations", unit="gen")
    start = time.perf_counter()

    def report(generation: int, population) -> None:
        best = max(population, key=lambda c: c.top1)
        bar.update(1)
        bar.set_postfix(best=f"{best.top1:.2f}%", evaluated=len(search.evaluated))

    result = search.run(report)
    bar.close()

    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result.best.arch.to_dict()) + "\n", encoding="utf-8")
    if args.history:
        with atomic_path(args.history) as tmp:
            tmp.write_text("".join(json.dumps(c.to_dict()) + "\n" for c in result.history), encoding="utf-8")

    print(f"Pareto front of {len(result.history)} evaluated subnets ({time.perf_counter() - start:.0f} s):")
    print(f"{'MFLOPs':>9} {'top-1 %':>8}  architecture")
    for c in result.pareto:
        mark = "  <- best" if c.arch == result.best.arch else ""
        print(f"{c.mflops:>9.2f} {c.top1:>8.2f}  {_describe(c.arch)}{mark}")
    print(f"best: {result.best.mflops:.2f} MFLOPs, top-1 {result.best.top1:.2f} % on {heldout.images.shape[0]} "
          f"held-out images -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
