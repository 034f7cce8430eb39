"""``alphanet-bench``: latency (batch 1) and throughput (batch N) of AlphaNet models per backend.

    alphanet-bench --arch a0,a6 --threads 2 --batch-size 16 --out bench.json

Backends: ``eager`` (the PyTorch model as built), ``eager-cl`` (the same with channels-last
weights), ``torchscript`` and ``onnxruntime`` (the files `to_torchscript` and `to_onnx` write,
loaded back). Each backend's logits are compared with eager's before it is timed. The backends
of a model take turns in blocks of 5 timed calls (after ``--warmup`` untimed calls, then a
quarter second of them before each later block) until each has ``--repeats`` timed calls, so
load from other processes falls on all of them alike; rows give the median call and the fastest
("best"). A large fp32 matrix product at the same thread count gives the machine's
ceiling, against which each row's GFLOP/s is set (2 FLOPs per multiply-add of the paper's MFLOPs).
Weights are random unless ``--weights`` says otherwise: timings do not depend on weight values.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from alphanet_zoo import cli
from alphanet_zoo.cli import Console, cli_main, progress
from alphanet_zoo.errors import InputError, UsageError

from .metadata import INPUT_NAME

PROG = "alphanet-bench"
log = logging.getLogger("alphanet_zoo")
BACKENDS = ("eager", "eager-cl", "torchscript", "onnxruntime")
GEMM_SIZE = 3072
# Backends take turns in blocks of BLOCK timed calls, each block after SETTLE_S seconds of untimed
# calls: the previous backend's thread pool (ONNX Runtime's spinning workers, OpenMP's) keeps the
# cores busy for a while after its last call and would slow the next backend's first calls.
BLOCK = 5
SETTLE_S = 0.25


@dataclass
class Runner:
    """A backend ready to run: ``run(prepare(x))`` gives logits; ``prepare`` is not timed."""

    backend: str
    run: Callable[[Any], Any]
    prepare: Callable[[torch.Tensor], Any] = lambda x: x


@dataclass
class Row:
    """One measurement: a model on a backend at one batch size."""

    model: str
    backend: str
    batch: int
    threads: int
    params: int
    mflops: float
    ms_per_batch: float  # median
    ms_per_image: float
    best_ms_per_image: float  # the fastest call: the least disturbed by other load
    images_per_s: float
    gflops_per_s: float  # 2 * MFLOPs * images/s
    ceiling_fraction: float | None  # of the measured matrix-product GFLOP/s
    speedup_vs_eager: float | None
    max_abs_diff_vs_eager: float
    times_ms: list[float] = field(default_factory=list)


def make_runner(backend: str, model: nn.Module, workdir: Path, threads: int) -> Runner:
    """A `Runner` for ``backend``; exported backends write their file into ``workdir``."""
    from .onnx_export import to_onnx
    from .runtime import load_torchscript, onnxruntime_session
    from .torchscript_export import to_torchscript

    if backend == "eager":
        return Runner(backend, model)
    if backend == "eager-cl":
        import copy

        return Runner(backend, copy.deepcopy(model).to(memory_format=torch.channels_last))
    if backend == "torchscript":
        path = workdir / "model.pt"
        to_torchscript(model, path, verify=False)
        return Runner(backend, load_torchscript(path))
    if backend == "onnxruntime":
        path = workdir / "model.onnx"
        to_onnx(model, path, verify=False)
        session = onnxruntime_session(path, threads)
        return Runner(backend, lambda x: session.run(None, {INPUT_NAME: x})[0], lambda x: x.numpy())
    raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


def time_calls(run: Callable[[Any], Any], inputs: Any, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``run(inputs)``, ``repeats`` times after ``warmup`` untimed calls."""
    with torch.inference_mode():
        for _ in range(warmup):
            run(inputs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(inputs)
            times.append(time.perf_counter() - start)
    return times


@contextlib.contextmanager
def torch_threads(threads: int):
    """Run with ``threads`` intra-op threads, restoring the caller's count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def gemm_gflops(threads: int, size: int = GEMM_SIZE, repeats: int = 5) -> float:
    """Median GFLOP/s of an fp32 ``size`` x ``size`` matrix product at ``threads`` threads."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    with torch_threads(threads):
        times = time_calls(lambda ab: torch.mm(*ab), (a, b), warmup=2, repeats=repeats)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def _settle(run: Callable[[Any], Any], inputs: Any, calls: int) -> None:
    """Untimed calls: at least ``calls``, and for at least `SETTLE_S` seconds."""
    end = time.perf_counter() + SETTLE_S
    done = 0
    while done < calls or time.perf_counter() < end:
        run(inputs)
        done += 1


def _max_diff(got: Any, expected: torch.Tensor) -> float:
    return (torch.as_tensor(got).float() - expected).abs().max().item()


def benchmark_model(name: str, model: nn.Module, backends: Sequence[str], *, batch: int, threads: int,
                    warmup: int, repeats: int, ceiling: float | None = None,
                    extra_runners: dict[str, Callable[[nn.Module], Runner]] | None = None) -> list[Row]:
    """Rows for one model: each backend at batch 1 and at ``batch``.

    Backends are timed in turns, in blocks of `BLOCK` calls (``warmup`` untimed calls before the
    first block, `SETTLE_S` seconds of them before the others), so a load that comes and goes on a
    shared machine falls on all of them alike. ``extra_runners`` maps more backend
    names to runner factories (for benchmark scripts).
    """
    from alphanet_zoo.flops import count_flops

    with torch_threads(threads):
        model.eval()
        mflops = count_flops(model.arch, model.num_classes)
        params = sum(p.numel() for p in model.parameters())
        resolution = model.arch.resolution
        generator = torch.Generator().manual_seed(0)
        rows: list[Row] = []
        factories = dict(extra_runners or {})
        with tempfile.TemporaryDirectory(prefix="alphanet_bench_") as tmp:
            runners = []
            for backend in backends:
                runners.append(factories[backend](model) if backend in factories
                               else make_runner(backend, model, Path(tmp), threads))
            for n in sorted({1, batch}):
                x = torch.randn(n, 3, resolution, resolution, generator=generator)
                prepared = [r.prepare(x) for r in runners]
                with torch.inference_mode():
                    expected = model(x).float()
                    diffs = [_max_diff(r.run(p), expected) for r, p in zip(runners, prepared)]
                    times: list[list[float]] = [[] for _ in runners]
                    for first in range(0, repeats, BLOCK):
                        for r, p, t in zip(runners, prepared, times):
                            _settle(r.run, p, warmup if first == 0 else 1)
                            for _ in range(min(BLOCK, repeats - first)):
                                start = time.perf_counter()
                                r.run(p)
                                t.append(time.perf_counter() - start)
                medians = [statistics.median(t) * 1e3 for t in times]
                eager_ms = medians[backends.index("eager")] if "eager" in backends else None
                for backend, ms, t, diff in zip(backends, medians, times, diffs):
                    images_per_s = n / ms * 1e3
                    gflops = 2 * mflops * images_per_s / 1e3
                    rows.append(Row(
                        model=name, backend=backend, batch=n, threads=threads, params=params, mflops=round(mflops, 2),
                        ms_per_batch=ms, ms_per_image=ms / n, best_ms_per_image=min(t) * 1e3 / n,
                        images_per_s=images_per_s, gflops_per_s=gflops,
                        ceiling_fraction=gflops / ceiling if ceiling else None,
                        speedup_vs_eager=eager_ms / ms if eager_ms else None,
                        max_abs_diff_vs_eager=diff, times_ms=[v * 1e3 for v in t]))
            del runners
        return rows


def environment(threads: int) -> dict[str, Any]:
    """What the numbers were measured on."""
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "date": datetime.datetime.now().isoformat(timespec="seconds")}


