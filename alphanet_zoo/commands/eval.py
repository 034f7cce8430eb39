"""``alphanet-eval``: ImageNet top-1/top-5 of AlphaNet models beside the paper's table.

    alphanet-eval --arch a0 --weights alphanet_pretrained.pth.tar --data /data/imagenet/val \\
        --calib-data /data/imagenet/train --workers 8 --out results.json
    alphanet-eval --arch all --weights weights/ --data /data/imagenet/val --plot pareto.png
    alphanet-eval --model alphanet_a0.onnx --data /data/imagenet/val
    torchrun --nproc_per_node 8 --no-python alphanet-eval --arch all ...   # the images split across 8 processes

The results JSON is described in `alphanet_zoo.eval.report`.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from .. import distributed
from .._io import check_writable_file
from ..allocator import keep_freed_memory
from ..calibration import calibrate
from ..config import ArchConfig
from ..data import (
    GROUND_TRUTH_FILE,
    EvalResult,
    Sample,
    TorchClassifier,
    batch_indices,
    evaluate,
    find_ground_truth,
    labelled_batches,
    labelled_samples,
)
from ..errors import AlphaNetError, InputError, UsageError
from ..eval.report import (
    format_table,
    model_result,
    plot_pareto,
    require_matplotlib,
    results_document,
    write_json,
    write_predictions,
)
from ..export import open_model
from ..flops import count_flops_fvcore
from ..imagenet import NUM_CLASSES
from ..model import AlphaNet
from ..preprocessing import EvalCrop, Preprocessing
from ..record import ModelRecord, Origin
from ..weights import WeightsLoader, WeightsSpec
from . import flags, running
from .running import EXIT_INTERRUPTED, Console, cli_main, progress

PROG = "alphanet-eval"


def build_parser() -> flags.ArgumentParser:
    p = flags.command_parser(
        PROG, "Evaluate AlphaNet models on ImageNet (top-1, top-5, FLOPs, throughput) with the official "
              "preprocessing, beside the paper's numbers.",
        [flags.arch_flags(), flags.weights_flags(default=None), flags.calibration_flags(),
         flags.seed_flags("calibration seed: the same seed gives the same BatchNorm statistics"),
         flags.batch_flags(256), flags.workers_flags(min(8, os.cpu_count() or 1)), flags.device_flags(),
         flags.threads_flags(),
         flags.output_flags("write the results JSON here (atomically)"), flags.dist_flags(), flags.json_flags()])
    p.add_argument("--output", dest="out", help=argparse.SUPPRESS)  # the old spelling of --out
    p.add_argument("--model", metavar="FILE",
                   help="evaluate an exported file (ONNX, OpenVINO .xml, .pt2, TorchScript, ExecuTorch .pte, "
                        "LiteRT .tflite) instead of PyTorch weights")
    p.add_argument("--onnx", dest="model", help=argparse.SUPPRESS)
    p.add_argument("--data", required=True, metavar="DIR",
                   help="validation images: synset folders (DIR/n01440764/*.JPEG), a flat folder with "
                        "LOC_val_solution.csv or ILSVRC2012_validation_ground_truth.txt, or class folders for "
                        "a model with other classes")
    p.add_argument("--ground-truth", metavar="FILE", help="ground-truth file of a flat folder, when not inside it")
    p.add_argument("--label-map", metavar="FILE",
                   help="the devkit's data/meta.mat or a map_clsloc.txt, to read the devkit's "
                        "ILSVRC2012_validation_ground_truth.txt (found beside it when omitted)")
    p.add_argument("--allow-tf32", action="store_true",
                   help="let CUDA convolutions and matmuls use TF32 (faster on Ampere and later, less exact)")
    p.add_argument("--limit", type=flags.integer(1), metavar="N", help="evaluate only the first N images")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip unreadable or corrupt images (counted and reported) instead of stopping")
    p.add_argument("--save-predictions", metavar="FILE",
                   help="write one JSON line per image: model, path, target, top5 (class indices)")
    p.add_argument("--plot", metavar="PNG", help="plot top-1 against MFLOPs beside the paper's points "
                                                 "(needs matplotlib: the 'plot' extra)")
    return p


@dataclass
class Subject:
    """One model ready to evaluate, and what the report says about it."""

    name: str
    record: ModelRecord | None
    classifier: Callable[[torch.Tensor], torch.Tensor]
    preprocessing: Preprocessing
    backend: str
    weights: str


def _check_args(args: argparse.Namespace) -> None:
    if args.model:
        if args.calib_data:
            raise UsageError("--calib-data re-calibrates a PyTorch model; it does not apply to --model")
        if args.weights:
            raise UsageError("give --model FILE or --weights SPEC, not both")
        if args.arch and len(flags.parse_archs(args.arch)) != 1:
            raise UsageError("--model evaluates one file; give its --arch by name, or none")
    for option in ("out", "save_predictions", "plot"):
        path = getattr(args, option)
        if path is not None:
            check_writable_file(path, f"--{option.replace('_', '-')}")
    if args.plot:
        try:
            require_matplotlib()
        except ImportError as e:
            raise UsageError(str(e)) from None


def _pytorch_subjects(args: argparse.Namespace, device: torch.device, calibration) -> Iterator[Subject]:
    """Each ``--arch`` model (or the one the weights name), loaded and BN-calibrated when its turn comes."""

    spec = WeightsSpec.parse(args.weights or "pretrained")
    loader = WeightsLoader(spec, device)
    for name, arch in (flags.parse_archs(args.arch) if args.arch else [(None, None)]):
        if arch is None and spec.kind in ("pretrained", "random"):
            raise UsageError(f"--arch is needed with --weights {spec}")
        model = loader.load(arch, name)
        record = model.pretrained_cfg
        if calibration is not None:
            calibrate(model, progress(calibration, total=len(calibration), desc=f"calibrating {name or 'model'}",
                                      unit="batch", leave=False, **_quiet()),
                      arch.resolution if arch else record.arch.resolution)
            record = dataclasses.replace(record, calibration=calibration.describe())
            model.pretrained_cfg = record
        label = name or record.name or Path(str(spec)).name
        yield Subject(label, record, TorchClassifier(model, device), record.preprocessing, "pytorch", str(spec))


def _file_subject(args: argparse.Namespace, device: torch.device) -> Subject:
    """The ``--model`` file (ONNX, OpenVINO IR, TorchScript or pt2, run by `alphanet_zoo.export.open_model`):
    its record (metadata) gives the architecture and preprocessing; ``--arch`` must agree with it, or
    stands in for it when the file has none."""

    classifier = open_model(args.model, threads=args.threads, device=device)
    record = classifier.record()
    name, arch = flags.single_arch(args.arch) if args.arch else (None, None)
    if record is not None and arch is not None and arch != record.arch:
        raise InputError(f"--arch {args.arch} is not the architecture stored in {args.model}")
    if record is None and arch is not None:
        record = ModelRecord.create(arch, origin=Origin.FILE, source=f"the file {Path(args.model).name} (no metadata)")
    static = classifier.static_resolution()
    if record is not None:
        preprocessing = record.preprocessing
        if static is not None and static != preprocessing.resolution:
            raise InputError(f"{args.model}: input size {static} disagrees with its preprocessing resolution "
                             f"{preprocessing.resolution}")
    elif static is not None:
        preprocessing = Preprocessing(resolution=static)
    else:
        raise InputError(f"cannot tell the input resolution of {args.model} (dynamic input size and no "
                         "'config' metadata): give --arch")
    label = name or (record.name if record else None) or Path(args.model).stem
    return Subject(label, record, classifier, preprocessing, classifier.backend, f"file:{args.model}")


@functools.lru_cache(maxsize=None)
def _fvcore_total(arch: ArchConfig, num_classes: int) -> float | None:
    """fvcore's MFLOPs of ``arch`` (traced once per architecture: the count does not depend on weights)."""

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fvcore's tracing warns about torch.jit deprecations
            return count_flops_fvcore(AlphaNet(arch, num_classes).eval())["total"]
    except Exception:  # fvcore is a cross-check only; a tracing failure must not lose an evaluation
        return None


