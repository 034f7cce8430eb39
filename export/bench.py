"""Every way to run an AlphaNet model, side by side: latency (batch 1) and throughput (batch N); the
measuring behind ``alphanet-bench`` (`alphanet_zoo.commands.bench`).

    alphanet-bench --arch a0,a6 --threads 2 --batch-size 16 --out bench.json
    alphanet-bench --arch a0 --backend openvino-bf16,openvino-onnx,onnxruntime --repeats 60 --json
    alphanet-bench --arch a0 --backend executorch,executorch-int8,litert,litert-int8 --thread-counts 1,2

Backends: each runtime of `runtimes.RUNTIMES` (whose table says what each runs) at each precision it
offers, named ``RUNTIME`` (fp32) or ``RUNTIME-PRECISION``: ``eager``, ``eager-cl``, ``torchscript``,
``pt2``, ``onnxruntime``, ``onnxruntime-int8`` (its int8 QDQ model), ``openvino``, ``openvino-bf16``,
``openvino-int8`` (our IR at each precision), ``openvino-onnx`` (OpenVINO's default compile of our fp32
ONNX, as a user would do by hand), ``executorch``, ``executorch-int8``, ``litert``, ``litert-int8``,
``compile`` and ``cuda`` (when there is a GPU); a runtime's other names are accepted too
(``tflite-int8`` is ``litert-int8``). ``--backend all``: every one available here except the opt-in
``compile`` and phone runtimes.

The ExecuTorch and LiteRT rows (with ``[executorch]``, ``[litert]`` installed) run the phone runtimes on
this machine's CPU: a stand-in for a phone's, not a phone.
Every backend runs through `runtime.ExportedModel` (the PyTorch ones as `TorchModel` variants), the exported
ones with `open_model`'s tuned settings on files built by the formats' builders, as ``alphanet-export``
builds them. int8 files are calibrated on the built-in test images (timing does
not depend on it; their agreement would be better on real images). Each row gives the median call
and the range (min..max) over ``--repeats`` calls, taken in interleaved rounds
(`timing.time_in_turns`): backends take turns of 5 timed calls, each turn after a short pause and
untimed calls (``--warmup`` in the first turn; a quarter second of them in each), so load from other
processes falls on all of them alike. Beside it: the ratio to eager and to the best row at that
batch size; the row's GFLOP/s (2 x the paper's MFLOPs x images/s) against the matching
matrix-product ceiling (fp32, bf16 or int8 GEMM measured at the same thread count); the cold start (from
opening the file to the first batch-1 result, compilation included); and the agreement with the fp32
eager model on the built-in test images (worst-image logit cosine, top-1 agreement, largest logit
difference).
Weights are random unless ``--weights`` says otherwise: timings do not depend on weight values.
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import importlib.util
import logging
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from alphanet_zoo.errors import InputError
from alphanet_zoo.flops import count_flops

from .agreement import measure_agreement
from .builders import BUILDERS, Candidate, ExportJob
from .images import BUILTIN, ImageSets, builtin_image_paths, builtin_images, preprocess
from .metadata import export_metadata
from . import runtimes
from .runtime import ExportedModel, TorchModel, onnxruntime_session
from .timing import cpu_name, flat, mean_seconds, time_in_turns, torch_threads
from .verify import reference_logits

log = logging.getLogger("alphanet_zoo")
#: Every backend: each runtime of `runtimes.RUNTIMES` at each precision it offers (``onnxruntime-int8``).
BACKENDS = tuple(runtimes.variants())
#: Not in "all": torch.compile's first call takes minutes, and so does converting to each phone runtime.
OPT_IN = tuple(v for r in runtimes.RUNTIMES.values() if r.opt_in for v in r.variants())
GEMM_SIZE = 3072
# Backends take turns (`timing.time_in_turns`) of BLOCK timed calls, each after a pause and SETTLE_S
# seconds of untimed calls: the previous backend's thread pool (ONNX Runtime's spinning workers,
# OpenMP's) keeps the cores busy for a while after its last call and would slow the next one's first calls.
BLOCK = 5
SETTLE_S = 0.25


@dataclass
class Runner:
    """A backend ready to run: ``run(prepare(x))`` gives logits; ``prepare`` is not timed. Every backend of
    `BACKENDS` is an `ExportedModel` (`of`); a benchmark script may time any callable beside them."""

    backend: str
    run: Callable[[Any], Any]
    prepare: Callable[[torch.Tensor], Any] = lambda x: x
    precision: str = "fp32"
    cold_start_s: float | None = None  # opening/compiling to the first batch-1 result
    sync: Callable[[], None] | None = None  # waits for asynchronous work (CUDA) before a clock is read

    @classmethod
    def of(cls, backend: str, model: ExportedModel, precision: str | None = None,
           cold_start_s: float | None = None) -> "Runner":
        """``model`` as a runner: it runs what `ExportedModel.as_input` prepared."""
        sync = model.synchronize if str(model.device).startswith("cuda") else None
        return cls(backend, model, model.as_input, precision or model.runtime_precision, cold_start_s, sync)

    def close(self) -> None:
        close = getattr(self.run, "close", None)
        if close:
            close()


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

class Artifacts:
    """A model's exported files, built once per model and precision by the formats' builders
    (`builders.BUILDERS`, as ``alphanet-export`` builds them, not verified) in a work folder, and shared
    by its backends. int8 files are calibrated on the built-in test images."""

    def __init__(self, model: nn.Module, workdir: Path) -> None:
        self.model = model
        staging = Path(tempfile.mkdtemp(prefix="files_", dir=workdir))
        images = builtin_images(model.pretrained_cfg.preprocessing)
        self.job = ExportJob(model, staging / "model", "", export_metadata(model), staging, verify=False,
                             images=ImageSets(images, images, BUILTIN, BUILTIN, real=False))
        self._checked: set[str] = set()

    def candidate(self, fmt: str, precision: str) -> Candidate:
        """The ``precision`` file of ``fmt`` (built on first use)."""
        builder = BUILDERS[fmt]
        if fmt not in self._checked:
            builder.check(self.job)
            self._checked.add(fmt)
        key = f"bench_{fmt}_{precision}"
        if key not in self.job.cache:
            self.job.cache[key] = builder.build(self.job, precision)
        return self.job.cache[key]

    def opener(self, runtime: runtimes.RuntimeInfo, precision: str, threads: int) -> Callable[[], ExportedModel]:
        """What opens the ``runtime``'s file (built now) with ``threads`` threads: as `open_model` would when it
        is its format's runtime, else with its own options (openvino-onnx: OpenVINO's defaults)."""
        fmt = runtime.format
        candidate = self.candidate(fmt, precision)
        if runtimes.for_format(fmt) is not runtime:
            return lambda: runtime.model.from_file(candidate.files[0], None, None, threads, "cpu", **runtime.options)
        job = dataclasses.replace(self.job, format=fmt, threads=threads)
        return lambda: BUILDERS[fmt].open(job, candidate)


def _opened(backend: str, open_model: Callable[[], ExportedModel], side: int, precision: str) -> Runner:
    """A runner on what ``open_model`` opens; its cold start is opening it plus the first batch-1 result."""
    start = time.perf_counter()
    model = open_model()
    model(model.as_input(torch.zeros(1, 3, side, side)))
    model.synchronize()
    return Runner.of(backend, model, None if precision == "fp32" else precision, time.perf_counter() - start)


def make_runner(backend: str, model: nn.Module, workdir: Path, threads: int,
                artifacts: Artifacts | None = None) -> Runner:
    """A `Runner` for ``backend`` (a runtime of `runtimes.RUNTIMES`, at a precision: `runtimes.variant`);
    exported backends write their files into ``workdir``."""
    runtime, precision = runtimes.variant(backend)
    why = runtime.unavailable()
    if why:
        raise InputError(f"backend {backend}: {why}")
    side = model.arch.resolution
    if runtime.format is None:
        return _opened(backend, lambda: TorchModel.of(model, threads=threads, **runtime.options), side, precision)
    artifacts = artifacts or Artifacts(model, workdir)
    return _opened(backend, artifacts.opener(runtime, precision, threads), side, precision)


def available_backends(opt_in: bool = False) -> list[str]:
    """The backends ``all`` means here: those whose runtime runs here (its packages installed, a GPU for
    cuda); with ``opt_in``, also those that run here only when named (`OPT_IN`: ExecuTorch and LiteRT,
    ``torch.compile``)."""
    return [v for r in runtimes.RUNTIMES.values() if (opt_in or not r.opt_in) and not r.unavailable()
            for v in r.variants()]


# ---- ceilings -------------------------------------------------------------------------------------

def gemm_gflops(threads: int, size: int | None = None, repeats: int = 5, precision: str = "fp32") -> float:
    """GFLOP/s (GOP/s for int8) of a ``size`` x ``size`` matrix product at ``threads`` threads, over a block
    of ``repeats`` products (`timing.mean_seconds`).

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
        seconds = mean_seconds(lambda: torch.mm(a, b), repeats, threads)
    elif precision == "int8":
        from onnx import TensorProto, helper  # onnx is imported when used: it takes most of a second

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
        seconds = mean_seconds(lambda: session.run(None, feeds), repeats)
    else:
        raise InputError(f"unknown GEMM precision {precision!r}")
    return 2 * size ** 3 / seconds / 1e9