def format_table(rows: Sequence[Row]) -> str:
    """The rows as a fixed-width text table."""
    header = (f"{'model':<10}{'backend':<13}{'batch':>6}{'ms/batch':>10}{'ms/image':>10}{'(best)':>8}{'images/s':>10}"
              f"{'vs eager':>9}{'GFLOP/s':>9}{'ceiling':>9}{'params':>12}{'MFLOPs':>9}{'max diff':>10}")
    lines = [header, "-" * len(header)]
    for r in rows:
        speedup = f"{r.speedup_vs_eager:.2f}x" if r.speedup_vs_eager else "-"
        ceiling = f"{100 * r.ceiling_fraction:.0f}%" if r.ceiling_fraction else "-"
        lines.append(f"{r.model:<10}{r.backend:<13}{r.batch:>6}{r.ms_per_batch:>10.2f}{r.ms_per_image:>10.2f}"
                     f"{r.best_ms_per_image:>8.2f}"
                     f"{r.images_per_s:>10.1f}{speedup:>9}{r.gflops_per_s:>9.1f}{ceiling:>9}{r.params:>12,}"
                     f"{r.mflops:>9.2f}{r.max_abs_diff_vs_eager:>10.1e}")
    return "\n".join(lines)


def _parse_backends(value: str) -> list[str]:
    if value.strip().lower() == "all":
        return list(BACKENDS)
    backends = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise UsageError(f"unknown backend {unknown[0] if unknown else value!r}; valid backends: "
                         f"{', '.join(BACKENDS)} (or all)")
    if "eager" not in backends:
        backends.insert(0, "eager")  # the reference every other backend is compared with
    return list(dict.fromkeys(backends))