class _Samples:
    """The evaluation images, read once per way of labelling them (ImageNet, or a model's classes)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self._cache = args, {}
        self.layout = None

    def for_record(self, record: ModelRecord | None) -> list[Sample]:
        num_classes = record.num_classes if record is not None else NUM_CLASSES
        classes = None if record is None or record.label_set else record.labels
        key = (num_classes, classes)
        if key not in self._cache:
            a = self.args
            samples, layout = labelled_samples(a.data, num_classes, classes, a.ground_truth, a.label_map)
            bad = [s for s in samples if s.target >= num_classes]
            if bad:
                raise InputError(f"{a.data}: class index {bad[0].target} is outside the model's {num_classes} classes")
            self._cache[key] = samples[:a.limit] if a.limit else samples
            self.layout = layout
        return self._cache[key]


def _quiet() -> dict[str, Any]:
    """Progress-bar arguments: bars on rank 0 only."""

    return {} if distributed.rank_and_world()[0] == 0 else {"disable": True}


def _shard(count: int, batch_size: int) -> list[list[int]] | None:
    """This process's share of a distributed run: batch k of the fixed order goes to rank k mod world
    size (whole batches, so every image is computed in the batch it has in one process); None alone."""

    rank, world = distributed.rank_and_world()
    if world == 1:
        return None
    return [b for k, b in enumerate(batch_indices(count, batch_size)) if k % world == rank]


def _gather(result: EvalResult, samples: Sequence[Sample], error: tuple[int, str] | None = None) -> EvalResult:
    """Every process's counts, bad images and predictions, merged in the images' order (a no-op alone).
    A process's ``error`` (exit code, message) is raised on every process, so all stop with it."""

    if not distributed.is_distributed():
        return result
    parts = distributed.all_gather_object((result, error), "gathering the evaluation counts")
    failed = [e for _, e in parts if e is not None]
    if failed:
        code, message = failed[0]
        raise (InputError if code == InputError.exit_code else AlphaNetError)(message)
    merged = EvalResult()
    for part, _ in parts:
        merged.merge(part)
    order = {str(s.path): i for i, s in enumerate(samples)}
    merged.bad_images.sort(key=lambda bad: order.get(str(bad[0]), -1))
    return merged