def gemm_ceilings(threads: int, size: int | None = None, repeats: int = 5) -> dict[str, float]:
    """The fp32, bf16 and int8 ceilings (GFLOP/s) at ``threads`` threads."""
    return {p: gemm_gflops(threads, size, repeats, p) for p in ("fp32", "bf16", "int8")}


def ceiling_of(precision: str) -> str:
    """The GEMM a row of ``precision`` is set against."""
    return {"fp16": "bf16"}.get(precision, precision)


# ---- timing -------------------------------------------------------------------------------------------

def _as_tensor(out: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(out) if not isinstance(out, torch.Tensor) else out.detach().cpu()).float()


def _agreement(runners: Sequence[Runner], model: nn.Module) -> list[Any]:
    """Each runner's `Agreement` with the fp32 model on the built-in test images (None where it failed)."""
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
                    agreement: bool = True, artifacts: Artifacts | None = None) -> list[Row]:
    """Rows for one model: each backend at batch 1 and at ``batch``.

    Backends are timed in turns (`timing.time_in_turns`) of `BLOCK` calls (after ``warmup`` untimed
    calls in the first turn, one in the others, and `SETTLE_S` seconds of them in each), so a load that
    comes and goes on a shared machine falls on all of them alike. ``ceiling``: the GEMM ceilings by
    precision (a bare number: the fp32 one). ``extra_runners`` maps more backend names to runner
    factories (for benchmark scripts). ``artifacts``: the model's exported files, to share them between calls
    (at several thread counts: a phone runtime's file takes minutes to convert); default: built here.
    """
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
            artifacts = artifacts or Artifacts(model, Path(tmp))
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
                    calls = [min(BLOCK, repeats - first) for first in range(0, repeats, BLOCK)]
                    turns = time_in_turns([lambda r=r, p=p: r.run(p) for r, p in zip(runners, prepared)],
                                          rounds=len(calls), calls=calls, warmup=1, first_warmup=warmup,
                                          settle_s=SETTLE_S, syncs=[r.sync for r in runners])
                    times = [flat(t) for t in turns]
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
                r.close()
            del runners
        return rows


