"""``alphanet-export``: an AlphaNet model to a verified ONNX or TorchScript file.

    alphanet-export --arch a0 --format onnx                       # pretrained weights from the Hub
    alphanet-export --arch a5 --supernet alphanet_pretrained.pth.tar --format torchscript
    alphanet-export --arch my_arch.json --random-init --batch 1   # a latency study of any architecture

Exit status: 0 exported and verified; 1 the file failed verification (nothing written);
2 bad arguments or unreadable inputs; 130 interrupted (nothing written).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from alphanet_zoo._cli import CLIError, cli_main, parse_arch
from alphanet_zoo.config import ArchConfig

from .metadata import RANDOM_INIT, export_metadata
from .onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, to_onnx
from .torchscript_export import to_torchscript
from .verify import DEFAULT_TOLERANCE, ExportVerificationError

PROG = "alphanet-export"
EXIT_VERIFICATION_FAILED = 1
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
FORMAT_OF_SUFFIX = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript"}
WEIGHT_CHOICES = ("--supernet CKPT (the AlphaNet supernet checkpoint, e.g. alphanet_pretrained.pth.tar), "
                  "--weights PATH (a save_pretrained folder, .safetensors file or supernet checkpoint) "
                  "or --random-init (untrained weights, for latency studies)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Export an AlphaNet model to ONNX or TorchScript. Every file is checked "
                               "and run against the PyTorch model before it is written under its name.")
    parser.add_argument("--arch", required=True,
                        help="a published model (a0..a6, a5_base, or an alias) or an architecture .json file")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", action="store_true",
                         help="the published weights from the Hugging Face Hub (the default without a weights flag)")
    weights.add_argument("--supernet", metavar="CKPT",
                         help="extract the subnet's weights from a supernet checkpoint (official or ours)")
    weights.add_argument("--weights", metavar="PATH",
                         help="a save_pretrained folder, a .safetensors file or a supernet checkpoint")
    weights.add_argument("--random-init", action="store_true",
                         help="untrained weights, for latency studies of an architecture")
    parser.add_argument("--format", choices=sorted(SUFFIXES),
                        help="output format (default: from --out's suffix, else onnx)")
    parser.add_argument("--out", metavar="PATH",
                        help="output file or existing folder (default: alphanet_<name>.onnx or .pt here)")
    parser.add_argument("--opset", type=int, metavar="N",
                        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})")
    parser.add_argument("--batch", metavar="dynamic|N",
                        help="ONNX batch axis: dynamic (default) or a fixed batch size N")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip running the file against PyTorch (the write stays atomic)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="ATOL",
                        help=f"largest allowed absolute difference of the logits (default {DEFAULT_TOLERANCE:g})")
    parser.add_argument("--license", metavar="ID",
                        help="license of the weights to record (default: that of the weights; "
                             f"'{RANDOM_INIT}' with --random-init)")
    return parser


def _resolve_format(args: argparse.Namespace) -> str:
    suffix_format = FORMAT_OF_SUFFIX.get(Path(args.out).suffix.lower()) if args.out else None
    if args.format and suffix_format and args.format != suffix_format:
        raise CLIError(f"--out {args.out} names a {suffix_format} file but --format is {args.format}")
    fmt = args.format or suffix_format or "onnx"
    if fmt != "onnx":
        for flag, value in (("--opset", args.opset), ("--batch", args.batch)):
            if value is not None:
                raise CLIError(f"{flag} applies to ONNX exports only (a TorchScript module takes any batch size)")
    return fmt


def _parse_batch(value: str | None) -> int | str:
    if value is None or value.strip().lower() == "dynamic":
        return "dynamic"
    try:
        batch = int(value)
    except ValueError:
        batch = 0
    if batch < 1:
        raise CLIError(f"--batch must be 'dynamic' or a positive integer, got {value!r}")
    return batch


def _output_path(out: str | None, name: str, fmt: str) -> Path:
    """The file to write; fails now, before any slow work, if it cannot be written."""
    default_name = f"alphanet_{name}{SUFFIXES[fmt]}"
    path = Path(out) if out else Path(default_name)
    if path.is_dir():
        path = path / default_name
    parent = path.parent
    if not parent.exists():
        raise CLIError(f"cannot write {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise CLIError(f"cannot write {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"cannot write {path}: folder {parent} is not writable")
    return path


def _registry_name(arch: ArchConfig) -> str | None:
    from alphanet_zoo.registry import MODELS

    return next((n for n, info in MODELS.items() if info.arch == arch), None)


def _load_model(args: argparse.Namespace, name: str, arch: ArchConfig):
    """(model in eval mode, where its weights came from, their license or None for the model's own)."""
    import alphanet_zoo
    from alphanet_zoo import AlphaNet, Supernet, WeightsIntegrityError, WeightsUnavailableError

    if args.random_init:
        return AlphaNet(arch).eval(), "random initialisation (untrained)", RANDOM_INIT
    if args.supernet:
        model = Supernet.from_checkpoint(args.supernet).extract(arch)
        return model, f"extracted from the supernet checkpoint {Path(args.supernet).name}", None
    if args.weights:
        return alphanet_zoo.load(arch, weights=args.weights), None, None
    published = _registry_name(arch)
    try:
        return alphanet_zoo.load(published, pretrained=True), None, None
    except WeightsUnavailableError as e:
        reason = str(e).split(". ")[0]
        raise CLIError(f"pretrained weights for {published} are unavailable ({reason}); pass {WEIGHT_CHOICES}") \
            from None
    except WeightsIntegrityError as e:
        raise CLIError(str(e)) from None


@cli_main(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name, arch = parse_arch(args.arch)
    fmt = _resolve_format(args)
    batch = _parse_batch(args.batch)
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise CLIError(f"--opset must be from {MIN_OPSET} to {MAX_OPSET}, got {opset}")
    if not args.tolerance > 0:
        raise CLIError(f"--tolerance must be positive, got {args.tolerance}")
    if not (args.random_init or args.supernet or args.weights) and _registry_name(arch) is None:
        problem = "--pretrained needs a published model" if args.pretrained else "no pretrained weights exist"
        raise CLIError(f"{problem}: {name} is a custom architecture; pass {WEIGHT_CHOICES}")
    out = _output_path(args.out, name, fmt)

    model, weights, license = _load_model(args, name, arch)
    if model.arch != arch:
        raise CLIError(f"the weights hold architecture {model.arch.to_dict()}, not {name}'s")
    metadata = export_metadata(model, name=name, license=args.license or license, weights=weights)
    print(f"{name}: input {arch.resolution}x{arch.resolution}, {metadata['mflops']:.2f} MFLOPs, "
          f"{metadata['params']:,} parameters; weights: {metadata['weights']}; license: {metadata['license']}")

    verify = not args.no_verify
    try:
        if fmt == "onnx":
            result = to_onnx(model, out, opset=opset, batch=batch, metadata=metadata, verify=verify,
                             tolerance=args.tolerance)
            what = f"ONNX opset {opset}, batch {'dynamic' if batch == 'dynamic' else batch}"
        else:
            result = to_torchscript(model, out, metadata=metadata, verify=verify, tolerance=args.tolerance)
            what = "TorchScript, frozen"
    except ExportVerificationError as e:
        print(f"{PROG}: error: verification failed: {e}; nothing was written to {out}", file=sys.stderr)
        return EXIT_VERIFICATION_FAILED
    except OSError as e:
        raise CLIError(f"cannot write {out}: {e.strerror or e}") from None

    print(result.verification.summary() if result.verification else "not verified (--no-verify)")
    print(f"wrote {out} ({what}, {result.size_bytes / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