def _run(subject: Subject, samples: Sequence[Sample], args: argparse.Namespace, device: torch.device) -> EvalResult:
    """Evaluate with a progress bar; on Ctrl-C the result so far comes back marked interrupted.

    Under torchrun each process evaluates its share of whole batches (`_shard`) and the counts and
    predictions of all are gathered (`_gather`): the same numbers as one process, bit for bit.
    """

    p = subject.preprocessing
    share = _shard(len(samples), args.batch_size)
    batches = labelled_batches(samples, EvalCrop(p), p.crop_size, batch_size=args.batch_size, workers=args.workers,
                               pin_memory=device.type == "cuda", batches=share)
    result = EvalResult()
    total = len(samples) if share is None else sum(len(b) for b in share)
    bar = progress(total=total, desc=subject.name, unit="img", **_quiet())

    def on_batch(r: EvalResult, n: int) -> None:
        bar.update(n)
        if r.top1 is not None:
            bar.set_postfix_str(f"top1={r.top1:.2f}%", refresh=False)

    error = None
    try:
        evaluate(subject.classifier, batches, resolution=p.resolution, mean=p.mean, std=p.std,
                 device=device if subject.backend == "pytorch" else "cpu", result=result,
                 skip_bad_images=args.skip_bad_images, keep_predictions=bool(args.save_predictions),
                 on_batch=on_batch)
    except KeyboardInterrupt:
        if distributed.is_distributed():
            raise  # the other processes cannot be asked to stop at the same image: no partial results
        result.interrupted = True
    except AlphaNetError as e:
        if not distributed.is_distributed():
            raise
        error = (e.exit_code, f"rank {distributed.rank_and_world()[0]}: {e}")
    finally:
        bar.close()
    return _gather(result, samples, error)


