"""Deployment benchmark: AlphaNet a0 and a6 on eager PyTorch, TorchScript and ONNX Runtime, against
the machine's matrix-product ceiling and a straightforward eager implementation of the same network.

    python benchmarks/bench_export.py [--threads 2] [--batch 16] [--repeats 10] [--json out.json] [--ort-levels]

The issue's targets, checked in the summary (reported, not asserted):
- ONNX Runtime at batch 16 gives at least 2x the images/s of eager PyTorch (a0 and a6);
- our eager model is no slower than ``plain``: the same network written as a plain sequence of
  ``torch.nn.functional`` calls over the same weights (BatchNorm unfused, as eager code has it);
- how close each backend gets to the fp32 matrix-product ceiling (2 FLOPs per multiply-add).
``--ort-levels`` adds ONNX Runtime at each graph-optimization level, to show what its fusions buy.
Weights are random (timings do not depend on them). Everything runs in one process, side by side.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from alphanet_zoo.export import bench, onnxruntime_session, to_onnx

from alphanet_zoo import AlphaNet
from alphanet_zoo._io import write_json
from alphanet_zoo.layout import subnet_layout

BRIEF_CEILING = 68.0  # GFLOP/s, the figure for this machine (2 threads, fp32 GEMM)


def plain_forward(w: dict[str, torch.Tensor], layout, x: torch.Tensor) -> torch.Tensor:
    """AlphaNet's eval forward as plain functional calls: the 'straightforward eager implementation'."""

    def conv_bn(x, prefix, stride=1, groups=1, act=True):
        weight = w[f"{prefix}.conv.weight"]
        x = F.conv2d(x, weight, None, stride, weight.shape[-1] // 2, 1, groups)
        x = F.batch_norm(x, w[f"{prefix}.bn.running_mean"], w[f"{prefix}.bn.running_var"],
                         w[f"{prefix}.bn.weight"], w[f"{prefix}.bn.bias"], False, 0.0, 1e-5)
        return F.silu(x) if act else x

    x = conv_bn(x, "stem", stride=2)
    for s, stage in enumerate(layout.stages):
        for j, block in enumerate(stage):
            p = f"stages.{s}.{j}"
            y = conv_bn(x, f"{p}.expand") if block.has_expand else x
            y = conv_bn(y, f"{p}.dw", block.stride, groups=block.mid_channels)
            if block.se_channels:
                squeezed = F.relu(F.conv2d(y.mean((2, 3), keepdim=True), w[f"{p}.se.reduce.weight"],
                                           w[f"{p}.se.reduce.bias"]))
                y = y * F.hardsigmoid(F.conv2d(squeezed, w[f"{p}.se.expand.weight"], w[f"{p}.se.expand.bias"]))
            y = conv_bn(y, f"{p}.project", act=False)
            shortcut = x
            if block.stride > 1:
                shortcut = F.avg_pool2d(shortcut, block.stride, padding=shortcut.shape[-1] % 2)
            if block.shortcut_conv:
                shortcut = F.conv2d(shortcut, w[f"{p}.shortcut.conv.weight"])
            x = y + shortcut
    x = conv_bn(x, "final_expand")
    x = F.silu(F.conv2d(F.adaptive_avg_pool2d(x, 1), w["feature_mix.weight"])).flatten(1)
    return F.linear(x, w["classifier.weight"], w["classifier.bias"])


def plain_runner(model: AlphaNet) -> bench.Runner:
    weights = {k: v.detach() for k, v in model.state_dict().items()}
    layout = subnet_layout(model.arch, num_classes=model.num_classes)
    return bench.Runner("plain", lambda x: plain_forward(weights, layout, x))


def ort_level_runner(level: str, threads: int, folder: Path):
    def make(model: AlphaNet) -> bench.Runner:
        path = folder / f"{level}.onnx"
        to_onnx(model, path, verify=False)
        session = onnxruntime_session(path, threads, optimization=level)
        return bench.Runner(f"ort-{level}", lambda x: session.run(None, {"input": x})[0], lambda x: x.numpy())

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="a0,a6")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--ort-levels", action="store_true", help="also time ONNX Runtime per optimization level")
    parser.add_argument("--json", help="write the rows and the summary here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    ceiling = bench.gemm_gflops(args.threads, repeats=7)
    backends = ["eager", "plain", "eager-cl", "torchscript", "onnxruntime"]
    rows: list[bench.Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        extra = {"plain": plain_runner}
        if args.ort_levels:
            for level in ("disable", "basic", "extended"):
                extra[f"ort-{level}"] = ort_level_runner(level, args.threads, Path(tmp))
                backends.append(f"ort-{level}")
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = AlphaNet(name).eval()
            print(f"... {name}", file=sys.stderr)
            rows += bench.benchmark_model(name, model, backends, batch=args.batch, threads=args.threads,
                                          warmup=args.warmup, repeats=args.repeats, ceiling=ceiling,
                                          extra_runners=extra)

    ceiling_after = bench.gemm_gflops(args.threads, repeats=7)
    print(f"{bench.environment(args.threads)['cpu']}, {args.threads} threads, torch {torch.__version__}; "
          f"backends in turns: median (best) of {args.repeats} calls after {args.warmup} warm-up calls; "
          f"random weights")
    print(f"fp32 matrix product {bench.GEMM_SIZE}^2: {ceiling:.1f} GFLOP/s measured (the issue's figure: "
          f"{BRIEF_CEILING:.0f}); 'ceiling' = row GFLOP/s / measured ceiling")
    if abs(ceiling_after - ceiling) > 0.1 * ceiling:
        print(f"WARNING: the matrix product ran at {ceiling_after:.1f} GFLOP/s after the run, {ceiling:.1f} before: "
              f"other load on the machine changed during the run; these figures are noisy")
    print()
    print(bench.format_table(rows))

    summary = {}
    print("\nsummary (median; best call in brackets)")
    for name in args.models.split(","):
        by = {(r.backend, r.batch): r for r in rows if r.model == name}
        eager, ort, plain = by["eager", args.batch], by["onnxruntime", args.batch], by["plain", args.batch]
        gflop_per_image = 2 * eager.mflops / 1e3
        s = summary[name] = {
            "ort_vs_eager": ort.images_per_s / eager.images_per_s,
            "ort_vs_eager_best": eager.best_ms_per_image / ort.best_ms_per_image,
            "eager_vs_plain": eager.images_per_s / plain.images_per_s,
            "eager_vs_plain_best": plain.best_ms_per_image / eager.best_ms_per_image,
            "limit_ms_per_image_measured_ceiling": gflop_per_image / ceiling * 1e3,
            "limit_ms_per_image_brief_ceiling": gflop_per_image / BRIEF_CEILING * 1e3,
        }
        print(f"{name}: {gflop_per_image:.3f} GFLOP/image -> limit {s['limit_ms_per_image_measured_ceiling']:.2f} "
              f"ms/image at the measured ceiling, {s['limit_ms_per_image_brief_ceiling']:.2f} at 68 GFLOP/s")
        met = "met" if min(s["ort_vs_eager"], s["ort_vs_eager_best"]) >= 2 else "NOT met"
        print(f"    batch {args.batch}: ONNX Runtime {s['ort_vs_eager']:.2f}x ({s['ort_vs_eager_best']:.2f}x) the "
              f"images/s of eager (target >= 2x: {met}); "
              f"eager {s['eager_vs_plain']:.2f}x ({s['eager_vs_plain_best']:.2f}x) plain (target >= 1)")
        for n in sorted({1, args.batch}):
            for backend in backends:
                r = by[backend, n]
                best_gflops = gflop_per_image / r.best_ms_per_image * 1e3
                print(f"    batch {n:<3} {backend:<13} {r.ms_per_image:7.2f} ({r.best_ms_per_image:6.2f}) ms/image "
                      f"= {r.gflops_per_s:6.1f} ({best_gflops:6.1f}) GFLOP/s = {100 * r.gflops_per_s / ceiling:3.0f}% "
                      f"({100 * best_gflops / ceiling:3.0f}%) of measured, "
                      f"{100 * r.gflops_per_s / BRIEF_CEILING:3.0f}% ({100 * best_gflops / BRIEF_CEILING:3.0f}%) of 68")
    if args.json:
        write_json(args.json, {
            "environment": bench.environment(args.threads), "gemm_gflops_per_s": ceiling,
            "gemm_gflops_per_s_after": ceiling_after,
            "rows": [asdict(r) for r in rows], "summary": summary})


if __name__ == "__main__":
    main()
