"""``alphanet-export``: an AlphaNet model to a verified ONNX, OpenVINO, torch.export or TorchScript file.

    alphanet-export --arch a0 --format onnx --weights weights/a0            # a folder alphanet-extract wrote
    alphanet-export --arch a0 --format openvino --weights weights/a0        # .xml + .bin; precision auto
    alphanet-export --arch a0 --format onnx --precision int8 --calib-data /data/imagenet/train
    alphanet-export --arch a5 --weights alphanet_pretrained.pth.tar --format pt2
    alphanet-export --arch my_arch.json --weights random --batch-axis 1     # a latency study of any architecture

``--precision`` (default ``auto`` for OpenVINO, ``fp32`` otherwise): ``fp32`` matches PyTorch to
``--tolerance``; ``bf16`` (OpenVINO) and ``int8`` (ONNX, OpenVINO) must agree with the fp32 model on
real images (``--calib-data``, else the built-in test images) to ``--min-cosine`` and, when given,
``--min-top1``/``--min-top5``; ``auto`` times every precision that passes on this machine and keeps
the fastest (`alphanet_zoo.export.deploy`). The file's ``export`` metadata records the outcome.

Exit status: 0 exported and verified; 1 the file failed verification (nothing written) or could
not be written; 2 bad arguments or unreadable inputs; 130 interrupted (nothing written).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

from alphanet_zoo import cli
from alphanet_zoo.cli import Console, cli_main
from alphanet_zoo.errors import UsageError

from .agreement import DEFAULT_THRESHOLDS
from .deploy import PRECISIONS, builder_for, check_precision, default_precision, export_model
from .images import DEFAULT_CALIB_IMAGES, DEFAULT_VERIFY_IMAGES
from .onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from .openvino_export import require_openvino
from .verify import DEFAULT_TOLERANCE

PROG = "alphanet-export"
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "pt2": ".pt2", "torchscript": ".pt"}
FORMAT_OF_SUFFIX = {".onnx": "onnx", ".xml": "openvino", ".pt2": "pt2", ".pt": "torchscript", ".ts": "torchscript",
                    ".torchscript": "torchscript"}


def build_parser() -> cli.ArgumentParser:
    parser = cli.command_parser(
        PROG, "Export an AlphaNet model to ONNX, OpenVINO IR, torch.export (pt2) or TorchScript, in fp32, bf16 or "
              "int8. Every file is checked and run against the PyTorch model before it is written under its name.",
        [cli.arch_flags(required=True, many=False), cli.weights_flags(),
         cli.output_flags("output file, or an existing folder (default: alphanet_<name>.onnx, .xml, .pt2 or .pt "
                          "here)"),
         cli.threads_flags(), cli.seed_flags("seed of the draw of --calib-data images"), cli.json_flags()])
    parser.add_argument("--format", choices=sorted(SUFFIXES),
                        help="output format: onnx, openvino (IR .xml + .bin), pt2 (torch.export) or torchscript "
                             "(deprecated upstream) (default: from --out's suffix, else onnx)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="fp32; bf16 (openvino); int8 (onnx, openvino; calibrated on --calib-data); auto: the "
                             "fastest precision that passes verification on this machine (default: auto for "
                             "openvino, fp32 otherwise)")
    parser.add_argument("--calib-data", metavar="DIR",
                        help="a folder of real images (any layout, searched recursively): int8 is calibrated on a "
                             "seeded draw of them and every reduced-precision file verified on others (default: "
                             "verify on the package's built-in test images; auto tries int8 only with this)")
    parser.add_argument("--calib-images", type=cli.integer(1, 100_000), default=DEFAULT_CALIB_IMAGES, metavar="N",
                        help="images to calibrate int8 on")
    parser.add_argument("--verify-images", type=cli.integer(1, 100_000), default=DEFAULT_VERIFY_IMAGES, metavar="N",
                        help="--calib-data images to verify on (none of them among the calibration images)")
    parser.add_argument("--min-cosine", type=cli.number(-1, 1), metavar="C",
                        help="least logit cosine of any image against fp32 PyTorch (default: "
                             f"{DEFAULT_THRESHOLDS['bf16'].min_cosine:g} for bf16 and auto, "
                             f"{DEFAULT_THRESHOLDS['int8'].min_cosine:g} for int8)")
    parser.add_argument("--min-top1", type=cli.number(0, 1), metavar="F",
                        help="least fraction of images whose top-1 class agrees with fp32 PyTorch's (default: 0, "
                             "reported only)")
    parser.add_argument("--min-top5", type=cli.number(0, 1), metavar="F",
                        help="least mean overlap of the top-5 classes with fp32 PyTorch's, as a fraction (default: 0, "
                             "reported only)")
    parser.add_argument("--opset", type=cli.integer(MIN_OPSET, MAX_OPSET), default=DEFAULT_OPSET, metavar="N",
                        help="ONNX opset")
    parser.add_argument("--batch-axis", default="dynamic", metavar="dynamic|N",
                        help="ONNX batch axis: dynamic, or a fixed batch size N")
    parser.add_argument("--batch", dest="batch_axis", help=argparse.SUPPRESS)  # the old spelling
    parser.add_argument("--no-verify", action="store_true",
                        help="skip running the file against PyTorch (the write stays atomic)")
    parser.add_argument("--tolerance", type=cli.number(0, 1, open_low=True), default=DEFAULT_TOLERANCE,
                        metavar="ATOL", help="largest allowed absolute difference of fp32 logits from PyTorch's")
    parser.add_argument("--license", metavar="ID", help="license of the weights to record (default: the weights' own)")
    return parser


def _resolve_format(args: argparse.Namespace) -> str:
    suffix_format = FORMAT_OF_SUFFIX.get(Path(args.out).suffix.lower()) if args.out else None
    if args.format and suffix_format and args.format != suffix_format:
        raise UsageError(f"--out {args.out} names a {suffix_format} file but --format is {args.format}")
    fmt = args.format or suffix_format or "onnx"
    if fmt != "onnx" and (args.batch_axis != "dynamic" or args.opset != DEFAULT_OPSET):
        raise UsageError("--opset and --batch-axis apply to ONNX exports only (the other formats take any batch)")
    precision = args.precision or default_precision(fmt)
    check_precision(builder_for(fmt), precision)
    if fmt == "openvino":
        require_openvino()  # before any slow work
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
    """The file to write; fails now, before any slow work, if it cannot be written."""
    from alphanet_zoo._io import check_writable_file

    default_name = f"alphanet_{name}{SUFFIXES[fmt]}"
    path = Path(out) if out else Path(default_name)
    if path.is_dir():
        path = path / default_name
    if fmt == "openvino":
        if path.suffix.lower() != ".xml":
            raise UsageError(f"--out {out}: an OpenVINO IR is written as NAME.xml (and NAME.bin beside it)")
        check_writable_file(path.with_suffix(".bin"))
    return check_writable_file(path)


@cli_main(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    from alphanet_zoo.weights import WeightsLoader

    args = build_parser().parse_args(argv)
    console = Console(args.json)
    name, arch = cli.single_arch(args.arch)
    fmt = _resolve_format(args)
    batch = parse_batch_axis(args.batch_axis)
    out = _output_path(args.out, name, fmt)
    cli.set_threads(args.threads)

    model = WeightsLoader(args.weights).load(arch, name)
    cli.warn_if_uncalibrated(model)
    record = model.pretrained_cfg
    if args.license:
        record = dataclasses.replace(record, license=args.license)
        model.pretrained_cfg = record
    console.status(f"{name}: input {arch.resolution}x{arch.resolution}, {record.mflops:.2f} MFLOPs, "
                   f"{record.params:,} parameters, {record.num_classes} classes; weights: {record.source}; "
                   f"license: {record.license}")
    verify = not args.no_verify
    result = export_model(
        model, out, fmt, precision=args.precision, opset=args.opset, batch=batch, verify=verify,
        tolerance=args.tolerance, min_cosine=args.min_cosine, min_top1=args.min_top1, min_top5=args.min_top5,
        calib_data=args.calib_data, calib_images=args.calib_images, verify_images=args.verify_images, seed=args.seed,
        threads=args.threads, progress=console.status)
    what = {"onnx": f"ONNX opset {args.opset}, batch {batch}", "openvino": "OpenVINO IR", "pt2": "torch.export",
            "torchscript": "TorchScript, frozen"}[fmt]
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