def _prediction_rows(name: str, result: EvalResult, samples: Sequence[Sample], root: Path) -> Iterator[dict]:
    for p in result.predictions:
        path = Path(samples[p.index].path)
        try:
            shown = path.relative_to(root).as_posix()
        except ValueError:
            shown = str(path)
        yield {"model": name, "path": shown, "target": p.target, "top5": p.top5}


@cli_main(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Under torchrun (``WORLD_SIZE`` > 1) each process evaluates a share of the images and rank 0
    writes what one process would; a process that dies stops the others at once (the connection
    closes), one that hangs after ``--dist-timeout`` seconds."""

    args = build_parser().parse_args(argv)
    _check_args(args)
    running.set_threads(args.threads)
    with distributed.torchrun(args.device, args.dist_timeout, PROG) as ctx:
        console = Console(args.json) if ctx.is_main else running.SilentConsole(args.json)
        return _evaluate(args, ctx.device, ctx.world_size, console)


def _evaluate(args: argparse.Namespace, device: torch.device, world: int, console: Console) -> int:
    main_rank = distributed.rank_and_world()[0] == 0
    if device.type == "cuda":
        # cuDNN convolutions default to TF32 on Ampere+; the published numbers are full float32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.allow_tf32
    else:
        keep_freed_memory()  # activations reused, not mapped afresh: A0 with calibration 2.3x faster here
    root = Path(args.data)
    if not root.is_dir():
        raise InputError(f"--data: {root} is not a folder")
    calibration = running.calibration_from_args(args)
    images = _Samples(args)
    run: dict[str, Any] = {"data": str(root), "layout": None, "ground_truth": None, "limit": args.limit,
                           "device": str(device), "tf32": device.type == "cuda" and args.allow_tf32,
                           "batch_size": args.batch_size, "workers": args.workers, "world_size": world,
                           "calibration": None}
    results: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    interrupted = False
    subjects = iter([_file_subject(args, device)]) if args.model else _pytorch_subjects(args, device, calibration)
    try:
        while not interrupted:
            start = time.perf_counter()
            subject = next(subjects, None)  # loads (and calibrates) the next model
            if subject is None:
                break
            samples = images.for_record(subject.record)
            if not results:
                console.status(f"{PROG}: {len(samples)} images ({images.layout.replace('_', ' ')}) from {root}, "
                               f"device {device}, batch {args.batch_size}, {args.workers} workers"
                               + (f", {world} processes" if world > 1 else ""))
            result = _run(subject, samples, args, device)
            record = subject.record
            results.append(model_result(
                name=subject.name, record=record, backend=subject.backend, weights=subject.weights, result=result,
                mflops_fvcore=_fvcore_total(record.arch, record.num_classes) if record else None,
                wall_s=time.perf_counter() - start))
            predictions.extend(_prediction_rows(subject.name, result, samples, root))
            interrupted = result.interrupted
            if not interrupted:
                r = results[-1]
                console.status(f"{subject.name}: top-1 {_pct(r['top1'])}  top-5 {_pct(r['top5'])}  on "
                               f"{r['images']} images ({_num(r['images_per_s'], '.1f')} img/s)")
    except KeyboardInterrupt:
        if world > 1:
            raise
        interrupted = True  # while loading or calibrating: report the models already done

    run["layout"] = images.layout
    if images.layout == GROUND_TRUTH_FILE:
        run["ground_truth"] = str(args.ground_truth or find_ground_truth(root))
    if calibration is not None:
        run["calibration"] = dataclasses.asdict(calibration.describe())
    document = results_document(results, run, partial=interrupted)
    console.result(format_table(results, partial=interrupted))
    console.json(document)
    if args.out and main_rank:
        write_json(args.out, document)
        console.status(f"results written to {args.out}" + (" (partial)" if interrupted else ""))
    if args.save_predictions and main_rank:
        write_predictions(args.save_predictions, predictions)
        console.status(f"predictions written to {args.save_predictions}")
    if args.plot and main_rank:
        plot_pareto(results, args.plot)
        console.status(f"plot written to {args.plot}")
    distributed.barrier("finishing")
    if interrupted:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    sys.exit(main())
