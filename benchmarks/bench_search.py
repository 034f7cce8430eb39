"""Search speed and latency tables: candidates per minute, time to build a table, the predictor's error.

    python benchmarks/bench_search.py [--candidates 6] [--calib 8x32] [--heldout 256] [--crop-size 224]
                                      [--backend onnxruntime --threads 2 --batch-size 1] [--skip-table]
                                      [--device cpu] [--json out.json]

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
    args = parser.parse_args(argv)
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
