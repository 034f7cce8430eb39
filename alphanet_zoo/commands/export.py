"""``alphanet-export``: an AlphaNet model to a verified ONNX, OpenVINO, torch.export or TorchScript file.

    alphanet-export --arch a0 --format onnx --weights weights/a0            # a folder alphanet-extract wrote
    alphanet-export --arch a0 --format openvino --weights weights/a0        # .xml + .bin; precision auto
    alphanet-export --arch a0 --format onnx --precision int8 --calib-data /data/imagenet/train
    alphanet-export --arch a5 --weights alphanet_pretrained.pth.tar --format pt2
    alphanet-export --arch my_arch.json --weights random --batch-axis 1     # a latency study of any architecture
    alphanet-export --weights runs/ft --format onnx                         # a fine-tuned folder, at its resolution

``--precision`` (default ``auto`` for OpenVINO, ``fp32`` otherwise): ``fp32`` matches PyTorch to
``--tolerance``; ``bf16`` (OpenVINO) and ``int8`` (ONNX, OpenVINO) must agree with the fp32 model on
real images (``--calib-data``, else the built-in test images) to ``--min-cosine`` and, when given,
``--min-top1``/``--min-top5``; ``auto`` times every precision that passes on this machine and keeps
the fastest (`alphanet_zoo.export.deploy`). The file's ``export`` metadata records the outcome.

Exit status: 0 exported and verified; 1 the file failed verification (nothing written) or could
not be written; 2 bad arguments or unreadable inputs; 130 interrupted (Ctrl-C), 143 terminated (SIGTERM):
nothing written, the temporary folder removed.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

from .._io import check_writable_file
from ..errors import UsageError
from ..export import BUILDERS
from ..export.agreement import DEFAULT_THRESHOLDS
from ..export.builders import builder_for, format_of_suffix
from ..export.deploy import PRECISIONS, check_precision, default_precision, export_model
from ..export.images import DEFAULT_CALIB_IMAGES, DEFAULT_VERIFY_IMAGES
from ..export.onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from ..export.verify import DEFAULT_TOLERANCE
from ..weights import HUB, PATH, WeightsLoader, WeightsSpec
from . import flags, running
from .running import Console, cli_main

PROG = "alphanet-export"


def build_parser() -> flags.ArgumentParser:
    parser = flags.command_parser(
        PROG, "Export an AlphaNet model to ONNX, OpenVINO IR, torch.export (pt2), TorchScript, or for phones "
              "ExecuTorch (.pte) and TFLite/LiteRT (.tflite), in fp32, bf16 or int8. Every file is checked and run "
              "against the PyTorch model before it is written under its name.",
        [flags.arch_flags(many=False), flags.weights_flags(),
         flags.output_flags("output file, or an existing folder (default: alphanet_<name>.onnx, .xml, .pt2, .pt, "
                          ".pte or .tflite here)"),
         flags.threads_flags(), flags.seed_flags("seed of the draw of --calib-data images"), flags.json_flags()])
    parser.add_argument("--format", choices=sorted(BUILDERS),
                        help="output format: " + "; ".join(f"{fmt}: {b.description}" for fmt, b in BUILDERS.items())
                             + " (default: from --out's suffix, else onnx)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="fp32; bf16 (openvino); int8 (onnx, openvino, executorch, tflite; calibrated on "
                             "--calib-data); auto: the "
                             "fastest precision that passes verification on this machine (default: auto for "
                             "openvino, fp32 otherwise)")
    parser.add_argument("--calib-data", metavar="DIR",
                        help="a folder of real images (any layout, searched recursively): int8 is calibrated on a "
                             "seeded draw of them and every reduced-precision file verified on others (default: "
                             "verify on the package's built-in test images; auto tries int8 only with this)")
    parser.add_argument("--calib-images", type=flags.integer(1, 100_000), default=DEFAULT_CALIB_IMAGES, metavar="N",
                        help="images to calibrate int8 on")
    parser.add_argument("--verify-images", type=flags.integer(1, 100_000), default=DEFAULT_VERIFY_IMAGES, metavar="N",
                        help="--calib-data images to verify on (none of them among the calibration images)")
    parser.add_argument("--min-cosine", type=flags.number(-1, 1), metavar="C",
                        help="least logit cosine of any image against fp32 PyTorch (default: "
                             f"{DEFAULT_THRESHOLDS['bf16'].min_cosine:g} for bf16 and auto, "
                             f"{DEFAULT_THRESHOLDS['int8'].min_cosine:g} for int8)")
    parser.add_argument("--min-top1", type=flags.number(0, 1), metavar="F",
                        help="least fraction of images whose top-1 class agrees with fp32 PyTorch's (default: 0, "
                             "reported only)")
    parser.add_argument("--min-top5", type=flags.number(0, 1), metavar="F",
                        help="least mean overlap of the top-5 classes with fp32 PyTorch's, as a fraction (default: 0, "
                             "reported only)")
    parser.add_argument("--opset", type=flags.integer(MIN_OPSET, MAX_OPSET), default=DEFAULT_OPSET, metavar="N",
                        help="ONNX opset")
    parser.add_argument("--batch-axis", default="dynamic", metavar="dynamic|N",
                        help="ONNX batch axis: dynamic, or a fixed batch size N")
    parser.add_argument("--batch", dest="batch_axis", help=argparse.SUPPRESS)  # the old spelling
    parser.add_argument("--no-verify", action="store_true",
                        help="skip running the file against PyTorch (the write stays atomic)")
    parser.add_argument("--tolerance", type=flags.number(0, 1, open_low=True), default=DEFAULT_TOLERANCE,
                        metavar="ATOL", help="largest allowed absolute difference of fp32 logits from PyTorch's")
    parser.add_argument("--license", metavar="ID", help="license of the weights to record (default: the weights' own)")
    return parser


def _resolve_format(args: argparse.Namespace) -> str:
    suffix_format = format_of_suffix(Path(args.out).suffix) if args.out else None
    if args.format and suffix_format and args.format != suffix_format:
        raise UsageError(f"--out {args.out} names a {suffix_format} file but --format is {args.format}")
    fmt = args.format or suffix_format or "onnx"
    builder = builder_for(fmt)
    given = [flag for flag, value, default in (("--opset", args.opset, DEFAULT_OPSET),
                                               ("--batch-axis", args.batch_axis, "dynamic")) if value != default]
    if given and not builder.options:
        takers = " and ".join(b.description for b in BUILDERS.values() if b.options)
        raise UsageError(f"--opset and --batch-axis apply to {takers} exports only (--format {fmt} takes any batch)")
    precision = args.precision or default_precision(fmt)
    check_precision(builder, precision)
    builder.supported("fp32")  # a missing runtime fails now, before any slow work
    bars = [flag for flag, value in (("--min-cosine", args.min_cosine), ("--min-top1", args.min_top1),
                                     ("--min-top5", args.min_top5)) if value is not None]
    if bars and precision == "fp32":
        raise UsageError(f"{', '.join(bars)} apply to reduced precision (bf16, int8, auto); an fp32 file must match "
                         "PyTorch to --tolerance")
    if precision == "auto" and args.no_verify:
        raise UsageError("--precision auto verifies and times each precision: it cannot be used with --no-verify")
    for flag, value, default in (("--calib-images", args.calib_images, DEFAULT_CALIB_IMAGES),
                                 ("--verify-images", args.verify_images, DEFAULT_VERIFY_IMAGES)):
        if not args.calib_data and value != default:
            raise UsageError(f"{flag} applies with --calib-data only")
    return fmt


def parse_batch_axis(value: str) -> int | str:
    """``dynamic`` or a positive batch size."""
    if value.strip().lower() == "dynamic":
        return "dynamic"
    try:
        batch = int(value)
    except ValueError:
        batch = 0
    if not 1 <= batch <= 65536:
        raise UsageError(f"--batch-axis must be 'dynamic' or a batch size from 1 to 65536, got {value!r}")
    return batch


def _output_path(out: str | None, name: str, fmt: str) -> Path:
    """The file to write; fails now, before any slow work, if it (or a file beside it) cannot be written."""
    builder = builder_for(fmt)
    default_name = f"alphanet_{name}{builder.suffixes[0]}"
    path = Path(out) if out else Path(default_name)
    if path.is_dir():
        path = path / default_name
    targets = builder.targets(path)
    if len(targets) > 1 and path.suffix.lower() not in builder.suffixes:
        raise UsageError(f"--out {out}: {builder.description} is written as NAME{builder.suffixes[0]} (and "
                         f"{', '.join(t.name for t in builder.targets(Path('NAME' + builder.suffixes[0]))[1:])} "
                         "beside it)")
    for extra in targets[1:]:
        check_writable_file(extra)
    return check_writable_file(path)


@cli_main(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(args.json)
    spec = WeightsSpec.parse(args.weights)
    if args.arch is None and spec.kind not in (PATH, HUB):
        raise UsageError(f"--arch is needed with --weights {spec} (it may be left out for a model folder, whose "
                         "config.json names its architecture)")
    if args.arch:
        name, arch = flags.single_arch(args.arch)
    else:  # the file is named after the folder (or Hub repository)
        name, arch = spec.path.resolve().name if spec.kind == PATH else spec.repo_id.rsplit("/", 1)[-1], None
    fmt = _resolve_format(args)
    batch = parse_batch_axis(args.batch_axis)
    out = _output_path(args.out, name, fmt)
    running.set_threads(args.threads)

    model = WeightsLoader(spec).load(arch, name if args.arch else None)
    running.warn_if_uncalibrated(model)
    record, side = model.pretrained_cfg, model.arch.resolution
    if args.license:
        record = dataclasses.replace(record, license=args.license)
        model.pretrained_cfg = record
    console.status(f"{name}: input {side}x{side}, {record.mflops:.2f} MFLOPs, "
                   f"{record.params:,} parameters, {record.num_classes} classes; weights: {record.source}; "
                   f"license: {record.license or 'none'}")
    verify = not args.no_verify
    result = export_model(
        model, out, fmt, precision=args.precision, opset=args.opset, batch=batch, verify=verify,
        tolerance=args.tolerance, min_cosine=args.min_cosine, min_top1=args.min_top1, min_top5=args.min_top5,
        calib_data=args.calib_data, calib_images=args.calib_images, verify_images=args.verify_images, seed=args.seed,
        threads=args.threads, progress=console.status)
    builder = builder_for(fmt)
    what = builder.description + (f" opset {args.opset}, batch {batch}" if builder.options else "")
    info = result.export_info or {}
    console.status(result.verification.summary() if result.verification else "not verified (--no-verify)")
    if info.get("choice"):
        console.status(f"precision auto: {info['choice']['reason']}")
    written = " and ".join(str(p) for p in result.files)
    console.status(f"wrote {written} ({what}, {result.precision}, {result.size_bytes / 1e6:.1f} MB)")
    console.json({"path": str(out), "files": [str(p) for p in result.files], "format": fmt,
                  "precision": result.precision, "bytes": result.size_bytes,
                  "verification": dataclasses.asdict(result.verification) if result.verification else None,
                  "config": result.metadata, "export": info})
    return 0


if __name__ == "__main__":
    sys.exit(main())
