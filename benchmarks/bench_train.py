"""Seconds per sandwich-rule training step: 4 subnets (largest, 2 random, smallest), batch 8 at 224.

    python benchmarks/bench_train.py [--repeats 5] [--threads 1 2] [--device cpu] [--json]

Each step resizes the batch to every subnet's resolution (192..288), runs forward and backward
for all four, clips and applies SGD, as ``alphanet-train`` does. The same subnets and inputs are
used at every repeat; the first step (warm-up) is not counted. Reported: median and min over the
repeats, per thread count, side by side in one run, plus the part spent in clipping and the
optimizer step (a fixed cost over the supernet's 24 M parameters).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

from alphanet_zoo import Supernet, count_flops
from alphanet_zoo.train import build_optimizer, sample_sandwich, sandwich_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(threads: int, repeats: int, device: torch.device, batch: int, amp: bool) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    supernet = Supernet().to(device)
    optimizer = build_optimizer(supernet, lr=0.1)
    images = torch.randn(batch, 3, 224, 224, device=device)
    targets = torch.randint(0, 1000, (batch,), device=device)
    archs = sample_sandwich(random.Random(0), 4)
    amp_dtype = torch.bfloat16 if amp and device.type == "cuda" else None
    steps, updates = [], []
    for i in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        sandwich_step(supernet, images, targets, archs, optimizer, amp_dtype=amp_dtype)
        _sync(device)
        elapsed = time.perf_counter() - start
        # the fixed cost: clip + SGD step over all parameters (gradients are still in place)
        start = time.perf_counter()
        torch.nn.utils.clip_grad_value_(supernet.parameters(), 1.0)
        optimizer.step()
        _sync(device)
        if i > 0:
            steps.append(elapsed)
            updates.append(time.perf_counter() - start)
    return {"threads": threads, "device": str(device), "batch": batch, "amp": amp_dtype is not None,
            "repeats": repeats, "step_s_median": statistics.median(steps), "step_s_min": min(steps),
            "clip_and_sgd_s_median": statistics.median(updates),
            "images_per_s": batch / statistics.median(steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (GPU only)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    archs = sample_sandwich(random.Random(0), 4)
    rows = [bench(t, args.repeats, device, args.batch, args.amp) for t in dict.fromkeys(args.threads)]
    if args.json:
        print(json.dumps({"subnets": [{"resolution": a.resolution, "mflops": round(count_flops(a), 2)}
                                      for a in archs], "results": rows}, indent=2))
        return
    print("subnets: " + ", ".join(f"{a.resolution}px {count_flops(a):.0f} MFLOPs" for a in archs))
    print(f"{'device':<8}{'threads':>8}{'batch':>7}{'median s/step':>15}{'min s/step':>12}"
          f"{'clip+SGD s':>12}{'img/s':>8}")
    for r in rows:
        print(f"{r['device']:<8}{r['threads']:>8}{r['batch']:>7}{r['step_s_median']:>15.3f}{r['step_s_min']:>12.3f}"
              f"{r['clip_and_sgd_s_median']:>12.3f}{r['images_per_s']:>8.2f}")


if __name__ == "__main__":
    main()
