"""``alphanet-predict``: the top-k classes of images, from weights or from an exported file; a whole dataset with
``--out``, streamed, resumable and split across processes under torchrun.

    alphanet-predict photo.jpg --arch a0 --weights weights/
    alphanet-predict /data/unlabelled "extra/**/*.png" --model a0.onnx --out labels.parquet --workers 4
    find /data -name '*.jpg' | alphanet-predict --files-from - --arch a0 --out labels.jsonl --output logits
    torchrun --nproc_per_node 4 --no-python alphanet-predict /data --arch a0 --out labels.csv

Without ``--out`` the rows are printed as they come. With it they go to a table (`alphanet_zoo.eval.
prediction_table`): stopped by Ctrl-C, SIGTERM or SIGKILL, the same command continues where it stopped.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .. import distributed
from .._io import check_writable_file
from ..allocator import keep_freed_memory
from ..data import BadImageError, batch_indices, collect_images
from ..device import parse_device
from ..errors import AlphaNetError, InputError, UsageError
from ..eval.labelling import OUTPUTS, LabelledBatch, label_batches, num_classes_of
from ..eval.loop import Subject, file_subject, gather_or_raise, quiet, rank_error, shard
from ..eval.prediction_table import (FORMATS, Journal, merge_journals, require_pyarrow, shard_folder, table_format,
                                     write_shard)
from ..weights import WeightsLoader
from . import flags, running

log = logging.getLogger("alphanet_zoo")
PROG = "alphanet-predict"
DEFAULT_TOPK = 5


def build_parser() -> flags.ArgumentParser:
    parser = flags.command_parser(
        PROG, "Classify images with an AlphaNet model, or with a file alphanet-export wrote (--model): the top-k "
              "classes with probabilities, for a few files or a whole dataset (--out).",
        [flags.arch_flags(many=False), flags.weights_flags(default=None), flags.batch_flags(32),
         flags.workers_flags(None), flags.device_flags(), flags.threads_flags(),
         flags.output_flags("write the rows to this table (JSON lines, .csv or .parquet) as they are computed; "
                            "the same command continues an interrupted run"),
         flags.resume_flags("with --out: continue the unfinished run of the same command (the default)",
                            "with --out: discard an unfinished run's rows and start over"),
         flags.dist_flags(), flags.json_flags()])
    parser.add_argument("images", nargs="*", metavar="IMAGE",
                        help="image files, folders (walked recursively, image files only, sorted) or quoted glob "
                             "patterns ('data/**/*.jpg')")
    parser.add_argument("--files-from", metavar="LIST",
                        help="also label the paths listed in this file, one per line ('-': standard input)")
    parser.add_argument("--model", metavar="FILE",
                        help="an exported file (.onnx, OpenVINO .xml, TorchScript .pt, torch.export .pt2, .pte, "
                             ".tflite) to run instead of PyTorch weights; its metadata gives the preprocessing and "
                             "labels (--arch and --weights do not apply; --device auto means cpu)")
    parser.add_argument("--topk", type=flags.integer(1, 1000), metavar="K",
                        help=f"classes per image (default: {DEFAULT_TOPK}, or the model's classes when fewer)")
    parser.add_argument("--format", choices=FORMATS, help="the --out table's format (default: from its suffix; "
                                                          "JSON lines when it names none)")
    parser.add_argument("--output", choices=OUTPUTS,
                        help="with --out: also save each image's logits, or its pooled features (PyTorch weights), "
                             "as .npy shards in a folder beside the table, named in its rows")
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="accepted for older scripts: an unreadable image is always a row with an error")
    return parser


def _subject(args, device) -> Subject:
    name, arch = flags.single_arch(args.arch) if args.arch else (None, None)
    if args.model:
        if args.arch or args.weights:
            raise UsageError("--model runs an exported file, whose metadata gives the architecture, preprocessing "
                             "and labels: --arch and --weights do not apply")
        return file_subject(args.model, device if args.device != "auto" else parse_device("cpu"),
                            threads=args.threads)
    weights = args.weights or "pretrained"
    if arch is None and weights in ("pretrained", "random"):
        raise InputError(f"--arch is needed with --weights {weights}")
    model = WeightsLoader(weights, device).load(arch, name)
    running.warn_if_uncalibrated(model)
    return Subject.of_model(model, device, name, weights)


def _identity(args, subject: Subject) -> str:
    """What the journal ties its rows to: the file (path, size, time) or the weights and architecture."""
    if args.model:
        st = os.stat(args.model)
        return f"file:{os.path.abspath(args.model)}:{st.st_size}:{st.st_mtime_ns}"
    return f"weights:{subject.weights}:{args.arch or ''}:{subject.record.arch.to_json() if subject.record else ''}"


@running.cli_main(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if isinstance(args.resume, str):  # "--resume photo.jpg": the journal is --out's, so the value is an input
        args.images.append(args.resume)
    if not args.images and not args.files_from:
        raise UsageError("name images, folders or patterns, or give --files-from LIST")
    if not args.out:
        for option in ("format", "output"):
            if getattr(args, option):
                raise UsageError(f"--{option} shapes the --out table: give --out")
    else:
        check_writable_file(args.out)
        if table_format(args.out, args.format) == "parquet":
            require_pyarrow()
    console = running.Console(args.json)
    running.set_threads(args.threads)
    inputs = collect_images(args.images, sys.stdin if args.files_from == "-" else args.files_from)
    if not inputs.paths:
        raise InputError("no images found" + (f" (skipped: {inputs.describe_skipped()})" if inputs.skipped else ""))
    with distributed.torchrun(args.device, args.dist_timeout, PROG) as ctx:
        if ctx.world_size > 1 and not args.out:
            raise UsageError("under torchrun, give --out: each process writes its share and rank 0 the table")
        if not ctx.is_main:
            console = running.SilentConsole(args.json)
        if ctx.device.type == "cpu":
            keep_freed_memory()  # activations reused, not mapped afresh: eager a0 about 2x faster on CPU
        subject = _subject(args, ctx.device)
        num_classes = num_classes_of(subject)
        if num_classes == 0:
            raise InputError("the model has no classifier (0 classes, an embedding): there are no classes to "
                             "predict")
        if args.topk is not None and args.topk > num_classes:
            raise InputError(f"--topk {args.topk} is more than the model's {num_classes} classes")
        topk = args.topk or min(DEFAULT_TOPK, num_classes)
        workers = args.workers if args.workers is not None else _auto_workers(len(inputs.paths), args.batch_size)
        if inputs.skipped:
            console.status(f"skipped {inputs.describe_skipped()}")
        if args.out:
            return _to_table(args, subject, inputs.paths, topk, workers, console)
        return _to_console(args, subject, inputs.paths, topk, workers, console)


def _auto_workers(count: int, batch_size: int) -> int:
    """Decoding processes: none for a few images (starting them costs more than it saves), else up to 4."""
    return 0 if count < 2 * batch_size else max(1, min(4, (os.cpu_count() or 1)))


def _to_console(args, subject: Subject, paths: list[str], topk: int, workers: int, console) -> int:
    bad: list[tuple[str, str]] = []
    for batch in label_batches(subject, paths, topk=topk, batch_size=args.batch_size, workers=workers):
        for row in batch.rows:
            console.json_line(row)
            console.result(running.printable(row["path"]))
            if "error" in row:
                bad.append((row["path"], row["error"]))
                console.result(f"  error: {running.printable(row['error'])}")
                continue
            for rank, r in enumerate(row["top"], 1):
                label = running.printable(r["name"]) if r["name"] else f"class {r['index']}"
                label += f" ({r['synset']})" if r["synset"] else ""
                console.result(f"  {rank}. {r['probability'] * 100:6.2f}%  {label}")
    return _bad_images_verdict(bad, len(paths), console)


def _bad_images_verdict(bad: list[tuple[str, str]], count: int, console) -> int:
    """Nothing to say when every image was read; a count when some were not; an error when none was."""
    if len(bad) == count:
        if count == 1:
            raise BadImageError(*bad[0])
        raise InputError(f"none of the {count} images could be read (the first: {bad[0][0]}: {bad[0][1]})")
    if bad:
        console.status(f"{len(bad)} of {count} images could not be read (rows with an error)")
    return 0


def _to_table(args, subject: Subject, paths: list[str], topk: int, workers: int, console) -> int:
    rank, world = distributed.rank_and_world()
    out, bs = Path(args.out), args.batch_size
    share = shard(len(paths), bs) or batch_indices(len(paths), bs)
    settings = {"model": _identity(args, subject), "images": len(paths), "topk": topk, "batch_size": bs,
                "output": args.output,
                "inputs_sha256": hashlib.sha256("\n".join(paths).encode("utf-8", "surrogateescape")).hexdigest()}
    journal = Journal(out, settings, rank, world)
    done = journal.open(share, restart=args.resume is False)
    try:
        return _label_into(args, subject, paths, topk, workers, console, journal, share, done)
    finally:
        journal.close()


def _label_into(args, subject: Subject, paths: list[str], topk: int, workers: int, console, journal: Journal,
                share: list[list[int]], done: set[int]) -> int:
    """Label this process's ``share`` less what is ``done`` into ``journal``; rank 0 writes the table."""
    rank, world = distributed.rank_and_world()
    out, bs = journal.out, args.batch_size
    shards = shard_folder(out, args.output) if args.output else None
    if shards is not None:
        if not journal.resumed and rank == 0:
            _clear_shards(shards)
        shards.mkdir(exist_ok=True)
    mine = sum(len(b) for b in share)
    if rank == 0:
        console.status(f"{PROG}: {len(paths)} images, {subject.name} on {subject.backend} ({subject.device}), "
                       f"batch {bs}, {workers} workers" + (f", {world} processes" if world > 1 else "")
                       + (f"; continuing: {len(done)} done" if done else ""))
    todo = [b for b in share if not set(b) <= done]
    bar = running.progress(total=mine, initial=len(done), desc=subject.name, unit="img", smoothing=0.1, **quiet())
    counts, error, start = {"labelled": 0, "errors": 0}, None, time.perf_counter()
    try:
        for batch in label_batches(subject, paths, topk=topk, batch_size=bs, workers=workers, batches=todo,
                                   output=args.output):
            journal.append(_journal_rows(batch, shards, batch.indices[0] // bs, args.output))
            counts["labelled"] += len(batch.rows)
            counts["errors"] += sum("error" in row for row in batch.rows)
            bar.update(len(batch.rows))
    except KeyboardInterrupt:
        bar.close()
        console.status(f"stopped after {len(done) + counts['labelled']} of {mine} images"
                       + (f" (rank {rank})" if world > 1 else "") + ": the same command continues")
        raise
    except AlphaNetError as e:
        if world == 1:
            raise
        error = rank_error(e)
    finally:
        bar.close()
        journal.close_file()
    seconds = time.perf_counter() - start
    parts = gather_or_raise(counts, error, "gathering the labelled counts")
    labelled, errors = sum(p["labelled"] for p in parts), sum(p["errors"] for p in parts)
    if rank == 0:
        rows, bad = merge_journals(out, table_format(out, args.format), world, len(paths), topk, args.output)
        summary = {"out": str(out), "images": rows, "errors": bad, "labelled_now": labelled,
                   "errors_now": errors, "seconds": round(seconds, 3),
                   "images_per_s": round(labelled / seconds, 2) if seconds > 0 else None,
                   "shards": str(shards) if shards else None}
        console.json(summary)
        console.status(f"wrote {out}: {rows} rows, {bad} unreadable; {labelled} labelled now in {seconds:.1f} s "
                       f"({summary['images_per_s']} img/s)" + (f"; {args.output} in {shards}" if shards else ""))
    journal.close()
    distributed.barrier("finishing")
    if rank == 0 and bad == rows:
        raise InputError(f"none of the {rows} images could be read: see the error rows in {out}")
    return 0


def _journal_rows(batch: LabelledBatch, shards: Path | None, number: int, output: str | None) -> list[dict[str, Any]]:
    """The batch's rows as the journal keeps them: with the input index, and the shard holding their array."""
    name = write_shard(shards, number, batch.array) if batch.array is not None else None
    rows, j = [], 0
    for i, row in zip(batch.indices, batch.rows):
        row = {"i": i, **row}
        if output is not None:
            row[output], row[f"{output}_row"] = (name, j) if "top" in row else (None, None)
            j += "top" in row
        rows.append(row)
    return rows


def _clear_shards(folder: Path) -> None:
    """A fresh run's shards start empty: remove the .npy files an earlier run left (nothing else)."""
    if folder.is_dir():
        for old in folder.glob("*.npy"):
            old.unlink()


if __name__ == "__main__":
    sys.exit(main())
