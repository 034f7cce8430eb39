"""The zoo's own commands: ``alphanet-models``, ``alphanet-extract``, ``alphanet-predict``."""
from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Sequence

from . import cli
from .cli import Console, cli_main, progress

log = logging.getLogger("alphanet_zoo")


# ---- alphanet-models -----------------------------------------------------------------------------

def weights_status(name: str) -> str:
    """Whether a published model's weights can be had here: ``cached``, ``pinned`` (published, not
    cached) or ``not published`` (no pinned revision in the registry). Looks at the cache only."""
    from .hub import cached_path
    from .pretrained import WEIGHTS_NAME
    from .registry import MODELS

    pin = MODELS[name].weights
    revision = pin.revision or "main"
    if cached_path(pin.hub_repo, revision, WEIGHTS_NAME) is not None:
        return "cached"
    return "pinned" if pin.revision else "not published"


def model_table(names: Sequence[str] | None = None) -> list[dict]:
    """One row per published model: resolution, MFLOPs (published and counted), params, top-1, weights."""
    from .registry import MODELS

    return [{"name": name, "official_name": info.official_name, "resolution": info.arch.resolution,
             "mflops_published": info.published_mflops, "mflops": round(info.mflops, 2), "params": info.params,
             "top1_published": info.published_top1, "top5_published": info.published_top5,
             "hub_repo": info.weights.hub_repo, "weights": weights_status(name)}
            for name, info in MODELS.items() if names is None or name in names]


@cli_main("alphanet-models")
def models_main(argv: Sequence[str] | None = None) -> int:
    parser = cli.command_parser(
        "alphanet-models", "List the AlphaNet models: resolution, MFLOPs, parameters, the paper's ImageNet top-1, "
                           "and whether weights are available here (cached, pinned on the Hub, or not published).",
        [cli.arch_flags(default="all"), cli.output_flags("also write the table as JSON to this file"),
         cli.json_flags()])
    args = parser.parse_args(argv)
    from ._io import check_writable_file, write_json

    names = [name for name, _ in cli.parse_archs(args.arch)]
    if args.out:
        check_writable_file(args.out)
    rows = model_table(names)
    console = Console(args.json)
    console.json(rows)
    if args.out:
        write_json(args.out, rows)
    console.result(f"{'model':<9}{'official name':<19}{'res':>5}{'MFLOPs':>9}{'(paper)':>9}{'params':>12}"
                   f"{'top-1 %':>9}  weights")
    for r in rows:
        console.result(f"{r['name']:<9}{r['official_name']:<19}{r['resolution']:>5}{r['mflops']:>9.2f}"
                       f"{r['mflops_published']:>9}{r['params']:>12,}{r['top1_published']:>9.2f}  {r['weights']}")
    console.result("\nMFLOPs: multiply-adds of conv and linear layers (the paper's convention); top-1: the paper's. "
                   "No per-model weights are published yet: build them from the authors' supernet with "
                   "alphanet-extract. Weights: CC-BY-NC 4.0 (the authors').")
    return 0


# ---- alphanet-extract ----------------------------------------------------------------------------

@cli_main("alphanet-extract")
def extract_main(argv: Sequence[str] | None = None) -> int:
    parser = cli.command_parser(
        "alphanet-extract",
        "Extract standalone subnets from a supernet checkpoint, re-calibrate their BatchNorm statistics the "
        "official way, and write one Hub-ready folder per model (config.json, model.safetensors, README.md).",
        [cli.arch_flags(required=True),
         cli.output_flags("output folder: each model goes to OUT/<name>/", required=True),
         cli.calibration_flags(), cli.seed_flags("seed of the calibration images' draws, crops and flips"),
         cli.workers_flags(4), cli.device_flags(), cli.threads_flags(), cli.json_flags()])
    parser.add_argument("--supernet", metavar="PATH", required=True,
                       help="supernet checkpoint: the authors' alphanet_pretrained.pth.tar, an alphanet-train "
                            "checkpoint, or a .safetensors supernet")
    parser.add_argument("--push", metavar="ORG", help="upload each folder to the Hub as ORG/alphanet-<name> "
                                                      "(default: no upload)")
    args = parser.parse_args(argv)

    from ._io import make_folder
    from .calibration import calibrate
    from .errors import InputError
    from .registry import hub_repo_name
    from .supernet import Supernet

    console = Console(args.json)
    archs = cli.parse_archs(args.arch)
    cli.set_threads(args.threads)
    device = cli.parse_device(args.device)
    if not Path(args.supernet).is_file():
        raise InputError(f"supernet checkpoint not found: {args.supernet}")
    calibration_source = cli.calibration_from_args(args)
    out = make_folder(args.out)
    for name, _ in archs:
        if (out / name).exists() and not (out / name).is_dir():
            raise InputError(f"cannot write {out / name}/: a file of that name is in the way")
    console.status(f"loading supernet {args.supernet}")
    supernet = Supernet.from_checkpoint(args.supernet)
    if calibration_source is None:
        log.warning("no --calib-data: the subnets keep the supernet's BatchNorm statistics, which do not fit "
                    "them; their folders are marked uncalibrated (the published numbers need calibration on "
                    "ImageNet training images)")
    written = []
    for name, arch in progress(archs, desc="models", unit="model", disable=len(archs) == 1 or None):
        model = supernet.extract(arch).to(device)
        if calibration_source is not None:
            calibrate(model, progress(calibration_source, total=len(calibration_source), desc=f"calibrating {name}",
                                      unit="batch", leave=False), arch.resolution)
            model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg,
                                                       calibration=calibration_source.describe())
        model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg, name=name)
        folder = model.to("cpu").save_pretrained(out / name)
        entry = {"name": name, "folder": str(folder), "calibrated": model.pretrained_cfg.calibrated}
        console.status(f"{name}: wrote {folder}" + ("" if entry["calibrated"] else " (BatchNorm not calibrated)"))
        if args.push:
            entry["pushed"] = model.push_to_hub(f"{args.push}/{hub_repo_name(name)}")
            console.status(f"{name}: pushed {entry['pushed']}")
        written.append(entry)
    console.json(written)
    return 0


