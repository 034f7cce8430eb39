"""``alphanet-bench``: every way to run an AlphaNet model, side by side: latency (batch 1) and throughput (batch N).

    alphanet-bench --arch a0,a6 --threads 2 --batch-size 16 --out bench.json
    alphanet-bench --arch a0 --backend openvino-bf16,openvino-onnx,onnxruntime --repeats 60 --json

Backends (``--backend all``: every one available here except the opt-in ``compile``):

| backend | what runs | precision |
| --- | --- | --- |
| ``eager`` | the PyTorch model as built | fp32 |
| ``eager-cl`` | the same, channels-last weights | fp32 |
| ``torchscript`` | `to_torchscript`'s file (deprecated upstream) | fp32 |
| ``pt2`` | `to_pt2`'s ``torch.export`` file | fp32 |
| ``compile`` | ``torch.compile`` (inductor) of the model; opt-in: its first call takes minutes | fp32 |
| ``onnxruntime`` / ``onnxruntime-int8`` | our ONNX file / its int8 QDQ model | fp32 / int8 |
| ``openvino`` / ``openvino-bf16`` / ``openvino-int8`` | our OpenVINO IR at each precision | fp32 / bf16 / int8 |
| ``openvino-onnx`` | OpenVINO's default compile of our fp32 ONNX, as a user would do by hand | OpenVINO's default |
| ``cuda`` | the PyTorch model on the GPU (when there is one) | fp32 |

Exported backends run through `open_model`, with its tuned settings. int8 files are calibrated on
the built-in test images (timing does not depend on it; their agreement would be better on real
images). Each row gives the median call and the range (min..max) over ``--repeats`` calls, taken
in interleaved rounds: backends take turns in blocks of 5 timed calls (after ``--warmup`` untimed
calls, then a quarter second of them before each later block), so load from other processes falls
on all of them alike. Beside it: the ratio to eager and to the best row at that batch size; the
row's GFLOP/s (2 x the paper's MFLOPs x images/s) against the matching matrix-product ceiling
(fp32, bf16 or int8 GEMM measured at the same thread count); the cold start (from opening the file
to the first batch-1 result, compilation included); and the agreement with the fp32 eager model on
the built-in test images (worst-image logit cosine, top-1 agreement, largest logit difference).
Weights are random unless ``--weights`` says otherwise: timings do not depend on weight values.
"""
from __future__ import annotations

import argparse
import copy
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

import numpy as np
import torch
from torch import nn

from alphanet_zoo import cli
from alphanet_zoo.cli import Console, cli_main, progress
from alphanet_zoo.errors import InputError, UsageError

from .runtime import cpu_name, torch_threads

PROG = "alphanet-bench"
log = logging.getLogger("alphanet_zoo")
BACKENDS = ("eager", "eager-cl", "torchscript", "pt2", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16",
            "openvino-int8", "openvino-onnx", "compile", "cuda")
OPT_IN = ("compile",)  # not in "all": torch.compile's first call takes minutes
PRECISION = {"onnxruntime-int8": "int8", "openvino-bf16": "bf16", "openvino-int8": "int8"}
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
    precision: str = "fp32"
    cold_start_s: float | None = None  # opening/compiling to the first batch-1 result
    sync: Callable[[], None] | None = None  # waits for asynchronous work (CUDA) before a clock is read


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
    ceiling_fraction: float | None  # of the matching GEMM ceiling's GFLOP/s
    speedup_vs_eager: float | None
    max_abs_diff_vs_eager: float  # on random inputs at this batch size
    times_ms: list[float] = field(default_factory=list)
    precision: str = "fp32"
    worst_ms_per_image: float = 0.0  # the slowest call
    vs_best: float | None = None  # this row's median time / the best row's (same model and batch); 1.0: the best
    ceiling: str | None = None  # which GEMM ceiling the row is set against: fp32, bf16 or int8
    cold_start_s: float | None = None
    cosine_min: float | None = None  # vs fp32 eager on the built-in test images (worst image)
    top1_agreement: float | None = None
    top5_overlap: float | None = None
    agreement_images: int | None = None


