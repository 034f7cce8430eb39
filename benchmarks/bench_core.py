"""Core and zoo benchmarks: checkpoint loading, extraction, FLOPs counting, supernet overhead, cold start.

    python benchmarks/bench_core.py [--repeats 7] [--json out.json]

Medians of ``--repeats`` runs, measured side by side in one process (cold starts in fresh processes).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import alphanet_zoo  # noqa: E402
from alphanet_zoo.checkpoint import read_state_dict  # noqa: E402


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cold_start(code: str, env: dict, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    r = args.repeats
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "alphanet_pretrained.pth.tar"
        subprocess.run([sys.executable, str(REPO / "tests/parity/make_official_checkpoint.py"), str(ckpt),
                        "--salt", "0"], check=True)
        results["checkpoint_MB"] = ckpt.stat().st_size / 1e6
        results["torch.load(weights_only)_s"] = median_time(lambda: read_state_dict(ckpt), r)
        results["Supernet.from_checkpoint(official)_s"] = median_time(
            lambda: alphanet_zoo.Supernet.from_checkpoint(ckpt), r)
        supernet = alphanet_zoo.Supernet.from_checkpoint(ckpt)
        own = tmp / "supernet.safetensors"
        supernet.save(own)
        results["Supernet.from_checkpoint(safetensors)_s"] = median_time(
            lambda: alphanet_zoo.Supernet.from_checkpoint(own), r)
        for name in alphanet_zoo.list_models():
            results[f"extract_{name}_s"] = median_time(lambda: supernet.extract(name), r)
        arch = alphanet_zoo.SEARCH_SPACE.sample(0)
        count = alphanet_zoo.flops._count.__wrapped__
        results["count_flops_uncached_us"] = median_time(lambda: [count(arch, 1000) for _ in range(1000)], r) * 1e3
        results["count_flops_cached_us"] = median_time(
            lambda: [alphanet_zoo.count_flops(arch) for _ in range(1000)], r) * 1e3

        # the supernet runs the subnet's own module tree on sliced tensors: its overhead, side by side
        a0 = supernet.extract("a0").train()
        supernet.train()
        x = torch.randn(8, 3, 192, 192)

        def step(fn):
            fn().sum().backward()

        results["a0_static_fwd_bwd_b8_s"] = median_time(lambda: step(lambda: a0(x)), r)
        results["a0_supernet_fwd_bwd_b8_s"] = median_time(lambda: step(lambda: supernet(x, "a0")), r)

        # cold process: load cached weights and classify the first image
        a0.eval()
        folder = a0.save_pretrained(tmp / "a0")
        env = dict(os.environ, HF_HOME=str(tmp / "hf"), HF_HUB_DISABLE_PROGRESS_BARS="1")
        from fake_hub import FakeHub

        with FakeHub() as hub:
            hub.add_folder("alphanet-zoo/alphanet-a0", folder)
            env["HF_ENDPOINT"] = hub.url
            subprocess.run([sys.executable, "-c", "import alphanet_zoo; alphanet_zoo.load('a0', pretrained=True)"],
                           check=True, env=env)
        env["HF_HUB_OFFLINE"] = "1"
        photo = REPO / "tests/parity/photo.png"
        results["cold_import_s"] = cold_start("import alphanet_zoo", env, r)
        results["cold_load_cached_and_predict_first_image_s"] = cold_start(
            f"import alphanet_zoo; m = alphanet_zoo.load('a0', pretrained=True); "
            f"alphanet_zoo.predict(m, [{str(photo)!r}])", env, r)
        results["cold_load_folder_and_predict_first_image_s"] = cold_start(
            f"import alphanet_zoo; m = alphanet_zoo.load({str(folder)!r}); "
            f"alphanet_zoo.predict(m, [{str(photo)!r}])", env, r)
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:10.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
