"""``alphanet-finetune``: fine-tune any AlphaNet weights on class folders; the result is a model folder.

    alphanet-finetune --weights random --arch a0 --data colours --out runs/colours
    alphanet-finetune --weights weights/a1 --data DIR/train --val DIR/val --freeze features --out runs/a1
    alphanet-finetune --weights random --arch a0 --data colours --teacher runs/a1 --distill alpha --out runs/a0

``--data DIR`` holds ``train/`` and ``val/`` class folders (or give ``--val``). The classifier is reset
to the folders' classes, BatchNorm is re-calibrated on the new images, and the model is trained with
SGD, a warm-up and a cosine schedule, label smoothing and (with ``--teacher``) distillation. OUT
becomes a ``save_pretrained`` folder every command takes (``alphanet-predict --weights OUT``); its
checkpoints sit beside it, so rerunning the same command resumes. SIGTERM writes a checkpoint and
exits 143 (Ctrl-C: 130); ``--max-steps`` stops the same way and exits 0. Progress goes to stderr: a bar
with rate and ETA on a terminal, else one line per epoch.
"""
from __future__ import annotations

from typing import Sequence

from ..allocator import keep_freed_memory
from ..device import parse_device
from ..errors import UsageError
from ..train.finetune import (DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LR, DISTILL_LOSSES, FREEZE_CHOICES, RANGES,
                              finetune)
from ..train.precision import PRECISIONS
from . import flags, running
from .running import Console, cli_main

EXIT_STOPPED, EXIT_INTERRUPTED = 143, 130


def _parser() -> flags.ArgumentParser:
    parser = flags.command_parser(
        "alphanet-finetune",
        "Fine-tune AlphaNet weights on class folders (one sub-folder of images per class): a fresh classifier "
        "for the folders' classes, BatchNorm re-calibrated on them, SGD with warm-up and cosine decay, label "
        "smoothing, optional distillation from a teacher. OUT becomes a model folder (config.json, "
        "model.safetensors) that every command takes. Rerun the same command to resume.",
        [flags.weights_flags(default="pretrained"), flags.arch_flags(many=False),
         flags.output_flags("the model folder to write (its checkpoint.pt and log.jsonl sit beside the model)",
                            required=True),
         flags.batch_flags(DEFAULT_BATCH_SIZE), flags.workers_flags(2), flags.device_flags(), flags.threads_flags(),
         flags.seed_flags("seed of the initialisation, data order, augmentation and calibration draws"),
         flags.resume_flags("continue from OUT's checkpoint (the default when it has one), or from the checkpoint "
                            "FILE (written on into OUT)", "refuse to continue an existing checkpoint in OUT"),
         flags.json_flags()],
        epilog="More settings as key=value (alphanet-train's config keys): optim.weight_decay=1e-4 "
               "data.auto_augment=v0 checkpoint_every_steps=20 validation.calib_batches=16")
    parser.add_argument("--data", metavar="DIR", required=True,
                        help="class folders: DIR/train and DIR/val, or the training folder when --val is given")
    parser.add_argument("--val", metavar="DIR", help="validation class folders (default: DATA/val)")
    parser.add_argument("--epochs", type=flags.integer(*RANGES["epochs"][:2]), default=DEFAULT_EPOCHS, metavar="N",
                        help="passes over the training images")
    parser.add_argument("--lr", type=flags.number(*RANGES["lr"][:2], open_low=True), default=DEFAULT_LR, metavar="LR",
                        help="peak learning rate at --batch-size (scaled linearly with more processes under torchrun)")
    parser.add_argument("--warmup-epochs", type=flags.number(*RANGES["warmup_epochs"][:2]), default=1.0, metavar="E",
                        help="linear warm-up before the cosine decay")
    parser.add_argument("--label-smoothing", type=flags.number(*RANGES["label_smoothing"][:2]), default=0.1,
                        metavar="S",
                        help="label smoothing of the cross entropy")
    parser.add_argument("--freeze", choices=FREEZE_CHOICES, default="none",
                        help="features: train only the head (feature mix and classifier), the features keep their "
                             "weights and re-calibrated statistics; none: train everything")
    parser.add_argument("--teacher", metavar="SPEC",
                        help="distil from this model: a fine-tuned folder for the same classes, or any weights spec "
                             "(with --teacher-arch where the spec needs one)")
    parser.add_argument("--teacher-arch", metavar="ARCH", help="the teacher's architecture (random or supernet specs)")
    parser.add_argument("--distill", choices=DISTILL_LOSSES, default=None,
                        help="alpha: the adaptive alpha-divergence; kl: KL(teacher || student); none (default: alpha "
                             "with --teacher, else none)")
    parser.add_argument("--resolution", type=flags.integer(*RANGES["resolution"][:2]), metavar="N",
                        help="training and evaluation resolution (default: the model's, or the training images' "
                             "median short side, rounded down to a multiple of 32, when smaller)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: bfloat16 autocast where it is faster (a GPU with bfloat16, a CPU with AMX, or "
                             "timed on the model's step on a CPU with AVX512-BF16), else float32; fp16: CUDA only, "
                             "with loss scaling")
    parser.add_argument("--max-steps", type=flags.integer(*RANGES["max_steps"][:2]), metavar="N",
                        help="stop after N steps in all, with a checkpoint (rerun without it to go on)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config settings to change")
    return parser


