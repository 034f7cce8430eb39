"""``alphanet-train``: AlphaNet supernet training (sandwich rule, adaptive alpha-divergence).

One CPU::

    alphanet-train --config alphanet_imagenet data.train=/data/imagenet/train data.val=/data/imagenet/val

Every GPU of a node, or many nodes (the learning rate follows the global batch)::

    torchrun --nproc_per_node 8 -m alphanet_zoo.train.cli --config alphanet_imagenet data.train=...
    torchrun --nnodes 8 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        -m alphanet_zoo.train.cli --config alphanet_imagenet data.train=...

Rerunning the same command resumes from ``OUTPUT_DIR/checkpoint.pt``; SIGTERM (or Ctrl-C) makes
every process stop at the next step and write a checkpoint first.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .._cli import CLIError, cli_main, progress
from .config import BUNDLED_CONFIGS, load_config

EXIT_STOPPED = 143  # 128 + SIGTERM: stopped on request, checkpoint written


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alphanet-train",
        description="Train the AlphaNet supernet with the sandwich rule and the adaptive alpha-divergence. "
                    "Run it directly (one process) or under torchrun (one process per GPU; gloo on CPU). "
                    "Rerun the same command to resume from OUTPUT_DIR/checkpoint.pt.",
        epilog="overrides: dotted keys of the config, e.g. data.train=/data/train optim.lr_per_256=0.2 epochs=10")
    parser.add_argument("--config", default="alphanet_imagenet",
                        help=f"YAML recipe: a file, or a bundled one ({', '.join(BUNDLED_CONFIGS)}); "
                             f"default: alphanet_imagenet (the paper's recipe)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config settings to change")
    parser.add_argument("--no-resume", action="store_true",
                        help="refuse to continue an existing checkpoint in output_dir (default: resume it)")
    parser.add_argument("--print-config", action="store_true", help="print the effective config as YAML and exit")
    return parser


@cli_main("alphanet-train")
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except ValueError as e:
        raise CLIError(str(e)) from None
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    try:
        config.check()
    except ValueError as e:
        raise CLIError(str(e)) from None

    from .trainer import Trainer

    main_process = int(os.environ.get("RANK", "0")) == 0
    result = Trainer(config, resume=not args.no_resume, progress=lambda **kw: progress(None, **kw)).run()
    if main_process:
        if result["stopped"]:
            print(f"alphanet-train: stopped by {result['stopped']} at step {result['global_step']} "
                  f"(epoch {result['epoch'] + 1}); checkpoint {result['checkpoint']}. "
                  f"Run the same command to resume.", file=sys.stderr)
        else:
            for name, metrics in result["validation"].items():
                print(f"{name:>8} subnet: top-1 {metrics['top1']:.2f} %  top-5 {metrics['top5']:.2f} %  "
                      f"({metrics['images']} images)")
            print(f"alphanet-train: {result['epoch']} epochs, {result['global_step']} steps on "
                  f"{result['world_size']} process(es). Checkpoint {result['checkpoint']}; extract subnets with "
                  f"alphanet-extract --supernet {result['checkpoint']} --arch a0 --out OUT", file=sys.stderr)
    return EXIT_STOPPED if result["stopped"] else 0


if __name__ == "__main__":
    sys.exit(main())
