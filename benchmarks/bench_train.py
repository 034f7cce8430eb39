"""Seconds per sandwich-rule training step: 4 subnets (largest, 2 random, smallest), batch 8 at 224.

    python benchmarks/bench_train.py [--repeats 5] [--threads 1 2] [--device cpu] [--amp]
        [--variants fp32 fp32+channels_last] [--json]

Each step resizes the batch to every subnet's resolution (192..288), runs forward and backward
for all four, clips and applies SGD, as ``alphanet-train`` does. The same subnets and inputs are
used at every repeat; one warm-up step per variant is not counted. Variants (memory layout and
precision) each own a copy of the same supernet and optimizer and are timed interleaved: every
repeat runs one step of each variant in turn, so the machine's drift touches all alike. Reported:
median and min..max seconds per step, per thread count and variant, the speed-up over the first
variant, and the part spent in clipping and the optimizer step (a fixed cost over the supernet's
24 M parameters).
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time

import torch

from alphanet_zoo import Supernet, count_flops
from alphanet_zoo.train import build_optimizer, sample_sandwich, sandwich_step, use_training_layout

#: variant -> (autocast dtype or None, channels-last)
VARIANTS = {"fp32": (None, False), "fp32+channels_last": (None, True),
            "bf16": (torch.bfloat16, False), "bf16+channels_last": (torch.bfloat16, True)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One variant: its own supernet copy and optimizer, stepping on the shared batch."""

    def __init__(self, base: Supernet, name: str, device: torch.device) -> None:
        self.name = name
        self.amp_dtype, channels_last = VARIANTS[name]
        self.supernet = copy.deepcopy(base).to(device)
        if channels_last:
            use_training_layout(self.supernet, device)  # as the trainer: channels-last but the stem
        self.optimizer = build_optimizer(self.supernet, lr=0.1)
        self.steps: list[float] = []
        self.updates: list[float] = []

    def step(self, images, targets, archs, device: torch.device, record: bool) -> None:
        _sync(device)
        start = time.perf_counter()
        sandwich_step(self.supernet, images, targets, archs, self.optimizer, amp_dtype=self.amp_dtype)
        _sync(device)
        elapsed = time.perf_counter() - start
        # the fixed cost: clip + SGD step over all parameters (gradients are still in place)
        start = time.perf_counter()
        torch.nn.utils.clip_grad_value_(self.supernet.parameters(), 1.0)
        self.optimizer.step()
        _sync(device)
        if record:
            self.steps.append(elapsed)
            self.updates.append(time.perf_counter() - start)


def bench(threads: int, repeats: int, device: torch.device, batch: int, variants: list[str]) -> list[dict]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base = Supernet()
    images = torch.randn(batch, 3, 224, 224, device=device)
    targets = torch.randint(0, 1000, (batch,), device=device)
    archs = sample_sandwich(random.Random(0), 4)
    runners = [Runner(base, name, device) for name in variants]
    for i in range(repeats + 1):
        for runner in runners:
            runner.step(images, targets, archs, device, record=i > 0)
    first = statistics.median(runners[0].steps)
    return [{"variant": r.name, "threads": threads, "device": str(device), "batch": batch, "repeats": repeats,
             "step_s_median": statistics.median(r.steps), "step_s_min": min(r.steps), "step_s_max": max(r.steps),
             "speedup": first / statistics.median(r.steps),
             "clip_and_sgd_s_median": statistics.median(r.updates),
             "images_per_s": batch / statistics.median(r.steps)} for r in runners]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["fp32", "fp32+channels_last"])
    parser.add_argument("--amp", action="store_true", help="add the bfloat16 variants")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    variants = list(dict.fromkeys(args.variants + (["bf16", "bf16+channels_last"] if args.amp else [])))
    archs = sample_sandwich(random.Random(0), 4)
    rows = [row for t in dict.fromkeys(args.threads) for row in bench(t, args.repeats, device, args.batch, variants)]
    if args.json:
        print(json.dumps({"subnets": [{"resolution": a.resolution, "mflops": round(count_flops(a), 2)}
                                      for a in archs], "results": rows}, indent=2))
        return
    print("subnets: " + ", ".join(f"{a.resolution}px {count_flops(a):.0f} MFLOPs" for a in archs))
    print(f"{'variant':<20}{'device':<8}{'threads':>8}{'batch':>7}{'median s/step':>15}{'min..max':>16}"
          f"{'speed-up':>10}{'clip+SGD s':>12}{'img/s':>8}")
    for r in rows:
        span = f"{r['step_s_min']:.2f}..{r['step_s_max']:.2f}"
        print(f"{r['variant']:<20}{r['device']:<8}{r['threads']:>8}{r['batch']:>7}{r['step_s_median']:>15.3f}"
              f"{span:>16}{r['speedup']:>10.2f}{r['clip_and_sgd_s_median']:>12.3f}{r['images_per_s']:>8.2f}")


if __name__ == "__main__":
    main()
