"""``alphanet-export``: an AlphaNet model to a verified ONNX or TorchScript file.

    alphanet-export --arch a0 --format onnx --weights weights/a0            # a folder alphanet-extract wrote
    alphanet-export --arch a5 --weights alphanet_pretrained.pth.tar --format torchscript
    alphanet-export --arch my_arch.json --weights random --batch-axis 1     # a latency study of any architecture

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

from .onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, to_onnx
from .torchscript_export import to_torchscript
from .verify import DEFAULT_TOLERANCE

PROG = "alphanet-export"
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
FORMAT_OF_SUFFIX = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript"}


def build_parser() -> cli.ArgumentParser:
    parser = cli.command_parser(
        PROG, "Export an AlphaNet model to ONNX or TorchScript. Every file is checked and run against the "
              "PyTorch model before it is written under its name.",
        [cli.arch_flags(required=True, many=False), cli.weights_flags(),
         cli.output_flags("output file, or an existing folder (default: alphanet_<name>.onnx or .pt here)"),
         cli.threads_flags(), cli.json_flags()])
    parser.add_argument("--format", choices=sorted(SUFFIXES), help="output format (default: from --out's suffix, "
                                                                   "else onnx)")
    parser.add_argument("--opset", type=cli.integer(MIN_OPSET, MAX_OPSET), default=DEFAULT_OPSET, metavar="N",
                        help="ONNX opset")
    parser.add_argument("--batch-axis", default="dynamic", metavar="dynamic|N",
                        help="ONNX batch axis: dynamic, or a fixed batch size N")
    parser.add_argument("--batch", dest="batch_axis", help=argparse.SUPPRESS)  # the old spelling
    parser.add_argument("--no-verify", action="store_true",
                        help="skip running the file against PyTorch (the write stays atomic)")
    parser.add_argument("--tolerance", type=cli.number(0, 1, open_low=True), default=DEFAULT_TOLERANCE,
                        metavar="ATOL", help="largest allowed absolute difference of the logits")
    parser.add_argument("--license", metavar="ID", help="license of the weights to record (default: the weights' own)")
    return parser


def _resolve_format(args: argparse.Namespace) -> str:
    suffix_format = FORMAT_OF_SUFFIX.get(Path(args.out).suffix.lower()) if args.out else None
    if args.format and suffix_format and args.format != suffix_format:
        raise UsageError(f"--out {args.out} names a {suffix_format} file but --format is {args.format}")
    fmt = args.format or suffix_format or "onnx"
    if fmt != "onnx" and (args.batch_axis != "dynamic" or args.opset != DEFAULT_OPSET):
        raise UsageError("--opset and --batch-axis apply to ONNX exports only (a TorchScript module takes any batch)")
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
    record = model.pretrained_cfg
    if args.license:
        record = dataclasses.replace(record, license=args.license)
        model.pretrained_cfg = record
    console.status(f"{name}: input {arch.resolution}x{arch.resolution}, {record.mflops:.2f} MFLOPs, "
                   f"{record.params:,} parameters, {record.num_classes} classes; weights: {record.source}; "
                   f"license: {record.license}")
    verify = not args.no_verify
    if fmt == "onnx":
        result = to_onnx(model, out, opset=args.opset, batch=batch, verify=verify, tolerance=args.tolerance)
        what = f"ONNX opset {args.opset}, batch {batch}"
    else:
        result = to_torchscript(model, out, verify=verify, tolerance=args.tolerance)
        what = "TorchScript, frozen"
    console.status(result.verification.summary() if result.verification else "not verified (--no-verify)")
    console.status(f"wrote {out} ({what}, {result.size_bytes / 1e6:.1f} MB)")
    console.json({"path": str(out), "format": fmt, "bytes": result.size_bytes,
                  "verification": dataclasses.asdict(result.verification) if result.verification else None,
                  "config": result.metadata})
    return 0


if __name__ == "__main__":
    sys.exit(main())
