"""``alphanet-eval``: ImageNet top-1/top-5 of AlphaNet models against the paper's table.

    alphanet-eval --arch a0 --supernet alphanet_pretrained.pth.tar --data /data/imagenet/val \\
        --calib-data /data/imagenet/train --workers 8 --output results.json
    alphanet-eval --arch all --pretrained --data /data/imagenet/val --plot pareto.png
    alphanet-eval --onnx alphanet_a0.onnx --data /data/imagenet/val

The results JSON is described in `alphanet_zoo.eval.report`.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from alphanet_zoo._cli import EXIT_INTERRUPTED, CLIError, cli_main, parse_arch, parse_archs, progress
from alphanet_zoo.calibration import calibrate_bn
from alphanet_zoo.config import ArchConfig
from alphanet_zoo.flops import count_flops, count_flops_fvcore
from alphanet_zoo.registry import MODELS
from alphanet_zoo.transforms import EvalTransform, preprocessing_for

from .data import DatasetError, Sample, calibration_batches, eval_loader, open_dataset
from .evaluate import EvalResult, TorchClassifier, evaluate
from .report import (format_table, model_record, plot_pareto, require_matplotlib, results_document, write_json,
                     write_predictions)

PROG = "alphanet-eval"
CALIBRATION_DEFAULTS = {"calib_batches": 64, "calib_batch_size": 256, "seed": 0}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Evaluate AlphaNet models on ImageNet (top-1, top-5, FLOPs, throughput) with the "
                               "official preprocessing, beside the paper's numbers.")
    p.add_argument("--arch", help="model name or alias (a0 ... a6, a5_base), 'all', or an architecture .json; "
                                  "optional with --onnx when the file stores its architecture")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--weights", metavar="W", help="local weights: a save_pretrained folder, a .safetensors "
                                                        "file, or a supernet checkpoint")
    weights.add_argument("--supernet", metavar="CKPT", help="supernet checkpoint (official release or ours); "
                                                            "each model is extracted from it")
    weights.add_argument("--pretrained", action="store_true", help="published weights from the Hugging Face Hub")
    weights.add_argument("--onnx", metavar="FILE", help="evaluate an exported ONNX file with ONNX Runtime")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="validation images: synset folders (DIR/n01440764/*.JPEG), or a flat folder with "
                        "LOC_val_solution.csv or ILSVRC2012_validation_ground_truth.txt")
    p.add_argument("--ground-truth", metavar="FILE", help="ground-truth file of a flat folder, when not inside it")
    p.add_argument("--label-map", metavar="FILE",
                   help="the devkit's data/meta.mat or a map_clsloc.txt, to read the devkit's "
                        "ILSVRC2012_validation_ground_truth.txt (found beside it when omitted)")
    p.add_argument("--calib-data", metavar="TRAIN_DIR",
                   help="re-calibrate BatchNorm on these training images (synset folders) first, as the "
                        "official test script does")
    p.add_argument("--calib-batches", type=int, metavar="N", help="calibration batches (default 64)")
    p.add_argument("--calib-batch-size", type=int, metavar="N", help="calibration batch size (default 256)")
    p.add_argument("--seed", type=int, help="calibration seed (default 0): same seed, same BN statistics")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default 256)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="data loading processes for decoding and resizing (default: min(8, CPUs); 0: in process)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N images (in the fixed order)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip unreadable or corrupt images (counted and reported) instead of stopping")
    p.add_argument("--output", metavar="results.json", help="write the results as JSON (atomically)")
    p.add_argument("--save-predictions", metavar="preds.jsonl",
                   help="write one JSON line per image: model, path, target, top5 (class indices)")
    p.add_argument("--plot", metavar="pareto.png", help="plot top-1 against MFLOPs beside the paper's points "
                                                        "(needs matplotlib: the 'plot' extra)")
    return p


def _check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    for name in ("batch_size", "calib_batches", "calib_batch_size", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.workers < 0:
        raise CLIError(f"--workers must be 0 or more, got {args.workers}")
    given = [f"--{n.replace('_', '-')}" for n in CALIBRATION_DEFAULTS if getattr(args, n) is not None]
    if given and not args.calib_data:
        raise CLIError(f"{', '.join(given)} only apply with --calib-data")
    for name, default in CALIBRATION_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.onnx:
        if args.calib_data:
            raise CLIError("--calib-data re-calibrates a PyTorch model; it does not apply to --onnx")
        if args.arch and args.arch.strip().lower() == "all":
            raise CLIError("--onnx evaluates one file; give its --arch by name, or none")
    elif not args.arch:
        parser.error("--arch is required (unless --onnx names a file that stores its architecture)")
    elif not (args.weights or args.supernet or args.pretrained):
        raise CLIError("no weights given: pass --weights W, --supernet CKPT, --pretrained or --onnx FILE")
    for option in ("output", "save_predictions", "plot"):
        path = getattr(args, option)
        if path is not None:
            parent = Path(path).parent
            if not parent.is_dir():
                raise CLIError(f"cannot write --{option.replace('_', '-')} {path}: folder {parent} does not exist")
    if args.plot:
        try:
            require_matplotlib()
        except ImportError as e:
            raise CLIError(str(e)) from None


def _device(choice: str | None) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA device is available to PyTorch")
    return torch.device(choice or ("cuda" if torch.cuda.is_available() else "cpu"))


def _published(arch: ArchConfig | None) -> tuple[str | None, Any]:
    """The registry entry whose architecture is ``arch`` (paper numbers only for exactly that net)."""
    return next(((n, m) for n, m in MODELS.items() if arch is not None and m.arch == arch), (None, None))


class _Weights:
    """Loads each model from the chosen source; a supernet checkpoint is read once for all models."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self._supernet = args, None

    def describe(self) -> str:
        a = self.args
        return (f"supernet:{a.supernet}" if a.supernet else f"weights:{a.weights}" if a.weights
                else "pretrained (Hugging Face Hub)")

    def load(self, arch: ArchConfig) -> torch.nn.Module:
        a = self.args
        if a.supernet:
            if self._supernet is None:
                from alphanet_zoo.supernet import Supernet

                self._supernet = Supernet.from_checkpoint(a.supernet)
            return self._supernet.extract(arch)
        import alphanet_zoo

        if a.weights:
            return alphanet_zoo.load(arch, weights=a.weights)
        return alphanet_zoo.load(arch, pretrained=True)