# ---- reporting ------------------------------------------------------------------------------------------

def environment(threads: int | list[int]) -> dict[str, Any]:
    """What the numbers were measured on."""
    import onnxruntime

    versions = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    if importlib.util.find_spec("openvino") is not None:
        import openvino

        versions["openvino"] = openvino.get_version().split("-")[0]
    for package in ("executorch", "litert-torch", "ai-edge-litert"):
        if importlib.util.find_spec(package.replace("-", "_")) is not None:
            versions[package] = importlib.metadata.version(package)
    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": threads, **versions,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "platform": platform.platform(),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def format_table(rows: Sequence[Row]) -> str:
    """The rows as a fixed-width text table."""
    header = (f"{'model':<10}{'backend':<17}{'prec':<6}{'batch':>6}{'thr':>4}{'ms/batch':>10}{'ms/image':>10}"
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
        lines.append(f"{r.model:<10}{r.backend:<17}{r.precision:<6}{r.batch:>6}{r.threads:>4}{r.ms_per_batch:>10.2f}"
                     f"{r.ms_per_image:>10.2f}{spread:>16}{r.images_per_s:>10.1f}{speedup:>9}{r.vs_best:>7.2f}x"
                     f"{r.gflops_per_s:>9.1f}{ceiling:>13}{cold:>8}{cosine:>10}{top1:>7}"
                     f"{r.max_abs_diff_vs_eager:>10.1e}{r.params:>12,}{r.mflops:>9.2f}")
    return "\n".join(lines)


_Artifacts = Artifacts  # the name before it was public
