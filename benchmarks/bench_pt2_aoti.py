"""Does an AOTInductor package pay off on CPU? The ``--format pt2`` ExportedProgram against the same
program compiled ahead of time by AOTInductor, eager PyTorch, ONNX Runtime and our OpenVINO path.

    python benchmarks/bench_pt2_aoti.py --models a0 --threads 2 --rounds 20 --json aoti.json

For each model: the compile time of ``torch._inductor.aoti_compile_and_package`` (a C++ build of the
whole network), the package's size and load time, then ms per image at batch 1 and 16, interleaved
(`bench_deploy_levers.interleaved`), with the paired speed-up against the ExportedProgram, and the
largest logit difference from eager fp32. Weights are random (seed 0).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_deploy_levers import deploy_parser, interleaved, print_summary, summarise

from alphanet_zoo import AlphaNet
from alphanet_zoo._io import write_json
from alphanet_zoo.export import export_model, open_model, to_onnx
from alphanet_zoo.export.pt2_export import exported_program
from alphanet_zoo.export.timing import cpu_name, torch_threads


def main() -> None:
    parser = deploy_parser(__doc__, models="a0", rounds=20, batches=False)
    parser.add_argument("--torch-only", action="store_true",
                        help="time the torch rows only (no ONNX Runtime or OpenVINO threads in the process)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = AlphaNet(name).eval()
            folder = Path(tmp) / name
            folder.mkdir()
            program = exported_program(model)
            start = time.perf_counter()
            package = torch._inductor.aoti_compile_and_package(program, package_path=str(folder / "model.pt2"))
            compile_s = time.perf_counter() - start
            start = time.perf_counter()
            compiled = torch._inductor.aoti_load_package(package)
            load_s = time.perf_counter() - start
            module = program.module()
            to_onnx(model, folder / "fp32.onnx", verify=False)
            ours = export_model(model, folder / "ours.xml", "openvino", threads=args.threads)

            def torch_run(fn):
                def run(x: np.ndarray) -> np.ndarray:
                    with torch_threads(args.threads), torch.inference_mode():
                        return fn(torch.from_numpy(x)).numpy()
                return run

            rows = {"exported-program": torch_run(module), "aoti": torch_run(compiled), "eager": torch_run(model)}
            if not args.torch_only:
                rows |= {"onnxruntime": open_model(folder / "fp32.onnx", threads=args.threads),
                         "openvino-ours": open_model(ours.path, threads=args.threads)}
            entry = results["models"][name] = {"aoti_compile_s": compile_s, "aoti_load_s": load_s,
                                               "aoti_bytes": Path(package).stat().st_size, "batches": {}}
            print(f"{name}: AOTInductor compile {compile_s:.1f} s, load {load_s:.2f} s, "
                  f"{entry['aoti_bytes'] / 1e6:.1f} MB", file=sys.stderr)
            for batch in (1, 16):
                x = np.ascontiguousarray(np.random.RandomState(batch).standard_normal(
                    (batch, 3, model.arch.resolution, model.arch.resolution)).astype(np.float32))
                with torch.inference_mode():
                    expected = model(torch.from_numpy(x)).numpy()
                summary = summarise(interleaved(rows, x, args.rounds, args.block), baseline="exported-program")
                for row, run in rows.items():
                    summary[row]["max_abs_diff"] = float(np.abs(np.asarray(run(x)) - expected).max())
                entry["batches"][batch] = summary
                print_summary(f"{name} batch {batch}: ms/image median [min..max], paired speed-up vs exported-program",
                              summary, lambda s: f"max diff {s['max_abs_diff']:.1e}", width=17)
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
