"""Where the time goes: per-op profiles of AlphaNet on OpenVINO and ONNX Runtime, side by side.

    python benchmarks/profile_deploy.py --models a0,a6 --threads 2 --calls 30 --json profile.json

For each model and batch size: OpenVINO's own per-node counters (``PERF_COUNT``) of our shipped IR
(what ``alphanet-export --format openvino`` writes, at its precision, static shape, latency
setting) and of OpenVINO's default compile of our fp32 ONNX, and ONNX Runtime's profiler on our
fp32 ONNX; each summed by op type (OpenVINO: with the kernel it chose), in ms per batch and as a
share of the total. Weights are random (seed 0; timings do not depend on them).
"""
from __future__ import annotations

import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench_deploy_levers import deploy_parser

from alphanet_zoo import AlphaNet
from alphanet_zoo._io import write_json
from alphanet_zoo.export import export_model, read_export_info, to_onnx
from alphanet_zoo.export.runtime import openvino_core
from alphanet_zoo.export.timing import cpu_name


def openvino_profile(path: Path, batch: int, side: int, threads: int, precision: str | None,
                     calls: int) -> dict[str, float]:
    core = openvino_core()
    model = core.read_model(str(path))
    model.reshape([batch, 3, side, side])
    config = {"INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    request = core.compile_model(model, "CPU", config).create_infer_request()
    x = np.random.RandomState(0).standard_normal((batch, 3, side, side)).astype(np.float32)
    for _ in range(3):
        request.infer(x)
    totals: dict[str, float] = collections.defaultdict(float)
    for _ in range(calls):
        request.infer(x)
        for p in request.profiling_info:
            if p.status == p.Status.EXECUTED:
                totals[f"{p.node_type} ({p.exec_type})"] += p.real_time.total_seconds() * 1e3 / calls
    return dict(totals)


def onnxruntime_profile(path: Path, batch: int, side: int, threads: int, calls: int, folder: Path) -> dict:
    """ONNX Runtime's profiler: kernel time per op type, ms per run (the 3 warm-up runs left out)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / f"ort_{batch}")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.RandomState(0).standard_normal((batch, 3, side, side)).astype(np.float32)
    for _ in range(3 + calls):
        session.run(None, {"input": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    first_timed = runs[3] if len(runs) > 3 else 0
    totals: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= first_timed:
            totals[e["args"]["op_name"]] += e["dur"] / 1e3 / calls
    return dict(totals)


def shares(totals: dict[str, float], top: int = 12) -> list[tuple[str, float, float]]:
    total = sum(totals.values()) or 1.0
    return [(k, v, 100 * v / total) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])[:top]]


def main() -> None:
    parser = deploy_parser(__doc__, rounds=None)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict = {"cpu": cpu_name(), "threads": args.threads, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = AlphaNet(name).eval()
            folder = Path(tmp) / name
            folder.mkdir()
            onnx_path = folder / "fp32.onnx"
            to_onnx(model, onnx_path, verify=False)
            shipped = export_model(model, folder / "ours.xml", "openvino", threads=args.threads)
            hint = read_export_info(shipped.path)["runtime"]["inference_precision"]
            side = model.arch.resolution
            entry = results["models"][name] = {}
            for batch in map(int, args.batches.split(",")):
                profiles = {"openvino-ours": openvino_profile(shipped.path, batch, side, args.threads, hint,
                                                              args.calls),
                            "openvino-default": openvino_profile(onnx_path, batch, side, args.threads, None,
                                                                 args.calls),
                            "onnxruntime": onnxruntime_profile(onnx_path, batch, side, args.threads, args.calls,
                                                               folder)}
                entry[batch] = profiles
                for runtime, totals in profiles.items():
                    total = sum(totals.values())
                    print(f"\n{name} batch {batch} {runtime}: {total:.2f} ms per batch in ops "
                          f"({total / batch:.3f} ms per image)")
                    for op, ms, share in shares(totals):
                        print(f"  {op:<52} {ms:8.3f} ms {share:5.1f} %")
    print(f"\n{results['cpu']}, {args.threads} threads", file=sys.stderr)
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
