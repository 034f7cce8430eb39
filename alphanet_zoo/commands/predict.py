"""``alphanet-predict``: the top-k classes of images, from weights or from an exported file."""
from __future__ import annotations

import json
import logging
from typing import Sequence

from .._io import check_writable_file, write_text
from ..data import BadImageError, load_image
from ..device import parse_device
from ..errors import InputError, UsageError
from ..export import open_model
from ..prediction import predict
from ..weights import WeightsLoader
from . import flags, running

log = logging.getLogger("alphanet_zoo")
DEFAULT_TOPK = 5


@running.cli_main("alphanet-predict")
def main(argv: Sequence[str] | None = None) -> int:
    parser = flags.command_parser(
        "alphanet-predict", "Classify images with an AlphaNet model, or with a file alphanet-export wrote (--model): "
                            "the top-k classes with probabilities.",
        [flags.arch_flags(many=False), flags.weights_flags(default=None), flags.batch_flags(16), flags.device_flags(),
         flags.threads_flags(), flags.output_flags("also write the predictions as JSON lines to this file"),
         flags.json_flags()])
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--model", metavar="FILE",
                        help="an exported file (.onnx, OpenVINO .xml, TorchScript .pt, torch.export .pt2, .pte, "
                             ".tflite) to run instead of PyTorch weights; its metadata gives the preprocessing and "
                             "labels (--arch and --weights do not apply; --device auto means cpu)")
    parser.add_argument("--topk", type=flags.integer(1, 1000), metavar="K",
                        help=f"classes per image (default: {DEFAULT_TOPK}, or the model's classes when fewer)")
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="report unreadable images and go on (default: stop at the first)")
    args = parser.parse_args(argv)

    console = running.Console(args.json)
    name, arch = flags.single_arch(args.arch) if args.arch else (None, None)
    if args.out:
        check_writable_file(args.out)
    running.set_threads(args.threads)
    device = parse_device(args.device)
    if args.model:
        if args.arch or args.weights:
            raise UsageError("--model runs an exported file, whose metadata gives the architecture, preprocessing "
                             "and labels: --arch and --weights do not apply")
        exported = open_model(args.model, threads=args.threads, device="cpu" if args.device == "auto" else device)
        if exported.record() is None:
            raise InputError(f"{args.model} carries no metadata (labels, preprocessing): export it with "
                             "alphanet-export")
        num_classes = exported.record().num_classes

        def classify(images):
            return exported.predict(images, topk=topk, batch_size=args.batch_size)
    else:
        weights = args.weights or "pretrained"
        if arch is None and weights in ("pretrained", "random"):
            raise InputError(f"--arch is needed with --weights {weights}")
        model = WeightsLoader(weights, device).load(arch, name)
        running.warn_if_uncalibrated(model)
        num_classes = model.num_classes

        def classify(images):
            return predict(model, images, topk=topk, batch_size=args.batch_size)
    if num_classes == 0:
        raise InputError("the model has no classifier (0 classes, an embedding): there are no classes to predict")
    if args.topk is not None and args.topk > num_classes:
        raise InputError(f"--topk {args.topk} is more than the model's {num_classes} classes")
    topk = args.topk or min(DEFAULT_TOPK, num_classes)
    rows, bad = [], 0
    for start in range(0, len(args.images), args.batch_size):
        chunk, opened = args.images[start:start + args.batch_size], []
        for path in chunk:
            try:
                opened.append((path, load_image(path)))
            except BadImageError as e:
                if not args.skip_bad_images:
                    raise
                bad += 1
                log.warning("%s", e)
        if not opened:
            continue
        for (path, _), top in zip(opened, classify([image for _, image in opened])):
            row = {"path": str(path), "top": top}
            rows.append(row)
            console.json_line(row)
            console.result(running.printable(str(path)))
            for rank, r in enumerate(top, 1):
                label = running.printable(r["name"]) if r["name"] else f"class {r['index']}"
                label += f" ({r['synset']})" if r["synset"] else ""
                console.result(f"  {rank}. {r['probability'] * 100:6.2f}%  {label}")
    if args.out:
        write_text(args.out, "".join(json.dumps(row) + "\n" for row in rows))
        console.status(f"wrote {args.out}")
    if bad:
        console.status(f"skipped {bad} unreadable image(s)")
    return 0