# ---- runners ------------------------------------------------------------------------------------

class _Artifacts:
    """A model's exported files, made once per model in a work folder and shared by its backends."""

    def __init__(self, model: nn.Module, workdir: Path) -> None:
        self.model, self.workdir, self._files = model, workdir, {}

    def get(self, kind: str) -> Path:
        if kind not in self._files:
            self._files[kind] = self._make(kind)
        return self._files[kind]

    def _make(self, kind: str) -> Path:
        from .metadata import export_metadata

        folder = self.workdir / kind
        folder.mkdir(parents=True, exist_ok=True)
        meta = export_metadata(self.model)
        if kind == "onnx":
            import onnx

            from .onnx_export import onnx_model

            path = folder / "model.onnx"
            onnx.save(onnx_model(self.model, metadata=meta), str(path))
            return path
        if kind in ("onnx-int8", "onnx-int8-openvino"):  # each runtime's own recipe (`quantize`)
            from .images import builtin_images
            from .quantize import ONNXRUNTIME_OPS, OPENVINO_OPS, quantize_onnx

            path = folder / "model.onnx"
            images = builtin_images(self.model.pretrained_cfg.preprocessing)
            quantize_onnx(self.get("onnx"), path, images, "built-in test images",
                          ONNXRUNTIME_OPS if kind == "onnx-int8" else OPENVINO_OPS)
            return path
        if kind in ("ir", "ir-int8"):
            from .openvino_export import convert_onnx, optimised_onnx, save_ir

            source = self.get("onnx" if kind == "ir" else "onnx-int8-openvino")
            if kind == "ir":  # as alphanet-export writes it: with the graph passes
                source, _ = optimised_onnx(source, folder / "optimised.onnx")
            return save_ir(convert_onnx(source), folder / "model.xml", meta, None)[0]
        if kind == "torchscript":
            from .torchscript_export import save_module, torchscript_module

            path = folder / "model.pt"
            save_module(torchscript_module(self.model), path, meta, None)
            return path
        if kind == "pt2":
            from .pt2_export import exported_program, save_program

            path = folder / "model.pt2"
            save_program(exported_program(self.model), path, meta, None)
            return path
        raise InputError(f"unknown artifact {kind!r}")


def _exported_runner(backend: str, open_file: Callable[[], Any], side: int, precision: str) -> Runner:
    """A runner on an exported file; its cold start is opening it plus the first batch-1 call."""
    x = np.zeros((1, 3, side, side), dtype=np.float32)
    start = time.perf_counter()
    runner = open_file()
    runner(x)
    cold = time.perf_counter() - start
    return Runner(backend, runner, lambda t: np.ascontiguousarray(t.numpy()), precision, cold)


def make_runner(backend: str, model: nn.Module, workdir: Path, threads: int,
                artifacts: _Artifacts | None = None) -> Runner:
    """A `Runner` for ``backend``; exported backends write their files into ``workdir``."""
    from .runtime import OpenVinoModel, open_model

    artifacts = artifacts or _Artifacts(model, workdir)
    side = model.arch.resolution
    if backend in ("eager", "eager-cl", "compile"):
        net = model if backend == "eager" else copy.deepcopy(model).eval()
        if backend == "eager-cl":
            net = net.to(memory_format=torch.channels_last)
        if backend == "compile":
            net = torch.compile(net)
        start = time.perf_counter()
        with torch.inference_mode():
            net(torch.zeros(1, 3, side, side))
        return Runner(backend, net, cold_start_s=time.perf_counter() - start)
    if backend == "cuda":
        if not torch.cuda.is_available():
            raise InputError("backend cuda: no CUDA device is available to PyTorch")
        net = copy.deepcopy(model).eval().cuda().to(memory_format=torch.channels_last)
        start = time.perf_counter()
        with torch.inference_mode():
            net(torch.zeros(1, 3, side, side, device="cuda"))
        torch.cuda.synchronize()
        return Runner(backend, lambda x: net(x), lambda t: t.cuda(), cold_start_s=time.perf_counter() - start,
                      sync=torch.cuda.synchronize)
    files = {"torchscript": "torchscript", "pt2": "pt2", "onnxruntime": "onnx", "onnxruntime-int8": "onnx-int8",
             "openvino": "ir", "openvino-bf16": "ir", "openvino-int8": "ir-int8", "openvino-onnx": "onnx"}
    if backend not in files:
        raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    path = artifacts.get(files[backend])
    precision = PRECISION.get(backend, "fp32")
    if backend == "openvino-onnx":
        runner = _exported_runner(backend, lambda: _openvino_default(path, threads), side, precision)
        runner.precision = runner.run.precision
        return runner
    if backend in ("openvino", "openvino-bf16", "openvino-int8"):
        hint = {"openvino": "f32", "openvino-bf16": "bf16", "openvino-int8": None}[backend]
        return _exported_runner(backend, lambda: OpenVinoModel(path, None, None, threads, "cpu",
                                                               inference_precision=hint), side, precision)
    return _exported_runner(backend, lambda: open_model(path, threads=threads), side, precision)


