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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from alphanet_zoo._cli import EXIT_INTERRUPTED, CLIError, cli_main, parse_arch, parse_archs, progress
from alphanet_zoo.calibration import calibrate_bn
from alphanet_zoo.config import ArchConfig
from alphanet_zoo.flops import count_flops, count_flops_fvcore
from alphanet_zoo.model import AlphaNet
from alphanet_zoo.registry import MODELS
from alphanet_zoo.transforms import EvalTransform, preprocessing_for

from .data import (GROUND_TRUTH_FILE, DatasetError, Sample, calibration_batches, eval_loader, find_ground_truth,
                   open_dataset)
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
    weights.add_argument("--weights", metavar="W", help="local weights: a save_pretrained folder, a folder of them "
                                                        "per model (alphanet-extract --out), a .safetensors file, "
                                                        "or a supernet checkpoint")
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
    p.add_argument("--allow-tf32", action="store_true",
                   help="let CUDA convolutions and matmuls use TF32 (faster on Ampere and later, less exact; "
                        "off by default so that scores match full float32 evaluation)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N images (in the fixed order)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip unreadable or corrupt images (counted and reported) instead of stopping")
    p.add_argument("--output", metavar="results.json", help="write the results as JSON (atomically)")
    p.add_argument("--save-predictions", metavar="preds.jsonl",
                   help="write one JSON line per image: model, path, target, top5 (class indices)")
    p.add_argument("--plot", metavar="pareto.png", help="plot top-1 against MFLOPs beside the paper's points "
                                                        "(needs matplotlib: the 'plot' extra)")
    return p


def _check_args(args: argparse.Namespace) -> None:
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
        raise CLIError("--arch is required (unless --onnx names a file that stores its architecture)")
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


