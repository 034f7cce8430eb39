"""Fine-tuning step time in float32 and in bfloat16 autocast (and channels-last), side by side, and how
closely the bfloat16 loss curve follows the float32 one.

    python benchmarks/bench_train_precision.py [--arch a0] [--resolution 128] [--batch 32] [--rounds 7]
        [--steps 3] [--curve-steps 20] [--threads N] [--json]

Every variant runs `finetune_step` on the same model weights and the same batches. Timing is
interleaved: each round runs ``--steps`` timed steps of every variant in turn (after one warm-up
step per variant), so a machine's drift (other load, clocks) touches all variants alike. Reported
per variant: median seconds per step, min..max, images/s, and the speed-up over float32. The loss
curve: ``--curve-steps`` steps from the same initial weights on the same batches, float32 and
bfloat16; reported are the largest absolute and relative differences of the loss and the final
one. The report says whether this CPU has native bfloat16 and AMX: ``--precision auto`` picks bfloat16
with AMX, times the run's own step where bfloat16 is native without AMX, and keeps float32 elsewhere
(`alphanet_zoo.train.precision`).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from alphanet_zoo import AlphaNet
from alphanet_zoo.train.precision import cpu_has_amx, cpu_has_native_bf16
from alphanet_zoo.train.step import build_optimizer, finetune_step

VARIANTS = {"fp32": (None, False), "bf16": (torch.bfloat16, False),
            "fp32+channels_last": (None, True), "bf16+channels_last": (torch.bfloat16, True)}


def _batches(count: int, batch: int, resolution: int, classes: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        targets = torch.randint(0, classes, (batch,), generator=g)
        colours = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]])[targets % 2].view(batch, 3, 1, 1)
        images = colours + 0.5 * torch.randn(batch, 3, resolution, resolution, generator=g)
        out.append((images, targets))
    return out


class Runner:
    """One variant: its own copy of the model and optimizer, stepping through the shared batches."""

    def __init__(self, base: AlphaNet, amp_dtype: torch.dtype | None, channels_last: bool, lr: float) -> None:
        self.model = copy.deepcopy(base).train()
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, lr)
        self.amp_dtype = amp_dtype

    def step(self, images: torch.Tensor, targets: torch.Tensor) -> float:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return finetune_step(self.model, images, targets, self.optimizer, amp_dtype=self.amp_dtype)["losses"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="a0")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    parser.add_argument("--curve-steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = AlphaNet(args.arch, num_classes=args.classes)
    batches = _batches(max(args.steps, args.curve_steps), args.batch, args.resolution, args.classes)

    runners = {name: Runner(base, *VARIANTS[name], args.lr) for name in args.variants}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for runner in runners.values():
        runner.step(*batches[0])  # warm-up: kernel selection, allocations
    for _ in range(args.rounds):
        for name, runner in runners.items():
            for k in range(args.steps):
                start = time.perf_counter()
                runner.step(*batches[k % len(batches)])
                times[name].append(time.perf_counter() - start)

    curves = {}
    for name in ("fp32", "bf16"):
        runner = Runner(base, *VARIANTS[name], args.lr)
        curves[name] = [runner.step(*batches[k]) for k in range(args.curve_steps)]
    diffs = [abs(a - b) for a, b in zip(curves["fp32"], curves["bf16"])]
    rel = [d / max(abs(a), 1e-12) for d, a in zip(diffs, curves["fp32"])]

    fp32 = statistics.median(times["fp32"]) if "fp32" in times else None
    rows = [{"variant": name, "step_s_median": statistics.median(t), "step_s_min": min(t), "step_s_max": max(t),
             "images_per_s": args.batch / statistics.median(t),
             "speedup_vs_fp32": fp32 / statistics.median(t) if fp32 else None, "steps": len(t)}
            for name, t in times.items()]
    report = {"arch": args.arch, "resolution": args.resolution, "batch": args.batch, "threads": torch.get_num_threads(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_has_native_bf16(),
              "amx": cpu_has_amx(),
              "results": rows, "loss_curve": {"steps": args.curve_steps, "fp32": curves["fp32"], "bf16": curves["bf16"],
                                              "max_abs_diff": max(diffs), "max_rel_diff": max(rel),
                                              "final_abs_diff": diffs[-1]}}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.arch} at {args.resolution}px, batch {args.batch}, {report['threads']} threads, CPU "
          f"{report['cpu_capability']} (native bf16: {report['native_bf16']}, AMX: {report['amx']}); "
          f"{args.rounds} interleaved rounds of {args.steps} steps")
    print(f"{'variant':<20}{'median s/step':>15}{'min..max s':>18}{'img/s':>9}{'vs fp32':>9}")
    for r in rows:
        print(f"{r['variant']:<20}{r['step_s_median']:>15.3f}{r['step_s_min']:>9.3f}..{r['step_s_max']:<7.3f}"
              f"{r['images_per_s']:>9.1f}{r['speedup_vs_fp32'] or 0:>8.2f}x")
    c = report["loss_curve"]
    print(f"loss curve over {c['steps']} steps: max |fp32 - bf16| {c['max_abs_diff']:.4f} (relative "
          f"{c['max_rel_diff']:.2%}), final {c['final_abs_diff']:.4f}; fp32 {c['fp32'][0]:.4f} -> {c['fp32'][-1]:.4f}, "
          f"bf16 {c['bf16'][0]:.4f} -> {c['bf16'][-1]:.4f}")


if __name__ == "__main__":
    main()
