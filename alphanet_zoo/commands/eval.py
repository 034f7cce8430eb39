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
from pathlib import Path
from typing import Any, Iterator, Sequence

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
    evaluate,
    find_ground_truth,
    labelled_batches,
    labelled_samples,
)
from ..errors import AlphaNetError, InputError, UsageError
from ..eval.loop import Subject, file_subject, gather_or_raise, quiet, rank_error, shard
from ..eval.report import (
    format_table,
    model_result,
    plot_pareto,
    require_matplotlib,
    results_document,
    write_json,
    write_predictions,
)
from ..flops import count_flops_fvcore
from ..imagenet import NUM_CLASSES
from ..model import AlphaNet
from ..preprocessing import EvalCrop
from ..record import ModelRecord
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
                                      unit="batch", leave=False, **quiet()),
                      arch.resolution if arch else record.arch.resolution)
            record = dataclasses.replace(record, calibration=calibration.describe())
            model.pretrained_cfg = record
        yield Subject.of_model(model, device, name or record.name or Path(str(spec)).name, str(spec))


def _file_subject(args: argparse.Namespace, device: torch.device) -> Subject:
    name, arch = flags.single_arch(args.arch) if args.arch else (None, None)
    return file_subject(args.model, device, threads=args.threads, arch=arch, name=name)


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


def _run(subject: Subject, samples: Sequence[Sample], args: argparse.Namespace, device: torch.device) -> EvalResult:
    """Evaluate with a progress bar; on Ctrl-C the result so far comes back marked interrupted.

    Under torchrun each process evaluates its share of whole batches (`_shard`) and the counts and
    predictions of all are gathered (`alphanet_zoo.eval.loop`): the same numbers as one process, bit for bit.
    """

    p = subject.preprocessing
    share = shard(len(samples), args.batch_size)
    batches = labelled_batches(samples, EvalCrop(p), p.crop_size, batch_size=args.batch_size, workers=args.workers,
                               pin_memory=device.type == "cuda", batches=share)
    result = EvalResult()
    total = len(samples) if share is None else sum(len(b) for b in share)
    bar = progress(total=total, desc=subject.name, unit="img", **quiet())

    def on_batch(r: EvalResult, n: int) -> None:
        bar.update(n)
        if r.top1 is not None:
            bar.set_postfix_str(f"top1={r.top1:.2f}%", refresh=False)

    error = None
    try:
        evaluate(subject.classifier, batches, resolution=p.resolution, mean=p.mean, std=p.std,
                 device=subject.device, result=result,
                 skip_bad_images=args.skip_bad_images, keep_predictions=bool(args.save_predictions),
                 on_batch=on_batch)
    except KeyboardInterrupt:
        if distributed.is_distributed():
            raise  # the other processes cannot be asked to stop at the same image: no partial results
        result.interrupted = True
    except AlphaNetError as e:
        if not distributed.is_distributed():
            raise
        error = rank_error(e)
    finally:
        bar.close()
    merged = EvalResult()
    for part in gather_or_raise(result, error, "gathering the evaluation counts"):
        merged.merge(part)
    order = {str(s.path): i for i, s in enumerate(samples)}
    merged.bad_images.sort(key=lambda bad: order.get(str(bad[0]), -1))
    return merged


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