def _openvino_default(onnx_path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """OpenVINO's default compile of an ONNX file with ``threads`` threads: the baseline a user gets by hand."""
    from .runtime import openvino_core

    compiled = openvino_core().compile_model(str(onnx_path), "CPU", {"INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        return request.infer(x)[0]

    run.close = lambda: None
    # what OpenVINO chose by itself: bf16 on CPUs that have it
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    run.precision = {"bf16": "bf16", "f16": "fp16"}.get(hint, "fp32")
    return run


def available_backends() -> list[str]:
    """The backends ``all`` means here: OpenVINO rows when OpenVINO is installed, cuda when a GPU is."""
    import importlib.util

    has_openvino = importlib.util.find_spec("openvino") is not None
    return [b for b in BACKENDS if b not in OPT_IN and (has_openvino or not b.startswith("openvino"))
            and (b != "cuda" or torch.cuda.is_available())]


# ---- ceilings -------------------------------------------------------------------------------------

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


def gemm_gflops(threads: int, size: int | None = None, repeats: int = 5, precision: str = "fp32") -> float:
    """Median GFLOP/s (GOP/s for int8) of a ``size`` x ``size`` matrix product at ``threads`` threads.

    fp32 and bf16: ``torch.mm`` (oneDNN: AVX-512, AVX512-BF16 or AMX where the CPU has them); int8:
    ONNX Runtime's ``MatMulInteger`` of uint8 by int8, the kernel our int8 ONNX files run on.
    ``size`` defaults to `GEMM_SIZE`.
    """
    size = size or GEMM_SIZE
    generator = torch.Generator().manual_seed(0)
    if precision in ("fp32", "bf16"):
        dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        a = torch.randn(size, size, generator=generator).to(dtype)
        b = torch.randn(size, size, generator=generator).to(dtype)
        with torch_threads(threads):
            times = time_calls(lambda ab: torch.mm(*ab), (a, b), warmup=2, repeats=repeats)
    elif precision == "int8":
        from onnx import TensorProto, helper

        from .runtime import onnxruntime_session

        a_info = helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size])
        b_info = helper.make_tensor_value_info("b", TensorProto.INT8, [size, size])
        y_info = helper.make_tensor_value_info("y", TensorProto.INT32, [size, size])
        graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "gemm", [a_info, b_info],
                                  [y_info])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "gemm.onnx"
            path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
            session = onnxruntime_session(path, threads)
        rng = np.random.RandomState(0)
        feeds = {"a": rng.randint(0, 256, (size, size)).astype(np.uint8),
                 "b": rng.randint(-128, 128, (size, size)).astype(np.int8)}
        times = time_calls(lambda f: session.run(None, f), feeds, warmup=2, repeats=repeats)
    else:
        raise InputError(f"unknown GEMM precision {precision!r}")
    return 2 * size ** 3 / statistics.median(times) / 1e9


def gemm_ceilings(threads: int, size: int | None = None, repeats: int = 5) -> dict[str, float]:
    """The fp32, bf16 and int8 ceilings (GFLOP/s) at ``threads`` threads."""
    return {p: gemm_gflops(threads, size, repeats, p) for p in ("fp32", "bf16", "int8")}


