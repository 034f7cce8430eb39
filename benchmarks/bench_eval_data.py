"""Does the evaluation data pipeline keep the model busy? Data-only against model-only images/s.

    python benchmarks/bench_eval_data.py [--arch a0] [--images 256] [--batch-size 64] [--workers 0 2]
                                         [--repeats 3] [--device cpu] [--json out.json]

On generated ImageNet-like JPEGs (500x375 and similar, about 100 kB each) in the synset layout:

- data only: a full pass of `labelled_batches` (decode, resize 256, crop to uint8 in ``--workers``
  processes) plus `model_input` (normalise, resize to the model's resolution), no model; worker
  start-up included, as in a real run;
- model only: the model's forward on a ready batch (no data loading);
- end to end: `evaluate` over the loader (what ``alphanet-eval`` reports as images/s).

Medians of ``--repeats`` rounds, measured side by side in one process (each round times every
measurement once, so a change in machine load hits them alike). The data pipeline keeps the
model busy when data-only images/s is at least model-only images/s. Untrained weights: speed does
not depend on them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import alphanet_zoo
from alphanet_zoo.data import TorchClassifier, evaluate, labelled_batches, open_dataset
from alphanet_zoo.preprocessing import EvalCrop, model_input

SIZES = [(500, 375), (375, 500), (500, 333), (500, 400), (640, 480), (400, 300)]


def make_images(root: Path, n: int, seed: int = 0) -> None:
    """Photo-like JPEGs: smooth colour fields plus fine noise (ImageNet's JPEGs average ~110 kB)."""
    rng = np.random.RandomState(seed)
    synsets = alphanet_zoo.imagenet.synsets()
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        coarse = Image.fromarray((rng.rand(h // 16 + 1, w // 16 + 1, 3) * 255).astype(np.uint8))
        base = np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
        pixels = np.clip(base + rng.normal(0, 18, (h, w, 3)), 0, 255).astype(np.uint8)
        folder = root / synsets[i % 50]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"ILSVRC2012_val_{i:08d}.JPEG", quality=90)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="a0")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    model = alphanet_zoo.AlphaNet(args.arch).eval().to(device)
    resolution = model.arch.resolution
    pre = model.pretrained_cfg.preprocessing
    crop = EvalCrop(pre)
    classifier = TorchClassifier(model, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    results = {"arch": args.arch, "device": str(device), "torch_threads": torch.get_num_threads(),
               "cpus": os.cpu_count(), "images": args.images, "batch_size": args.batch_size, "runs": []}

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "val"
        make_images(root, args.images)
        samples, _ = open_dataset(root)
        size_kb = sum(os.path.getsize(s.path) for s in samples) / len(samples) / 1e3
        results["mean_jpeg_kB"] = round(size_kb, 1)

        batch = torch.randn(args.batch_size, 3, resolution, resolution)
        for _ in range(2):  # warm-up: allocator, kernels
            classifier(batch)
        sync()
        n_batches = max(1, args.images // args.batch_size)

        def model_only():
            for _ in range(n_batches):
                classifier(batch)
            sync()

        def batches(workers):
            return labelled_batches(samples, crop, pre.crop_size, batch_size=args.batch_size, workers=workers,
                                    pin_memory=device.type == "cuda")

        def data_only(workers):
            for images, *_ in batches(workers):
                model_input(images, resolution)

        def end_to_end(workers):
            evaluate(classifier, batches(workers), resolution=resolution, device=device)

        data_only(0)  # warm the page cache
        # side by side: every repeat times each measurement once, so load changes hit them alike
        times: dict[str, list[float]] = {}
        jobs = [("model", model_only, n_batches * args.batch_size)]
        for w in args.workers:
            jobs += [(f"data{w}", lambda w=w: data_only(w), len(samples)),
                     (f"e2e{w}", lambda w=w: end_to_end(w), len(samples))]
        for _ in range(args.repeats):
            for key, fn, n in jobs:
                start = time.perf_counter()
                fn()
                times.setdefault(key, []).append(n / (time.perf_counter() - start))
        rate = {key: statistics.median(v) for key, v in times.items()}
        results["model_only_img_s"] = round(rate["model"], 1)
        for w in args.workers:
            results["runs"].append({"workers": w, "data_only_img_s": round(rate[f"data{w}"], 1),
                                    "end_to_end_img_s": round(rate[f"e2e{w}"], 1),
                                    "data_over_model": round(rate[f"data{w}"] / rate["model"], 2)})

    print(f"{args.arch} at {resolution}px on {device} ({results['torch_threads']} torch threads, "
          f"{results['cpus']} CPUs); {args.images} JPEGs of {results['mean_jpeg_kB']} kB, batch {args.batch_size}; "
          f"medians of {args.repeats}")
    print(f"model only: {results['model_only_img_s']:.1f} img/s")
    print(f"{'workers':>8}{'data only img/s':>18}{'end to end img/s':>19}{'data / model':>14}")
    for r in results["runs"]:
        print(f"{r['workers']:>8}{r['data_only_img_s']:>18.1f}{r['end_to_end_img_s']:>19.1f}{r['data_over_model']:>14.2f}")
    print(json.dumps(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
