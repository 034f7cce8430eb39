"""``alphanet-extract``: standalone subnets from a supernet, calibrated, one Hub-ready folder each."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

from .._io import make_folder
from ..allocator import keep_freed_memory
from ..calibration import calibrate
from ..device import parse_device
from ..errors import InputError
from ..registry import hub_repo_name
from ..supernet import Supernet
from . import flags, running

log = logging.getLogger("alphanet_zoo")


@running.cli_main("alphanet-extract")
def main(argv: Sequence[str] | None = None) -> int:
    parser = flags.command_parser(
        "alphanet-extract",
        "Extract standalone subnets from a supernet checkpoint, re-calibrate their BatchNorm statistics the "
        "official way, and write one Hub-ready folder per model (config.json, model.safetensors, README.md).",
        [flags.arch_flags(required=True),
         flags.output_flags("output folder: each model goes to OUT/<name>/", required=True),
         flags.calibration_flags(), flags.seed_flags("seed of the calibration images' draws, crops and flips"),
         flags.workers_flags(4), flags.device_flags(), flags.threads_flags(), flags.json_flags()])
    parser.add_argument("--supernet", metavar="PATH", required=True,
                       help="supernet checkpoint: the authors' alphanet_pretrained.pth.tar, an alphanet-train "
                            "checkpoint, or a .safetensors supernet")
    parser.add_argument("--push", metavar="ORG", help="upload each folder to the Hub as ORG/alphanet-<name> "
                                                      "(default: no upload)")
    args = parser.parse_args(argv)

    console = running.Console(args.json)
    archs = flags.parse_archs(args.arch)
    running.set_threads(args.threads)
    device = parse_device(args.device)
    if device.type == "cpu":
        keep_freed_memory()  # calibration's activations reused, not mapped afresh (1.3x faster for A0)
    if not Path(args.supernet).is_file():
        raise InputError(f"supernet checkpoint not found: {args.supernet}")
    calibration_source = running.calibration_from_args(args)
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
    for name, arch in running.progress(archs, desc="models", unit="model", disable=len(archs) == 1 or None):
        model = supernet.extract(arch).to(device)
        if calibration_source is not None:
            batches = running.progress(calibration_source, total=len(calibration_source), desc=f"calibrating {name}",
                                       unit="batch", leave=False)
            calibrate(model, batches, arch.resolution)
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
