"""Console commands of the zoo itself: ``alphanet-models``, ``alphanet-extract``, ``alphanet-predict``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from ._cli import CLIError, cli_main, parse_arch, parse_archs, progress
from .registry import MODELS, hub_repo_name

CALIBRATION_RECIPE = ("official: running statistics reset, cumulative average (momentum None), "
                      "batches of training images (RandomResizedCrop 224 bicubic, horizontal flip, "
                      "normalise, bicubic resize to the model's resolution) forwarded in train mode without gradients")


def model_table() -> list[dict]:
    """One row per published model: name, resolution, MFLOPs (published and counted), params, top-1."""
    return [{"name": name, "official_name": info.official_name, "resolution": info.arch.resolution,
             "mflops_published": info.published_mflops, "mflops": round(info.mflops, 2), "params": info.params,
             "top1_published": info.published_top1, "top5_published": info.published_top5,
             "hub_repo": info.weights.hub_repo}
            for name, info in MODELS.items()]


@cli_main("alphanet-models")
def models_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alphanet-models",
                                     description="List the AlphaNet models: resolution, MFLOPs, parameters, "
                                                 "published ImageNet top-1.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = model_table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<9}{'official name':<19}{'res':>5}{'MFLOPs':>9}{'(paper)':>9}{'params':>12}{'top-1 %':>9}")
    for r in rows:
        print(f"{r['name']:<9}{r['official_name']:<19}{r['resolution']:>5}{r['mflops']:>9.2f}"
              f"{r['mflops_published']:>9}{r['params']:>12,}{r['top1_published']:>9.2f}")
    print("\nMFLOPs: multiply-adds of conv and linear layers (the paper's convention). "
          "Weights: CC-BY-NC 4.0 (the authors').")
    return 0


@cli_main("alphanet-extract")
def extract_main(argv: Sequence[str] | None = None) -> int:
    from .supernet import Supernet

    parser = argparse.ArgumentParser(
        prog="alphanet-extract",
        description="Extract standalone subnets from a supernet checkpoint, re-calibrate their BatchNorm "
                    "statistics the official way, and write one Hub-ready folder per model "
                    "(config.json, model.safetensors, README.md).")
    parser.add_argument("--supernet", required=True, help="supernet checkpoint (official alphanet_pretrained.pth.tar, "
                                                          "or this package's)")
    parser.add_argument("--arch", required=True, help="model name (a0..a6, a5_base), 'all', or an architecture .json")
    parser.add_argument("--out", required=True, help="output folder; each model goes to OUT/<name>/")
    parser.add_argument("--calib-data", help="ImageNet training folder (synset sub-folders) for BN re-calibration")
    parser.add_argument("--calib-batches", type=int, default=64)
    parser.add_argument("--calib-batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration image sampling")
    parser.add_argument("--workers", type=int, default=4, help="data loading processes for calibration")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--push", metavar="ORG", help="upload each folder to the Hub as ORG/alphanet-<name> "
                                                      "(a5_base: alphanet-a5-base)")
    args = parser.parse_args(argv)

    archs = parse_archs(args.arch)
    if not Path(args.supernet).is_file():
        raise CLIError(f"supernet checkpoint not found: {args.supernet}")
    if args.calib_data and not Path(args.calib_data).is_dir():
        raise CLIError(f"calibration data folder not found: {args.calib_data}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"loading supernet {args.supernet}", file=sys.stderr)
    supernet = Supernet.from_checkpoint(args.supernet)
    if not args.calib_data:
        print("note: no --calib-data: the subnets keep the supernet's BatchNorm statistics; the published "
              "numbers need re-calibration on ImageNet training images", file=sys.stderr)
    for name, arch in progress(archs, desc="models", unit="model", disable=len(archs) == 1 or None):
        model = supernet.extract(arch).to(args.device)
        calibration = None
        if args.calib_data:
            from .calibration import calibrate_bn
            from .eval.data import calibration_batches

            batches = calibration_batches(args.calib_data, arch.resolution, args.calib_batches,
                                          args.calib_batch_size, args.seed, args.workers)
            calibrate_bn(model, progress(batches, total=args.calib_batches, desc=f"calibrating {name}",
                                         unit="batch", leave=False))
            calibration = {"recipe": CALIBRATION_RECIPE, "data": Path(args.calib_data).name,
                           "num_batches": args.calib_batches, "batch_size": args.calib_batch_size,
                           "seed": args.seed}
        model.pretrained_cfg = {"name": name, "calibration": calibration,
                                "source": f"extracted from the supernet checkpoint {Path(args.supernet).name}"}
        folder = model.to("cpu").save_pretrained(out / name)
        print(f"{name}: wrote {folder}")
        if args.push:
            url = model.push_to_hub(f"{args.push}/{hub_repo_name(name)}")
            print(f"{name}: pushed {url}")
    return 0


@cli_main("alphanet-predict")
def predict_main(argv: Sequence[str] | None = None) -> int:
    from .hub import load
    from .predict import predict
    from .supernet import Supernet

    parser = argparse.ArgumentParser(prog="alphanet-predict",
                                     description="Classify images with an AlphaNet model: top-k ImageNet classes.")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--arch", default="a5", help="model name or architecture .json (default a5)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--weights", help="save_pretrained folder, .safetensors file or supernet checkpoint")
    source.add_argument("--supernet", help="supernet checkpoint to extract the model from")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    args = parser.parse_args(argv)

    name, arch = parse_arch(args.arch)
    missing = [image for image in args.images if not Path(image).is_file()]
    if missing:
        raise CLIError(f"image not found: {', '.join(missing)}")
    if args.supernet:
        model = Supernet.from_checkpoint(args.supernet).extract(arch)
    else:
        model = load(arch, pretrained=args.weights is None, weights=args.weights)
    results = predict(model, args.images, topk=args.topk)
    for image, top in zip(args.images, results):
        if args.json:
            print(json.dumps({"image": str(image), "top": top}))
            continue
        print(image)
        for rank, r in enumerate(top, 1):
            label = f"{r['name']} ({r['synset']})" if r["name"] else f"class {r['index']}"
            print(f"  {rank}. {r['probability'] * 100:6.2f}%  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(models_main())