def _device(choice: str | None, onnx: bool = False) -> torch.device:
    """The device to run on: as chosen, else CUDA when PyTorch (or, for --onnx, ONNX Runtime) has it."""
    if onnx:
        import onnxruntime as ort

        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        if choice == "cuda" and not has_cuda:
            raise CLIError("--device cuda: this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    else:
        has_cuda = torch.cuda.is_available()
        if choice == "cuda" and not has_cuda:
            raise CLIError("--device cuda: no CUDA device is available to PyTorch")
    return torch.device(choice or ("cuda" if has_cuda else "cpu"))


def _published(arch: ArchConfig | None) -> tuple[str | None, Any]:
    """The registry entry whose architecture is ``arch`` (paper numbers only for exactly that net)."""
    return next(((n, m) for n, m in MODELS.items() if arch is not None and m.arch == arch), (None, None))


@dataclass
class _ModelUnderTest:
    """One model ready to evaluate, and what the report says about it."""

    name: str
    arch: ArchConfig | None
    classifier: Callable[[torch.Tensor], torch.Tensor]
    transform: EvalTransform
    backend: str
    weights: str
    calibrated: bool
    params: int | None


class _Weights:
    """Loads each model from the chosen source; a supernet checkpoint is read once for all models."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self._supernet = args, None

    def describe(self) -> str:
        a = self.args
        return (f"supernet:{a.supernet}" if a.supernet else f"weights:{a.weights}" if a.weights
                else "pretrained (Hugging Face Hub)")

    def load(self, name: str, arch: ArchConfig) -> torch.nn.Module:
        a = self.args
        if a.supernet:
            if self._supernet is None:
                from alphanet_zoo.supernet import Supernet

                self._supernet = Supernet.from_checkpoint(a.supernet)
            return self._supernet.extract(arch)
        import alphanet_zoo

        if a.weights:
            return alphanet_zoo.load(arch, weights=self.weights_for(name))
        return alphanet_zoo.load(arch, pretrained=True)

    def weights_for(self, name: str) -> Path:
        """``--weights`` for one model: a folder of per-model folders (``alphanet-extract --out``) gives
        its ``<name>/`` sub-folder; anything else is used as it is."""
        path = Path(self.args.weights)
        if path.is_dir() and not (path / "config.json").is_file() and (path / name).is_dir():
            return path / name
        return path


def _pytorch_models(args: argparse.Namespace, device: torch.device) -> Iterator[_ModelUnderTest]:
    """Each ``--arch`` model, loaded (and BN-calibrated with ``--calib-data``) when its turn comes."""
    weights = _Weights(args)
    for name, arch in parse_archs(args.arch):
        model = weights.load(name, arch).to(device).eval()
        if args.calib_data:
            batches = calibration_batches(args.calib_data, arch.resolution, args.calib_batches,
                                          args.calib_batch_size, args.seed, args.workers)
            calibrate_bn(model, progress(batches, total=len(batches), desc=f"calibrating {name}", unit="batch",
                                         leave=False))
        yield _ModelUnderTest(name, arch, TorchClassifier(model, device), EvalTransform(preprocessing_for(arch)),
                              "pytorch", weights.describe(), bool(args.calib_data),
                              sum(p.numel() for p in model.parameters()))


def _onnx_model(args: argparse.Namespace, device: torch.device) -> Iterator[_ModelUnderTest]:
    """The ``--onnx`` file: resolution from its metadata or input shape, checked against ``--arch``
    when both are known; its architecture (metadata or ``--arch``) gives FLOPs and paper numbers."""
    from .onnx_model import OnnxClassifier, OnnxModelError

    try:
        classifier = OnnxClassifier(args.onnx, device=device.type)
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
    yield _ModelUnderTest(name, arch, classifier, EvalTransform(preprocessing), "onnxruntime",
                          f"onnx:{args.onnx}", False, _param_count(arch) if arch is not None else None)


@functools.lru_cache(maxsize=None)
def _fvcore_total(arch: ArchConfig) -> float | None:
    """fvcore's MFLOPs of ``arch`` (traced once per architecture: the count does not depend on weights)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fvcore's tracing warns about torch.jit deprecations
            return count_flops_fvcore(_shape_model(arch))["total"]
    except Exception:  # fvcore is a cross-check only; a tracing failure must not lose an evaluation
        return None


def _shape_model(arch: ArchConfig) -> torch.nn.Module:
    """A randomly initialised model of ``arch``: FLOPs do not depend on the weights."""
    return AlphaNet(arch).eval()


def _param_count(arch: ArchConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in AlphaNet(arch).parameters())


def _run_loop(m: _ModelUnderTest, samples: Sequence[Sample], args: argparse.Namespace,
              device: torch.device) -> EvalResult:
    """Evaluate with a progress bar; on Ctrl-C the result so far comes back marked interrupted."""
    loader = eval_loader(samples, m.transform, m.transform.preprocessing.resolution, batch_size=args.batch_size,
                         workers=args.workers, pin_memory=device.type == "cuda")
    result = EvalResult()
    bar = progress(None, total=len(samples), desc=m.name, unit="img")

    def on_batch(r: EvalResult, n: int) -> None:
        bar.update(n)
        if r.top1 is not None:
            bar.set_postfix_str(f"top1={r.top1:.2f}%", refresh=False)

    try:
        evaluate(m.classifier, loader, result=result, skip_bad_images=args.skip_bad_images,
                 keep_predictions=bool(args.save_predictions), on_batch=on_batch)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        bar.close()
    return result


def _record(m: _ModelUnderTest, result: EvalResult, wall_s: float) -> dict[str, Any]:
    _, info = _published(m.arch)
    return model_record(
        name=m.name, arch=m.arch.to_dict() if m.arch is not None else None, backend=m.backend, weights=m.weights,
        calibrated=m.calibrated, result=result, mflops=count_flops(m.arch) if m.arch is not None else None,
        mflops_fvcore=_fvcore_total(m.arch) if m.arch is not None else None, params=m.params, wall_s=wall_s,
        published_top1=info.published_top1 if info else None, published_top5=info.published_top5 if info else None,
        published_mflops=info.published_mflops if info else None)


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
    args = build_parser().parse_args(argv)
    _check_args(args)
    device = _device(args.device, onnx=bool(args.onnx))
    if device.type == "cuda" and not args.onnx:
        # cuDNN convolutions default to TF32 on Ampere+; the published numbers are full float32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.allow_tf32
    try:
        samples, layout = open_dataset(args.data, args.ground_truth, args.label_map)
    except DatasetError as e:
        raise CLIError(str(e)) from None
    samples = samples[:args.limit] if args.limit else samples
    root = Path(args.data)
    ground_truth = args.ground_truth or (find_ground_truth(root) if layout == GROUND_TRUTH_FILE else None)
    run = {"data": str(root), "layout": layout, "ground_truth": str(ground_truth) if ground_truth else None,
           "limit": args.limit, "device": str(device), "tf32": device.type == "cuda" and args.allow_tf32,
           "batch_size": args.batch_size, "workers": args.workers,
           "calibration": {"data": args.calib_data, "batches": args.calib_batches,
                           "batch_size": args.calib_batch_size, "seed": args.seed} if args.calib_data else None}
    print(f"{PROG}: {len(samples)} images ({layout.replace('_', ' ')}) from {root}, device {device}, "
          f"batch {args.batch_size}, {args.workers} workers", flush=True)

    records: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    interrupted = False
    models = _onnx_model(args, device) if args.onnx else _pytorch_models(args, device)
    try:
        while not interrupted:
            start = time.perf_counter()
            m = next(models, None)  # loads (and calibrates) the next model
            if m is None:
                break
            result = _run_loop(m, samples, args, device)
            records.append(_record(m, result, time.perf_counter() - start))
            predictions.extend(_prediction_rows(m.name, result, samples, root))
            interrupted = result.interrupted
            r = records[-1]
            if not interrupted:
                print(f"{m.name}: top-1 {_pct(r['top1'])}  top-5 {_pct(r['top5'])}  on {r['images']} images  "
                      f"({_num(r['images_per_s'], '.1f')} img/s)", flush=True)
    except KeyboardInterrupt:
        interrupted = True  # while loading or calibrating: report the models already done
    except DatasetError as e:  # an unreadable image (BadImageError), a bad calibration folder
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


if __name__ == "__main__":
    sys.exit(main())