# ---- alphanet-predict ----------------------------------------------------------------------------

@cli_main("alphanet-predict")
def predict_main(argv: Sequence[str] | None = None) -> int:
    parser = cli.command_parser(
        "alphanet-predict", "Classify images with an AlphaNet model, or with a file alphanet-export wrote (--model): "
                            "the top-k classes with probabilities.",
        [cli.arch_flags(many=False), cli.weights_flags(default=None), cli.batch_flags(16), cli.device_flags(),
         cli.threads_flags(), cli.output_flags("also write the predictions as JSON lines to this file"),
         cli.json_flags()])
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--model", metavar="FILE",
                        help="an exported file (.onnx, OpenVINO .xml, TorchScript .pt, torch.export .pt2) to run "
                             "instead of PyTorch weights; its metadata gives the preprocessing and labels (--arch "
                             "and --weights do not apply; --device auto means cpu)")
    parser.add_argument("--topk", type=cli.integer(1, 1000), default=5, metavar="K", help="classes per image")
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="report unreadable images and go on (default: stop at the first)")
    args = parser.parse_args(argv)

    from ._io import check_writable_file, write_text
    from .data import BadImageError, load_image
    from .errors import InputError
    from .prediction import predict
    from .weights import WeightsLoader

    console = Console(args.json)
    name, arch = cli.single_arch(args.arch) if args.arch else (None, None)
    if args.out:
        check_writable_file(args.out)
    cli.set_threads(args.threads)
    device = cli.parse_device(args.device)
    if args.model:
        from .errors import UsageError
        from .export import open_model

        if args.arch or args.weights:
            raise UsageError("--model runs an exported file, whose metadata gives the architecture, preprocessing "
                             "and labels: --arch and --weights do not apply")
        exported = open_model(args.model, threads=args.threads, device="cpu" if args.device == "auto" else device.type)
        if exported.record() is None:
            raise InputError(f"{args.model} carries no metadata (labels, preprocessing): export it with "
                             "alphanet-export")
        num_classes = exported.record().num_classes

        def classify(images):
            return exported.predict(images, topk=args.topk, batch_size=args.batch_size)
    else:
        weights = args.weights or "pretrained"
        if arch is None and weights in ("pretrained", "random"):
            raise InputError(f"--arch is needed with --weights {weights}")
        model = WeightsLoader(weights, device).load(arch, name)
        cli.warn_if_uncalibrated(model)
        num_classes = model.num_classes

        def classify(images):
            return predict(model, images, topk=args.topk, batch_size=args.batch_size)
    if args.topk > num_classes:
        raise InputError(f"--topk {args.topk} is more than the model's {num_classes} classes")
    rows, bad = [], 0
    for start in range(0, len(args.images), args.batch_size):
        chunk, opened = args.images[start:start + args.batch_size], []
        for path in chunk:
            try:
                opened.append((path, load_image(path)))
            except BadImageError as e:
                if not args.skip_bad_images:
                    raise
                bad += 1
                log.warning("%s", e)
        if not opened:
            continue
        for (path, _), top in zip(opened, classify([image for _, image in opened])):
            row = {"path": str(path), "top": top}
            rows.append(row)
            console.json_line(row)
            console.result(str(path))
            for rank, r in enumerate(top, 1):
                label = r["name"] or f"class {r['index']}"
                label += f" ({r['synset']})" if r["synset"] else ""
                console.result(f"  {rank}. {r['probability'] * 100:6.2f}%  {label}")
    if args.out:
        import json

        write_text(args.out, "".join(json.dumps(row) + "\n" for row in rows))
        console.status(f"wrote {args.out}")
    if bad:
        console.status(f"skipped {bad} unreadable image(s)")
    return 0


if __name__ == "__main__":
    sys.exit(models_main())