def ceiling_of(precision: str) -> str:
    """The GEMM a row of ``precision`` is set against."""
    return {"fp16": "bf16"}.get(precision, precision)


# ---- timing -------------------------------------------------------------------------------------------

def _settle(run: Callable[[Any], Any], inputs: Any, calls: int) -> None:
    """Untimed calls: at least ``calls``, and for at least `SETTLE_S` seconds."""
    end = time.perf_counter() + SETTLE_S
    done = 0
    while done < calls or time.perf_counter() < end:
        run(inputs)
        done += 1


def _as_tensor(out: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(out) if not isinstance(out, torch.Tensor) else out.detach().cpu()).float()


def _agreement(runners: Sequence[Runner], model: nn.Module) -> list[Any]:
    """Each runner's `Agreement` with the fp32 model on the built-in test images (None where it failed)."""
    from .agreement import measure_agreement
    from .images import BUILTIN, builtin_image_paths, preprocess
    from .verify import reference_logits

    images = preprocess(builtin_image_paths(), model.pretrained_cfg.preprocessing)
    reference = reference_logits(model, images)
    found = []
    with torch.inference_mode():
        for r in runners:
            got = _as_tensor(r.run(r.prepare(images))).numpy()
            found.append(measure_agreement(reference, got, BUILTIN))
    return found


def benchmark_model(name: str, model: nn.Module, backends: Sequence[str], *, batch: int, threads: int,
                    warmup: int, repeats: int, ceiling: float | dict[str, float] | None = None,
                    extra_runners: dict[str, Callable[[nn.Module], Runner]] | None = None,
                    agreement: bool = True) -> list[Row]:
    """Rows for one model: each backend at batch 1 and at ``batch``.

    Backends are timed in turns, in blocks of `BLOCK` calls (``warmup`` untimed calls before the
    first block, `SETTLE_S` seconds of them before the others), so a load that comes and goes on a
    shared machine falls on all of them alike. ``ceiling``: the GEMM ceilings by precision (a bare
    number: the fp32 one). ``extra_runners`` maps more backend names to runner factories (for
    benchmark scripts).
    """
    from alphanet_zoo.flops import count_flops

    ceilings = {"fp32": ceiling} if isinstance(ceiling, (int, float)) else dict(ceiling or {})
    with torch_threads(threads):
        model.eval()
        mflops = count_flops(model.arch, model.num_classes)
        params = sum(p.numel() for p in model.parameters())
        resolution = model.arch.resolution
        generator = torch.Generator().manual_seed(0)
        rows: list[Row] = []
        factories = dict(extra_runners or {})
        with tempfile.TemporaryDirectory(prefix="alphanet_bench_") as tmp:
            artifacts = _Artifacts(model, Path(tmp))
            runners = []
            for backend in backends:
                runners.append(factories[backend](model) if backend in factories
                               else make_runner(backend, model, Path(tmp), threads, artifacts))
            agreements = _agreement(runners, model) if agreement else [None] * len(runners)
            for n in sorted({1, batch}):
                x = torch.randn(n, 3, resolution, resolution, generator=generator)
                prepared = [r.prepare(x) for r in runners]
                with torch.inference_mode():
                    expected = model(x).float()
                    diffs = [(_as_tensor(r.run(p)) - expected).abs().max().item() for r, p in zip(runners, prepared)]
                    times: list[list[float]] = [[] for _ in runners]
                    for first in range(0, repeats, BLOCK):
                        for r, p, t in zip(runners, prepared, times):
                            _settle(r.run, p, warmup if first == 0 else 1)
                            if r.sync:
                                r.sync()
                            for _ in range(min(BLOCK, repeats - first)):
                                start = time.perf_counter()
                                r.run(p)
                                if r.sync:
                                    r.sync()
                                t.append(time.perf_counter() - start)
                medians = [statistics.median(t) * 1e3 for t in times]
                eager_ms = medians[backends.index("eager")] if "eager" in backends else None
                best_ms = min(medians)
                for backend, r, ms, t, diff, a in zip(backends, runners, medians, times, diffs, agreements):
                    images_per_s = n / ms * 1e3
                    gflops = 2 * mflops * images_per_s / 1e3
                    kind = ceiling_of(r.precision)
                    top = ceilings.get(kind)
                    rows.append(Row(
                        model=name, backend=backend, batch=n, threads=threads, params=params, mflops=round(mflops, 2),
                        ms_per_batch=ms, ms_per_image=ms / n, best_ms_per_image=min(t) * 1e3 / n,
                        images_per_s=images_per_s, gflops_per_s=gflops,
                        ceiling_fraction=gflops / top if top else None,
                        speedup_vs_eager=eager_ms / ms if eager_ms else None,
                        max_abs_diff_vs_eager=diff, times_ms=[v * 1e3 for v in t], precision=r.precision,
                        worst_ms_per_image=max(t) * 1e3 / n, vs_best=ms / best_ms, ceiling=kind if top else None,
                        cold_start_s=r.cold_start_s,
                        cosine_min=a.cosine_min if a else None, top1_agreement=a.top1_agreement if a else None,
                        top5_overlap=a.top5_overlap if a else None, agreement_images=a.images if a else None))
            for r in runners:
                close = getattr(r.run, "close", None)
                if close:
                    close()
            del runners
        return rows


