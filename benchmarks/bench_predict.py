"""Labelling a folder of JPEGs: ``alphanet-predict --out`` against the backend's own throughput on pre-decoded
tensors and against timm's ``inference.py`` running the same model, with the same threads, batch and workers.

    python benchmarks/bench_predict.py --images 2000 --rounds 3 --workers 0,2 --backends pytorch,onnxruntime
    python benchmarks/bench_predict.py --memory 2000,20000 --backends onnxruntime   # peak RSS at each size

Sides run interleaved, round after round, each in a process of its own (wall time of the whole process,
start-up included, and of the labelling loop where the side reports it). The folder holds JPEGs of mixed
sizes (ImageNet-like, 200..500 px a side), written once into ``--workdir``. Every side labels the same files
with the same random-init a0 weights; the table says whether timm's top-5 equals ours on every image.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TIMM_SCRIPTS = Path(os.environ.get("TIMM_SCRIPTS", REPO / "tests" / "data" / "timm_scripts"))


def make_folder(root: Path, count: int) -> Path:
    """``count`` JPEGs of mixed sizes (noise over gradients, so they compress like photos)."""
    folder = root / f"jpegs{count}"
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        w, h = (int(v) for v in rng.integers(200, 500, 2))
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h)], -1)
        noise = rng.integers(-40, 40, (h, w, 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(folder / f"img{i:05d}.jpg", quality=90)
    return folder


def make_weights(workdir: Path) -> tuple[Path, Path, Path]:
    """a0 with seeded random weights, as our weights folder, timm's checkpoint and an ONNX file."""
    import alphanet_zoo
    from alphanet_zoo.export import export_model

    folder = workdir / "a0"
    ckpt, onnx = workdir / "a0_state.pth", workdir / "a0.onnx"
    if not folder.exists():
        torch.manual_seed(0)
        model = alphanet_zoo.load("a0", pretrained=False).eval()
        # at 224 px the evaluation crop is one resample (resize 256, crop 224), which timm's data config
        # expresses exactly; at a0's own 192 px the official pipeline resamples twice and timm's once
        model.set_resolution(224)
        model.save_pretrained(folder)
        torch.save(model.state_dict(), ckpt)
        export_model(model, onnx, "onnx", precision="fp32")
    return folder, ckpt, onnx


def own_throughput(backend: str, folder: Path, weights: Path, onnx: Path, batch: int, threads: int) -> float:
    """Images/s of the backend alone on pre-decoded uint8 crops (decoding not counted)."""
    import alphanet_zoo
    from alphanet_zoo.data import load_image
    from alphanet_zoo.eval.loop import Subject, file_subject
    from alphanet_zoo.preprocessing import EvalCrop, model_input

    from alphanet_zoo.allocator import keep_freed_memory

    torch.set_num_threads(threads)
    keep_freed_memory()  # as alphanet-predict runs on CPU
    if backend == "pytorch":
        subject = Subject.of_model(alphanet_zoo.load(str(weights)), torch.device("cpu"))
    else:
        subject = file_subject(str(onnx), torch.device("cpu"), threads=threads)
    p = subject.preprocessing
    crop = EvalCrop(p)
    files = sorted(folder.glob("*.jpg"))
    crops = torch.stack([crop(load_image(f)) for f in files])
    subject.classifier(model_input(crops[:batch], p.resolution, p.mean, p.std))  # warm
    start = time.perf_counter()
    for s in range(0, len(crops), batch):
        subject.classifier(model_input(crops[s:s + batch], p.resolution, p.mean, p.std))
    return len(crops) / (time.perf_counter() - start)


def run(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds and the finished process."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed:\n{done.stderr[-3000:]}")
    return wall, done