@cli_main("alphanet-finetune")
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    resume = flags.resume_choice(args, True)
    console = Console(args.json)
    arch = flags.single_arch(args.arch)[1] if args.arch else None
    teacher_arch = flags.single_arch(args.teacher_arch)[1] if args.teacher_arch else None
    if args.distill in ("alpha", "kl") and not args.teacher:
        raise UsageError(f"--distill {args.distill} needs --teacher")
    if args.teacher_arch and not args.teacher:
        raise UsageError("--teacher-arch needs --teacher (it is the teacher's architecture)")
    running.set_threads(args.threads)
    if parse_device(args.device).type == "cpu":
        keep_freed_memory()  # activations reused, not mapped afresh: a training step's system time halved
    result = finetune(args.weights, args.data, args.out, arch=arch, val=args.val, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, warmup_epochs=args.warmup_epochs,
                      label_smoothing=args.label_smoothing, freeze=args.freeze, teacher=args.teacher,
                      teacher_arch=teacher_arch, distill=args.distill, resolution=args.resolution,
                      precision=args.precision, seed=args.seed, workers=args.workers, device=args.device,
                      max_steps=args.max_steps, resume=resume, overrides=args.overrides,
                      progress=running.epoch_progress("alphanet-finetune"))
    console.json(result)
    stopped = result["stopped"]
    if stopped:
        saved = (f"checkpoint {result['checkpoint']}" if result["checkpoint"] else
                 "no checkpoint yet (nothing to save)")
        console.status(f"alphanet-finetune: stopped ({stopped}) at step {result['global_step']} (epoch "
                       f"{result['epoch'] + 1}); {saved}. Run the same command"
                       f"{' without --max-steps' if stopped == 'max_steps' else ''} to go on.")
        return 0 if stopped == "max_steps" else EXIT_INTERRUPTED if stopped == "SIGINT" else EXIT_STOPPED
    metrics = result["validation"]["model"]
    console.result(f"validation top-1 {metrics['top1']:.2f} %  top-5 {metrics['top5']:.2f} %  ({metrics['images']} "
                   f"images, {len(result['classes'])} classes, resolution {result['resolution']}, "
                   f"{result['precision']})")
    console.status(f"alphanet-finetune: {result['epoch']} epochs, {result['global_step']} steps. Wrote "
                   f"{result['folder']}: alphanet-predict --weights {result['folder']} IMAGE")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