# ---- reporting ------------------------------------------------------------------------------------------

def environment(threads: int) -> dict[str, Any]:
    """What the numbers were measured on."""
    import importlib.util

    import onnxruntime

    versions = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    if importlib.util.find_spec("openvino") is not None:
        import openvino

        versions["openvino"] = openvino.get_version().split("-")[0]
    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": threads, **versions,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "platform": platform.platform(),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def format_table(rows: Sequence[Row]) -> str:
    """The rows as a fixed-width text table."""
    header = (f"{'model':<10}{'backend':<17}{'prec':<6}{'batch':>6}{'ms/batch':>10}{'ms/image':>10}"
              f"{'min..max':>16}{'images/s':>10}{'vs eager':>9}{'vs best':>8}{'GFLOP/s':>9}{'ceiling':>13}"
              f"{'cold s':>8}{'cosine':>10}{'top-1':>7}{'max diff':>10}{'params':>12}{'MFLOPs':>9}")
    lines = [header, "-" * len(header)]
    for r in rows:
        speedup = f"{r.speedup_vs_eager:.2f}x" if r.speedup_vs_eager else "-"
        ceiling = f"{100 * r.ceiling_fraction:.0f}% {r.ceiling}" if r.ceiling_fraction else "-"
        spread = f"{r.best_ms_per_image:.2f}..{r.worst_ms_per_image:.2f}"
        cold = f"{r.cold_start_s:.2f}" if r.cold_start_s is not None else "-"
        cosine = f"{r.cosine_min:.5f}" if r.cosine_min is not None else "-"
        top1 = f"{100 * r.top1_agreement:.0f}%" if r.top1_agreement is not None else "-"
        lines.append(f"{r.model:<10}{r.backend:<17}{r.precision:<6}{r.batch:>6}{r.ms_per_batch:>10.2f}"
                     f"{r.ms_per_image:>10.2f}{spread:>16}{r.images_per_s:>10.1f}{speedup:>9}{r.vs_best:>7.2f}x"
                     f"{r.gflops_per_s:>9.1f}{ceiling:>13}{cold:>8}{cosine:>10}{top1:>7}"
                     f"{r.max_abs_diff_vs_eager:>10.1e}{r.params:>12,}{r.mflops:>9.2f}")
    return "\n".join(lines)


def _parse_backends(value: str) -> list[str]:
    if value.strip().lower() == "all":
        backends = available_backends()
    else:
        backends = [v.strip() for v in value.split(",") if v.strip()]
        unknown = [b for b in backends if b not in BACKENDS]
        if unknown or not backends:
            raise UsageError(f"unknown backend {unknown[0] if unknown else value!r}; valid backends: "
                             f"{', '.join(BACKENDS)} (or all: every one available here but {', '.join(OPT_IN)})")
        missing = [b for b in backends if b not in available_backends() and b not in OPT_IN]
        if missing:
            raise UsageError(f"backend {missing[0]} is not available here "
                             f"({'no CUDA device' if missing[0] == 'cuda' else 'OpenVINO is not installed'})")
    if "eager" not in backends:
        backends.insert(0, "eager")  # the reference every other backend is compared with
    return list(dict.fromkeys(backends))


