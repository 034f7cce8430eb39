"""Mobile deployment benchmark (issue 18): ExecuTorch (XNNPACK) and LiteRT (XNNPACK delegate) files of
AlphaNet-A0..A6, fp32 and int8, at batch 1 on 1 and 2 threads of this CPU (a stand-in for a phone's).

    python benchmarks/bench_mobile.py --models a0,a1,a2,a3,a4,a5,a6 --threads 1,2 --json mobile.json
    python benchmarks/bench_mobile.py --supernet alphanet_pretrained.pth.tar --calib-data /data/imagenet/val

Each model is exported by `export_model` as ``alphanet-export`` does it (``--format executorch`` and
``--format tflite``, ``--precision fp32`` and ``int8``; int8 calibrated on ``--calib-data`` or the built-in
images, and not refused whatever its agreement, which is reported). Weights: ``--supernet`` (default:
the deterministic official-layout checkpoint built from ``tests/parity``, salt 0, whose official
reference logits the fp32 files are then compared with, to 1e-4).

Rows, per model, runtime, precision and thread count: ms per image at batch 1, the median over every
timed call with min..max, timed in interleaved turns (`timing.time_in_turns`: the four files take
turns of ``--block`` calls for ``--rounds`` rounds, so load that comes and goes falls on all alike);
the agreement with the fp32 PyTorch model that the export measured (worst-image logit cosine, top-1
agreement, on the built-in test images or ``--calib-data``'s held-out ones); int8's speed-up against
fp32 in the same runtime at the same thread count (ratio of medians; and paired: the median over rounds
of the ratio of the two files' turns, adjacent in time, which cancels load that comes and goes). Results
are written after each model (``--json``), so a long run keeps what it measured; ``--files DIR`` keeps
the exported files, and a second run with it times them again without exporting.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from alphanet_zoo import Supernet
from alphanet_zoo._io import write_json
from alphanet_zoo.export import export_model, open_model, read_export_info
from alphanet_zoo.export.timing import cpu_name, time_in_turns

REPO = Path(__file__).resolve().parents[1]
PARITY = REPO / "tests" / "parity"
FILES = (("executorch", ".pte", "fp32"), ("executorch", ".pte", "int8"), ("tflite", ".tflite", "fp32"),
         ("tflite", ".tflite", "int8"))
RUNTIME = {"executorch": "ExecuTorch/XNNPACK", "tflite": "LiteRT/XNNPACK"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="a0,a1,a2,a3,a4,a5,a6")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--block", type=int, default=5, help="timed calls per turn")
    p.add_argument("--supernet", help="a supernet checkpoint (default: the salt-0 official-layout one, built)")
    p.add_argument("--calib-data", help="a folder of real images (int8 calibration, held-out verification)")
    p.add_argument("--json", help="write the results here (after each model)")
    p.add_argument("--files", help="keep the exported files in this folder, and time those already there instead "
                                   "of exporting them again (a second, quieter timing pass)")
    return p


def official_checkpoint(folder: Path) -> Path:
    out = folder / "alphanet_pretrained.pth.tar"
    subprocess.run([sys.executable, str(PARITY / "make_official_checkpoint.py"), str(out), "--salt", "0",
                    "--keys", str(PARITY / "official_supernet_keys.json")], check=True)
    return out


def reference_check(path: Path, name: str) -> float | None:
    """Largest difference between the file's logits and the official reference's (salt 0), or None."""
    ref = json.loads((PARITY / "reference_salt0.json").read_text())["subnets"].get(name)
    if ref is None:
        return None
    shape = ref["input"]["shape"]
    x = np.random.RandomState(ref["input"]["seed"]).standard_normal(shape).astype(np.float32)
    expected = np.asarray(ref["logits"], dtype=np.float32).reshape(shape[0], -1)
    with open_model(path) as model:
        return float(np.abs(model(x) - expected).max())


def bench_model(name: str, model: torch.nn.Module, folder: Path, args, official: bool) -> dict:
    side = model.arch.resolution
    entry = {"model": name, "resolution": side, "files": {}, "rows": []}
    paths = {}
    for fmt, suffix, precision in FILES:
        path = folder / f"{name}_{precision}{suffix}"
        start = time.perf_counter()
        exported = not path.is_file()
        if exported:
            export_model(model, path, fmt, precision=precision, calib_data=args.calib_data, min_cosine=-1.0,
                         min_top1=0.0, min_top5=0.0)
        info = read_export_info(path)
        a = info["agreement"]
        entry["files"][f"{fmt}-{precision}"] = {
            "export_s": round(time.perf_counter() - start, 1) if exported else None, "bytes": path.stat().st_size,
            "cosine_min": a["cosine_min"], "top1_agreement": a["top1_agreement"], "top5_overlap": a["top5_overlap"],
            "agreement_images": a["images"], "agreement_data": a["data"],
            "max_abs_diff_vs_official": reference_check(path, name) if official and precision == "fp32" else None}
        paths[fmt, precision] = path
        print(f"  {name} {fmt} {precision}: exported in {entry['files'][f'{fmt}-{precision}']['export_s']} s, "
              f"cosine {a['cosine_min']:.5f}, top-1 {100 * a['top1_agreement']:.0f} %", flush=True)
    x = np.ascontiguousarray(torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0)).numpy())
    for threads in [int(t) for t in args.threads.split(",")]:
        keys = list(paths)
        models = [open_model(paths[k], threads=threads) for k in keys]
        turns = time_in_turns([lambda m=m: m(x) for m in models], rounds=args.rounds, calls=args.block, warmup=2,
                              first_warmup=5)
        medians, rounds = {}, {}
        for (fmt, precision), t in zip(keys, turns):
            ms = [v * 1e3 for turn in t for v in turn]
            medians[fmt, precision] = statistics.median(ms)
            rounds[fmt, precision] = [statistics.median(turn) for turn in t]
            f = entry["files"][f"{fmt}-{precision}"]
            entry["rows"].append({"runtime": RUNTIME[fmt], "format": fmt, "precision": precision, "threads": threads,
                                  "batch": 1, "ms_median": statistics.median(ms), "ms_min": min(ms),
                                  "ms_max": max(ms), "calls": len(ms), "cosine_min": f["cosine_min"],
                                  "top1_agreement": f["top1_agreement"]})
        for row in entry["rows"]:
            if row["threads"] == threads and row["precision"] == "int8":
                row["speedup_vs_fp32"] = medians[row["format"], "fp32"] / row["ms_median"]
                # paired: per round, fp32's turn against int8's (adjacent in time), the median over rounds
                row["speedup_paired"] = statistics.median(
                    f / i for f, i in zip(rounds[row["format"], "fp32"], rounds[row["format"], "int8"]))
        for m in models:
            m.close()
    return entry


def table(results: list[dict]) -> str:
    lines = ["| model | runtime | precision | threads | ms/img median (min..max) | cosine | top-1 | "
             "int8 speed-up (paired) |", "|---|---|---|---:|---|---:|---:|---:|"]
    for e in results:
        for r in e["rows"]:
            speed = f"{r['speedup_vs_fp32']:.2f}x" if r.get("speedup_vs_fp32") else ""
            if r.get("speedup_paired"):
                speed += f" ({r['speedup_paired']:.2f}x)"
            lines.append(f"| {e['model']} | {r['runtime']} | {r['precision']} | {r['threads']} | "
                         f"{r['ms_median']:.2f} ({r['ms_min']:.2f}..{r['ms_max']:.2f}) | {r['cosine_min']:.5f} | "
                         f"{100 * r['top1_agreement']:.0f} % | {speed} |")
    return "\n".join(lines)


def main() -> None:
    args = parser().parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_mobile_") as tmp:
        folder = Path(args.files or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint = args.supernet or official_checkpoint(Path(tmp))
        supernet = Supernet.from_checkpoint(checkpoint).eval()
        results = {"cpu": cpu_name(), "torch": torch.__version__, "weights": str(args.supernet or "official salt 0"),
                   "settings": {"rounds": args.rounds, "block": args.block, "threads": args.threads,
                                "calib_data": args.calib_data}, "models": []}
        for name in args.models.split(","):
            model = supernet.extract(name).eval()
            print(f"{name}: exporting and timing", flush=True)
            results["models"].append(bench_model(name, model, folder, args, official=args.supernet is None))
            if args.json:
                write_json(args.json, results)
        print(f"\n{results['cpu']}, batch 1, weights {results['weights']}\n")
        print(table(results["models"]))


if __name__ == "__main__":
    main()
