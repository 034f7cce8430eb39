"""``alphanet-train``: AlphaNet supernet training (sandwich rule, adaptive alpha-divergence).

One CPU::

    alphanet-train --config alphanet_imagenet data.train=/data/imagenet/train data.val=/data/imagenet/val

Every GPU of a node, or many nodes (the learning rate follows the global batch)::

    torchrun --nproc_per_node 8 --no-python alphanet-train --config alphanet_imagenet data.train=...
    torchrun --nnodes 8 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        --no-python alphanet-train --config alphanet_imagenet data.train=...

Rerunning the same command resumes from ``OUTPUT_DIR/checkpoint.pt`` (or, if that is damaged, from the
previous one, ``checkpoint.prev.pt``); ``--resume FILE`` continues the checkpoint FILE into OUTPUT_DIR,
``--no-resume`` refuses to continue one. Checkpoints are written every ``checkpoint_every_steps`` steps and
at every epoch end. SIGTERM (a scheduler's pre-emption) makes every process stop at the next step,
write a checkpoint and exit with status 143 (Ctrl-C: 130). A process that dies or hangs makes the
others exit with status 1 and one line naming it, within ``collective_timeout_s`` (seconds when it died).
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

from ..allocator import keep_freed_memory
from ..device import parse_device
from ..train.config import BUNDLED_CONFIGS, load_config
from ..train.trainer import Trainer
from . import flags, running
from .running import Console, cli_main, progress

EXIT_STOPPED = 143  # 128 + SIGTERM: stopped on request, checkpoint written
EXIT_INTERRUPTED = 130  # 128 + SIGINT (Ctrl-C): the same, asked from a terminal
# flags that set a config key (None: leave the config's value)
_FLAG_KEYS = {"out": "output_dir", "device": "device", "seed": "seed", "batch_size": "data.batch_size",
              "workers": "data.workers"}


def _parser() -> flags.ArgumentParser:
    parser = flags.command_parser(
        "alphanet-train",
        "Train the AlphaNet supernet with the sandwich rule and the adaptive alpha-divergence. Run it directly "
        "(one process) or under torchrun (one process per GPU; gloo on CPU). Rerun the same command to resume "
        "from OUTPUT_DIR/checkpoint.pt. SIGTERM writes a checkpoint and exits 143.",
        [flags.output_flags("output folder: checkpoints, log.jsonl, supernet.safetensors (the config's output_dir)"),
         flags.device_flags(default=None), flags.seed_flags(default=None), flags.batch_flags(None),
         flags.workers_flags(None), flags.threads_flags(),
         flags.resume_flags("continue from output_dir's checkpoint (the default when it has one), or from the "
                            "checkpoint FILE (written on into output_dir)",
                            "refuse to continue an existing checkpoint in output_dir"),
         flags.json_flags()],
        epilog="The flags above override the config; so do dotted keys: data.train=/data/train "
               "optim.lr_per_256=0.2 epochs=10")
    parser.add_argument("--config", default="alphanet_imagenet",
                        help=f"YAML recipe: a file, or a bundled one ({', '.join(BUNDLED_CONFIGS)}); "
                             f"alphanet_imagenet is the paper's recipe")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config settings to change")
    parser.add_argument("--print-config", action="store_true", help="print the effective config as YAML and exit")
    return parser


@cli_main("alphanet-train")
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    resume = flags.resume_choice(args, True)
    console = Console(args.json)
    config = load_config(args.config, args.overrides)
    for dest, key in _FLAG_KEYS.items():
        if getattr(args, dest) is not None:
            section, _, name = key.rpartition(".")
            setattr(getattr(config, section) if section else config, name, getattr(args, dest))
    if args.print_config:
        import yaml

        console.json(config.to_dict())
        console.result(yaml.safe_dump(config.to_dict(), sort_keys=False).rstrip())
        return 0
    config.check()
    running.set_threads(args.threads)
    if parse_device(config.device).type == "cpu":
        keep_freed_memory()  # activations reused, not mapped afresh: a sandwich step's system time halved
    main_process = int(os.environ.get("RANK", "0")) == 0
    result = Trainer(config, resume=resume, progress=lambda **kw: progress(None, **kw)).run()
    if main_process:
        console.json(result)
        if result["stopped"]:
            saved = (f"checkpoint {result['checkpoint']}" if result["checkpoint"] else
                     "no checkpoint yet (nothing to save)")
            console.status(f"alphanet-train: stopped by {result['stopped']} at step {result['global_step']} "
                           f"(epoch {result['epoch'] + 1}); {saved}. Run the same command to resume.")
        else:
            for name, metrics in result["validation"].items():
                console.result(f"{name:>8} subnet: top-1 {metrics['top1']:.2f} %  top-5 {metrics['top5']:.2f} %  "
                               f"({metrics['images']} images)")
            console.status(f"alphanet-train: {result['epoch']} epochs, {result['global_step']} steps on "
                           f"{result['world_size']} process(es). Checkpoint {result['checkpoint']}; extract subnets "
                           f"with alphanet-extract --supernet {result['checkpoint']} --arch a0 --out OUT")
    if not result["stopped"]:
        return 0
    return EXIT_INTERRUPTED if result["stopped"] == "SIGINT" else EXIT_STOPPED


if __name__ == "__main__":
    sys.exit(main())