def build_parser() -> cli.ArgumentParser:
    parser = cli.command_parser(
        PROG, "Latency (batch 1) and throughput (batch N) of AlphaNet models on eager PyTorch, TorchScript and "
              "ONNX Runtime, with params, MFLOPs and the machine's GEMM ceiling.",
        [cli.arch_flags(default="a0,a6"), cli.weights_flags(default="random"),
         cli.batch_flags(16), cli.output_flags("also write the results as JSON to this file"), cli.json_flags()])
    parser.add_argument("--batch", dest="batch_size", type=cli.integer(1, 65536), help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="all",
                        help=f"comma-separated backends from {', '.join(BACKENDS)}, or 'all'")
    parser.add_argument("--threads", type=cli.integer(1, 1024), default=os.cpu_count() or 1, metavar="N",
                        help="torch and runtime intra-op threads (default: all cores)")
    parser.add_argument("--warmup", type=cli.integer(0, 10_000), default=3, metavar="N",
                        help="untimed calls first, per backend")
    parser.add_argument("--repeats", type=cli.integer(1, 100_000), default=10, metavar="N",
                        help="timed calls per backend and batch size; the median is reported")
    parser.add_argument("--no-gemm", action="store_true", help="skip measuring the matrix-product ceiling")
    return parser


@cli_main(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    from alphanet_zoo._io import check_writable_file, write_json
    from alphanet_zoo.weights import WeightsLoader, WeightsSpec

    args = build_parser().parse_args(argv)
    console = Console(args.json)
    models = cli.parse_archs(args.arch)
    backends = _parse_backends(args.backend)
    batch, threads, warmup, repeats = args.batch_size, args.threads, args.warmup, args.repeats
    if args.out:
        check_writable_file(args.out)
    spec = WeightsSpec.parse(args.weights)
    loader = WeightsLoader(spec)

    ceiling = None if args.no_gemm else gemm_gflops(threads)
    rows: list[Row] = []
    for name, arch in progress(models, desc="benchmark", unit="model"):
        torch.manual_seed(0)
        model = loader.load(arch, name)
        rows += benchmark_model(name, model, backends, batch=batch, threads=threads, warmup=warmup,
                                repeats=repeats, ceiling=ceiling)

    ceiling_after = None if args.no_gemm else gemm_gflops(threads)
    console.status(f"{PROG}: {threads} thread(s), {warmup} warm-up calls, median (and best) of {repeats} calls; "
                   f"weights {spec}" + (" (timings do not depend on them)" if spec.kind == "random" else ""))
    if ceiling:
        console.status(f"fp32 matrix product {GEMM_SIZE}x{GEMM_SIZE}: {ceiling:.1f} GFLOP/s (the 'ceiling' column is "
                       f"each row's GFLOP/s, 2 x MFLOPs x images/s, as a fraction of it)")
        if abs(ceiling_after - ceiling) > 0.1 * ceiling:
            log.warning("the matrix product ran at %.1f GFLOP/s after the benchmark: other load on the machine "
                        "changed meanwhile, so these timings are noisy", ceiling_after)
    console.result(format_table(rows))
    gemm = {"size": GEMM_SIZE, "gflops_per_s": ceiling, "gflops_per_s_after": ceiling_after}
    report = {"environment": environment(threads), "gemm": gemm,
              "settings": {"batch_size": batch, "warmup": warmup, "repeats": repeats, "backends": backends,
                           "weights": str(spec)},
              "rows": [asdict(r) for r in rows]}
    console.json(report)
    if args.out:
        write_json(args.out, report)
        console.status(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