@functools.lru_cache(maxsize=None)
def _fvcore_total(arch: ArchConfig) -> float | None:
    """fvcore's MFLOPs of ``arch`` (traced once per architecture: the count does not depend on weights)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fvcore's tracing warns about torch.jit deprecations
            return count_flops_fvcore(_shape_model(arch))["total"]
    except Exception:  # fvcore is a cross-check only; a tracing failure must not lose an evaluation
        return None


def _run_loop(name: str, classifier, samples: Sequence[Sample], transform, resolution: int,
              args: argparse.Namespace, device: torch.device, keep_predictions: bool) -> EvalResult:
    """Evaluate with a progress bar; on Ctrl-C the result so far comes back marked interrupted."""
    loader = eval_loader(samples, transform, resolution, batch_size=args.batch_size, workers=args.workers,
                         pin_memory=device.type == "cuda")
    result = EvalResult()
    bar = progress(None, total=len(samples), desc=name, unit="img")

    def on_batch(r: EvalResult, n: int) -> None:
        bar.update(n)
        if r.top1 is not None:
            bar.set_postfix_str(f"top1={r.top1:.2f}%", refresh=False)

    try:
        evaluate(classifier, loader, result=result, skip_bad_images=args.skip_bad_images,
                 keep_predictions=keep_predictions, on_batch=on_batch)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        bar.close()
    return result


def _prediction_rows(name: str, result: EvalResult, samples: Sequence[Sample], root: Path):
    for p in result.predictions:
        path = samples[p.index].path
        try:
            shown = path.relative_to(root).as_posix()
        except ValueError:
            shown = str(path)
        yield {"model": name, "path": shown, "target": p.target, "top5": p.top5}


@cli_main(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(args, parser)
    device = _device(args.device)
    try:
        samples, layout = open_dataset(args.data, args.ground_truth, args.label_map)
    except DatasetError as e:
        raise CLIError(str(e)) from None
    if args.limit:
        samples = samples[:args.limit]
    root = Path(args.data)
    run = {"data": str(root), "layout": layout, "ground_truth": args.ground_truth, "limit": args.limit,
           "device": str(device), "batch_size": args.batch_size, "workers": args.workers,
           "calibration": {"data": args.calib_data, "batches": args.calib_batches,
                           "batch_size": args.calib_batch_size, "seed": args.seed} if args.calib_data else None}
    print(f"{PROG}: {len(samples)} images ({layout.replace('_', ' ')}) from {root}, device {device}, "
          f"batch {args.batch_size}, {args.workers} workers", flush=True)

    records: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    keep = bool(args.save_predictions)
    interrupted = False
    try:
        if args.onnx:
            jobs = [_onnx_job(args)]
        else:
            jobs = parse_archs(args.arch)
            weights = _Weights(args)
        for job in jobs:
            start = time.perf_counter()
            if args.onnx:
                name, arch, classifier, transform = job
                resolution = transform.preprocessing.resolution
                fvcore = _fvcore_total(arch) if arch is not None else None
                params = _param_count(arch) if arch is not None else None
                backend, source, calibrated = "onnxruntime", f"onnx:{args.onnx}", False
            else:
                name, arch = job
                model = weights.load(arch).to(device).eval()
                if args.calib_data:
                    batches = calibration_batches(args.calib_data, arch.resolution, args.calib_batches,
                                                  args.calib_batch_size, args.seed, args.workers)
                    calibrate_bn(model, batches, args.calib_batches)
                transform, resolution = EvalTransform(preprocessing_for(arch)), arch.resolution
                classifier = TorchClassifier(model, device)
                fvcore = _fvcore_total(arch)
                params = sum(p.numel() for p in model.parameters())
                backend, source, calibrated = "pytorch", weights.describe(), bool(args.calib_data)
            result = _run_loop(name, classifier, samples, transform, resolution, args, device, keep)
            _, info = _published(arch)
            record = model_record(
                name=name, arch=arch.to_dict() if arch is not None else None, backend=backend, weights=source,
                calibrated=calibrated, result=result, mflops=count_flops(arch) if arch is not None else None,
                mflops_fvcore=fvcore, params=params, wall_s=time.perf_counter() - start,
                published_top1=info.published_top1 if info else None,
                published_top5=info.published_top5 if info else None,
                published_mflops=info.published_mflops if info else None)
            records.append(record)
            predictions.extend(_prediction_rows(name, result, samples, root))
            if result.interrupted:
                interrupted = True
                break
            print(f"{name}: top-1 {_pct(record['top1'])}  top-5 {_pct(record['top5'])}  on {record['images']} images"
                  f"  ({_num(record['images_per_s'], '.1f')} img/s)", flush=True)
    except KeyboardInterrupt:
        interrupted = True  # interrupted while loading or calibrating: report the models already done
    except DatasetError as e:  # an unreadable image (BadImageError), bad calibration folder
        raise CLIError(str(e)) from None

    print()
    print(format_table(records, partial=interrupted))
    if args.output:
        write_json(args.output, results_document(records, run, partial=interrupted))
        print(f"results written to {args.output}" + (" (partial)" if interrupted else ""))
    if args.save_predictions:
        write_predictions(args.save_predictions, predictions)
        print(f"predictions written to {args.save_predictions}")
    if args.plot:
        plot_pareto(records, args.plot)
        print(f"plot written to {args.plot}")
    if interrupted:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _shape_model(arch: ArchConfig) -> torch.nn.Module:
    """A randomly initialised model of ``arch``: FLOPs and parameter counts do not depend on weights."""
    from alphanet_zoo.model import AlphaNet

    return AlphaNet(arch).eval()


def _param_count(arch: ArchConfig) -> int:
    from alphanet_zoo.model import AlphaNet

    with torch.device("meta"):
        return sum(p.numel() for p in AlphaNet(arch).parameters())


def _onnx_job(args: argparse.Namespace):
    """(name, arch or None, classifier, transform) for ``--onnx``: resolution from the file, checked
    against ``--arch`` when both are known."""
    from .onnx_model import OnnxClassifier, OnnxModelError

    try:
        classifier = OnnxClassifier(args.onnx, device=_device(args.device).type)
        stored_arch = classifier.arch()
        preprocessing = classifier.preprocessing()
    except OnnxModelError as e:
        raise CLIError(str(e)) from None
    name, arch = parse_arch(args.arch) if args.arch else (None, stored_arch)
    if stored_arch is not None and arch != stored_arch:
        raise CLIError(f"--arch {args.arch} is not the architecture stored in {args.onnx}")
    if preprocessing is None:
        if arch is None:
            raise CLIError(f"cannot tell the input resolution of {args.onnx} (dynamic input size and no "
                           "'preprocessing' metadata): give --arch")
        preprocessing = preprocessing_for(arch)
    if arch is not None and preprocessing.resolution != arch.resolution:
        raise CLIError(f"{args.onnx} takes {preprocessing.resolution}x{preprocessing.resolution} inputs but "
                       f"{name or 'its architecture'} runs at {arch.resolution}")
    static = classifier.static_resolution()
    if static is not None and static != preprocessing.resolution:
        raise CLIError(f"{args.onnx}: input size {static} disagrees with its preprocessing "
                       f"resolution {preprocessing.resolution}")
    if name is None:
        name = _published(arch)[0] or classifier.model_name() or Path(args.onnx).stem
    return name, arch, classifier, EvalTransform(preprocessing)


if __name__ == "__main__":
    sys.exit(main())
