"""``alphanet-bench``: every backend side by side (`alphanet_zoo.export.bench` does the measuring)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from .._io import check_writable_file, write_json
from ..errors import InputError, UsageError
from ..export import bench as measuring
from ..export import runtimes
from ..weights import WeightsLoader, WeightsSpec
from . import flags
from .running import Console, cli_main, progress

log = logging.getLogger("alphanet_zoo")
PROG = "alphanet-bench"


def _parse_backends(value: str) -> list[str]:
    """``--backend``: ``all``, or names of `runtimes.variants` (a runtime's other names too), as those names."""
    if value.strip().lower() == "all":
        backends = measuring.available_backends()
    else:
        backends = []
        for name in [v.strip() for v in value.split(",") if v.strip()] or [value]:
            try:
                runtime, precision = runtimes.variant(name)
            except InputError:
                raise UsageError(f"unknown backend {name!r}; valid backends: {', '.join(measuring.BACKENDS)} (or "
                                 f"all: every one available here but {', '.join(measuring.OPT_IN)})") from None
            why = runtime.unavailable()
            if why:
                raise UsageError(f"backend {name} is not available here ({why})")
            backends.append(runtime.variant(precision))
    if "eager" not in backends:
        backends.insert(0, "eager")  # the reference every other backend is compared with
    return list(dict.fromkeys(backends))


def _thread_counts(text: str) -> list[int]:
    """``--thread-counts``: thread counts separated by commas."""
    parse = flags.integer(1, 1024)
    counts = [parse(t.strip()) for t in text.split(",") if t.strip()]
    if not counts:
        raise argparse.ArgumentTypeError(f"expected a thread count or several (1,2), got {text!r}")
    return list(dict.fromkeys(counts))


def build_parser() -> flags.ArgumentParser:
    parser = flags.command_parser(
        PROG, "Latency (batch 1) and throughput (batch N) of AlphaNet models on every backend side by side: eager "
              "PyTorch, TorchScript, torch.export, torch.compile, ONNX Runtime and OpenVINO at fp32, bf16 and int8, "
              "ExecuTorch and LiteRT (phone runtimes, on this CPU), CUDA; with the fp32/bf16/int8 GEMM ceilings, cold "
              "start and agreement with fp32.",
        [flags.arch_flags(default="a0,a6"), flags.weights_flags(default="random"),
         flags.batch_flags(16), flags.output_flags("also write the results as JSON to this file"), flags.json_flags()])
    parser.add_argument("--batch", dest="batch_size", type=flags.integer(1, 65536), help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="all",
                        help=f"comma-separated backends from {', '.join(measuring.BACKENDS)} (a runtime's other "
                             "names too: tflite-int8 is litert-int8), or 'all' (every one available here except "
                             f"{', '.join(measuring.OPT_IN)})")
    parser.add_argument("--threads", type=flags.integer(1, 1024), default=os.cpu_count() or 1, metavar="N",
                        help="torch and runtime intra-op threads (default: all cores)")
    parser.add_argument("--thread-counts", type=_thread_counts, metavar="N,N...",
                        help="rows at each of these thread counts (1,2), on the same files, instead of --threads")
    parser.add_argument("--warmup", type=flags.integer(0, 10_000), default=3, metavar="N",
                        help="untimed calls first, per backend")
    parser.add_argument("--repeats", type=flags.integer(1, 100_000), default=10, metavar="N",
                        help="timed calls per backend and batch size; the median is reported")
    parser.add_argument("--no-gemm", action="store_true", help="skip measuring the matrix-product ceilings")
    parser.add_argument("--no-agreement", action="store_true",
                        help="skip comparing each backend's logits with fp32 on the built-in test images")
    return parser


@cli_main(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(args.json)
    models = flags.parse_archs(args.arch)
    backends = _parse_backends(args.backend)
    batch, warmup, repeats = args.batch_size, args.warmup, args.repeats
    counts = args.thread_counts or [args.threads]
    if args.out:
        check_writable_file(args.out)
    spec = WeightsSpec.parse(args.weights)
    loader = WeightsLoader(spec)

    by_threads = {t: None if args.no_gemm else measuring.gemm_ceilings(t) for t in counts}
    rows: list[measuring.Row] = []
    with tempfile.TemporaryDirectory(prefix="alphanet_bench_") as tmp:
        for name, arch in progress(models, desc="benchmark", unit="model"):
            torch.manual_seed(0)
            model = loader.load(arch, name)
            # several thread counts: the files are built once and timed at each
            artifacts = measuring.Artifacts(model, Path(tmp)) if len(counts) > 1 else None
            for threads in counts:
                rows += measuring.benchmark_model(name, model, backends, batch=batch, threads=threads, warmup=warmup,
                                                  repeats=repeats, ceiling=by_threads[threads],
                                                  agreement=not args.no_agreement, artifacts=artifacts)

    threads = counts[-1]
    ceilings = by_threads[threads]
    after = None if args.no_gemm else measuring.gemm_gflops(threads)
    console.status(f"{PROG}: {', '.join(map(str, counts))} thread(s), {warmup} warm-up calls, median (min..max) of "
                   f"{repeats} calls in interleaved rounds; weights {spec}"
                   + (" (timings do not depend on them)" if spec.kind == "random" else ""))
    if ceilings:
        for t in counts:
            console.status("matrix product {0}x{0} at {1} thread(s): fp32 {2:.1f}, bf16 {3:.1f} GFLOP/s, int8 {4:.1f} "
                           "GOP/s (the 'ceiling' column: each row's GFLOP/s, 2 x MFLOPs x images/s, against the "
                           "ceiling of its precision)".format(measuring.GEMM_SIZE, t, by_threads[t]["fp32"],
                                                              by_threads[t]["bf16"], by_threads[t]["int8"]))
        if abs(after - ceilings["fp32"]) > 0.1 * ceilings["fp32"]:
            log.warning("the fp32 matrix product ran at %.1f GFLOP/s after the benchmark, %.1f before: other load on "
                        "the machine changed meanwhile, so these timings are noisy", after, ceilings["fp32"])
    console.result(measuring.format_table(rows))
    gemm = {"size": measuring.GEMM_SIZE, "gflops_per_s": ceilings["fp32"] if ceilings else None,
            "gflops_per_s_after": after,
            "ceilings": ceilings}
    if len(counts) > 1:
        gemm["ceilings_by_threads"] = {str(t): c for t, c in by_threads.items()}
    report = {"environment": measuring.environment(threads if len(counts) == 1 else counts), "gemm": gemm,
              "settings": {"batch_size": batch, "warmup": warmup, "repeats": repeats, "backends": backends,
                           "weights": str(spec), "block": measuring.BLOCK, "settle_s": measuring.SETTLE_S},
              "rows": [asdict(r) for r in rows]}
    console.json(report)
    if args.out:
        write_json(args.out, report)
        console.status(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