def build_parser() -> cli.ArgumentParser:
    parser = cli.command_parser(
        PROG, "Latency (batch 1) and throughput (batch N) of AlphaNet models on every backend side by side: eager "
              "PyTorch, TorchScript, torch.export, torch.compile, ONNX Runtime and OpenVINO at fp32, bf16 and int8, "
              "CUDA; with the fp32/bf16/int8 GEMM ceilings, cold start and agreement with fp32.",
        [cli.arch_flags(default="a0,a6"), cli.weights_flags(default="random"),
         cli.batch_flags(16), cli.output_flags("also write the results as JSON to this file"), cli.json_flags()])
    parser.add_argument("--batch", dest="batch_size", type=cli.integer(1, 65536), help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="all",
                        help=f"comma-separated backends from {', '.join(BACKENDS)}, or 'all' (every one available "
                             f"here except {', '.join(OPT_IN)})")
    parser.add_argument("--threads", type=cli.integer(1, 1024), default=os.cpu_count() or 1, metavar="N",
                        help="torch and runtime intra-op threads (default: all cores)")
    parser.add_argument("--warmup", type=cli.integer(0, 10_000), default=3, metavar="N",
                        help="untimed calls first, per backend")
    parser.add_argument("--repeats", type=cli.integer(1, 100_000), default=10, metavar="N",
                        help="timed calls per backend and batch size; the median is reported")
    parser.add_argument("--no-gemm", action="store_true", help="skip measuring the matrix-product ceilings")
    parser.add_argument("--no-agreement", action="store_true",
                        help="skip comparing each backend's logits with fp32 on the built-in test images")
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

    ceilings = None if args.no_gemm else gemm_ceilings(threads)
    rows: list[Row] = []
    for name, arch in progress(models, desc="benchmark", unit="model"):
        torch.manual_seed(0)
        model = loader.load(arch, name)
        rows += benchmark_model(name, model, backends, batch=batch, threads=threads, warmup=warmup, repeats=repeats,
                                ceiling=ceilings, agreement=not args.no_agreement)

    after = None if args.no_gemm else gemm_gflops(threads)
    console.status(f"{PROG}: {threads} thread(s), {warmup} warm-up calls, median (min..max) of {repeats} calls in "
                   f"interleaved rounds; weights {spec}"
                   + (" (timings do not depend on them)" if spec.kind == "random" else ""))
    if ceilings:
        console.status("matrix product {0}x{0} at {1} thread(s): fp32 {2:.1f}, bf16 {3:.1f} GFLOP/s, int8 {4:.1f} "
                       "GOP/s (the 'ceiling' column: each row's GFLOP/s, 2 x MFLOPs x images/s, against the ceiling "
                       "of its precision)".format(GEMM_SIZE, threads, ceilings["fp32"], ceilings["bf16"],
                                                  ceilings["int8"]))
        if abs(after - ceilings["fp32"]) > 0.1 * ceilings["fp32"]:
            log.warning("the fp32 matrix product ran at %.1f GFLOP/s after the benchmark, %.1f before: other load on "
                        "the machine changed meanwhile, so these timings are noisy", after, ceilings["fp32"])
    console.result(format_table(rows))
    gemm = {"size": GEMM_SIZE, "gflops_per_s": ceilings["fp32"] if ceilings else None, "gflops_per_s_after": after,
            "ceilings": ceilings}
    report = {"environment": environment(threads), "gemm": gemm,
              "settings": {"batch_size": batch, "warmup": warmup, "repeats": repeats, "backends": backends,
                           "weights": str(spec), "block": BLOCK, "settle_s": SETTLE_S},
              "rows": [asdict(r) for r in rows]}
    console.json(report)
    if args.out:
        write_json(args.out, report)
        console.status(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