def ours(backend: str, folder: Path, weights: Path, onnx: Path, out: Path, batch: int, workers: int, threads: int,
         env: dict, files_from: Path | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    out.unlink(missing_ok=True)
    source = ["--files-from", str(files_from)] if files_from else [str(folder)]
    model = ["--weights", str(weights)] if backend == "pytorch" else ["--model", str(onnx)]
    cmd = [str(BIN / "alphanet-predict"), *source, *model, "--out", str(out), "--batch-size", str(batch),
           "--workers", str(workers), "--threads", str(threads), "--json"]
    wall, done = run(cmd, env)
    return wall, json.loads(done.stdout)["images_per_s"], done


def timm_side(folder: Path, ckpt: Path, out_dir: Path, batch: int, workers: int, env: dict) -> float:
    script = TIMM_SCRIPTS / "inference.py"
    # as a timm user runs it: our models register with timm through the installed start-up hook
    cmd = [sys.executable, str(script), str(folder), "--model", "alphanet_a0", "--checkpoint", str(ckpt), "--device", "cpu",
           "--img-size", "224", "-b", str(batch), "-j", str(workers), "--topk", "5", "--results-dir", str(out_dir),
           "--results-file", "timm", "--results-format", "csv", "--fullname", "--include-index",
           "--results-separate-col", "--no-console-results"]
    wall, _ = run(cmd, env)
    return wall


def same_top5(ours_table: Path, timm_dir: Path) -> tuple[int, int]:
    mine = {Path(row["path"]).name: row["top"] for row in map(json.loads, ours_table.read_text().splitlines())}
    with open(timm_dir / "timm.csv", newline="") as f:
        theirs = list(csv.DictReader(f))
    agree = 0
    for row in theirs:
        top = mine[Path(row["filename"]).name]
        indices = [int(row[f"index_{k}"]) for k in range(len(top))] if "index_0" in row else \
            [int(v) for v in json.loads(row["index"])]
        agree += indices == [c["index"] for c in top]
    return agree, len(theirs)


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ({min(values):.1f}..{max(values):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", default="2", help="comma-separated worker counts")
    ap.add_argument("--backends", default="pytorch,onnxruntime")
    ap.add_argument("--no-timm", action="store_true")
    ap.add_argument("--memory", help="comma-separated image counts: peak RSS of the command at each")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_predict"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    weights, ckpt, onnx = make_weights(args.workdir)
    folder = make_folder(args.workdir, args.images)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    print(f"# {platform.machine()} {cpu}, {os.cpu_count()} cpus, torch {torch.__version__}; {args.images} JPEGs, "
          f"batch {args.batch_size}, {args.threads} threads, {args.rounds} rounds interleaved")
    if args.memory:
        sizes = [int(v) for v in args.memory.split(",")]
        files = sorted(folder.glob("*.jpg"))
        for n in sizes:
            links = args.workdir / f"links{n}"
            links.mkdir(exist_ok=True)
            listing = args.workdir / f"list{n}.txt"
            paths = []
            for i in range(n):
                link = links / f"l{i:06d}.jpg"
                if not link.exists():
                    link.symlink_to(files[i % len(files)])
                paths.append(str(link))
            listing.write_text("\n".join(paths) + "\n")
            out = args.workdir / f"mem{n}.jsonl"
            out.unlink(missing_ok=True)
            shutil.rmtree(out.with_name(out.name + ".parts"), ignore_errors=True)  # a stopped run: start over
            model = ["--weights", str(weights)] if args.backends.split(",")[0] == "pytorch" else ["--model", str(onnx)]
            cmd = [str(BIN / "alphanet-predict"), "--files-from", str(listing), *model, "--out",
                   str(out), "--batch-size", str(args.batch_size), "--workers", "0", "--threads", str(args.threads),
                   "--json"]
            # each size in a fresh process tree: ru_maxrss of children is a running maximum, so measure via /usr/bin/time
            timed = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, env=env)
            rss = int(timed.stderr.strip().splitlines()[-1])
            print(f"memory: {n:6d} images  peak RSS {rss / 1024:7.1f} MiB  "
                  f"({json.loads(timed.stdout)['images_per_s']} img/s)")
        return
    backends = args.backends.split(",")
    own = {b: [] for b in backends}
    table: dict[str, list[float]] = {}
    loops: dict[str, list[float]] = {}
    agreement = None
    for r in range(args.rounds):
        for b in backends:
            own[b].append(own_throughput(b, folder, weights, onnx, args.batch_size, args.threads))
        for w in (int(v) for v in args.workers.split(",")):
            for b in backends:
                key = f"alphanet-predict {b} workers={w}"
                wall, ips, _ = ours(b, folder, weights, onnx, args.workdir / "ours.jsonl", args.batch_size, w,
                                    args.threads, env)
                table.setdefault(key, []).append(args.images / wall)
                loops.setdefault(key, []).append(ips)
                if b == "pytorch" and not args.no_timm:
                    timm_dir = args.workdir / "timm_out"
                    timm_dir.mkdir(exist_ok=True)
                    key = f"timm inference.py pytorch workers={w}"
                    table.setdefault(key, []).append(args.images / timm_side(folder, ckpt, timm_dir, args.batch_size,
                                                                             w, env))
                    agreement = same_top5(args.workdir / "ours.jsonl", timm_dir)
        print(f"round {r + 1} done", file=sys.stderr)
    print(f"{'side':45s} {'img/s whole process':>28s} {'img/s labelling loop':>28s}")
    for b in backends:
        print(f"{b + ' alone on pre-decoded crops':45s} {'':>28s} {fmt(own[b]):>28s}")
    for key, values in table.items():
        loop = fmt(loops[key]) if key in loops else ""
        print(f"{key:45s} {fmt(values):>28s} {loop:>28s}")
    for key in loops:
        b = key.split()[1]
        print(f"ratio loop / backend alone, {key}: {statistics.median(loops[key]) / statistics.median(own[b]):.2f}")
    if agreement:
        print(f"top-5 equal to timm's on {agreement[0]} of {agreement[1]} images")


if __name__ == "__main__":
    main()
