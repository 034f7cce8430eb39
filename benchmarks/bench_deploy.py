"""Deployment benchmark (issue 12): our best CPU path against OpenVINO's default and ONNX Runtime.

    python benchmarks/bench_deploy.py --models a0,a6 --threads 2 --rounds 30 --json deploy.json
    python benchmarks/bench_deploy.py --supernet alphanet_pretrained.pth.tar --calib-data /data/imagenet/val

Rows, per model at batch 1 and 16, ms per image:

- ``ours``: what ``alphanet-export --format openvino`` writes (default precision: auto), opened with
  ``open_model(path, threads=N)``: the bar's subject;
- ``ov-default``: OpenVINO's default compile of our fp32 ONNX, ``Core().compile_model(onnx, "CPU",
  {"INFERENCE_NUM_THREADS": N})``, as a user would do by hand: the bar;
- ``ort-fp32`` / ``ort-int8``: our ONNX file / its int8 QDQ model on ONNX Runtime (`open_model`);
- ``ov-fp32`` / ``ov-int8``: our IR in fp32 / int8 (`open_model`);
- ``ort-int8-convs`` / ``ov-int8-all``: each runtime with the other's int8 recipe: ONNX Runtime with
  only the convolutions and the classifier quantized, OpenVINO with every op the quantizer can;
- ``eager``: the PyTorch model.

Timed in interleaved rounds (`bench_deploy_levers.interleaved`): the median over all calls, min..max,
and the paired speed-up against ``ov-default`` (median over rounds of the per-round ratio), which
cancels load that comes and goes. Agreement with fp32 PyTorch on the built-in test images (or
``--calib-data``'s): worst-image logit cosine and top-1 agreement. The bar: ``ours`` at least as fast as
``ov-default`` in all four cells (goal 1.25x), cosine >= 0.999.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_deploy_levers import deploy_parser, interleaved, summarise

from alphanet_zoo._io import write_json
from alphanet_zoo.commands import export as export_cli
from alphanet_zoo.export import export_model, open_model, read_export_info, to_onnx
from alphanet_zoo.export.agreement import measure_agreement
from alphanet_zoo.export.images import image_sets
from alphanet_zoo.export.openvino_export import convert_onnx, save_ir
from alphanet_zoo.export.quantize import ONNXRUNTIME_OPS, OPENVINO_OPS, quantize_onnx
from alphanet_zoo.export.runtime import openvino_core
from alphanet_zoo.export.timing import cpu_name, torch_threads
from alphanet_zoo.registry import model_info
from alphanet_zoo.weights import WeightsLoader


def runners(model, folder: Path, name: str, threads: int, calib_data: str | None) -> dict:
    """Every row's callable (numpy in, logits out), after exporting what it runs."""
    ours = folder / "ours.xml"
    saved = model.save_pretrained(folder / "weights")  # the very weights of the other rows, random ones too
    argv = ["--arch", name, "--weights", str(saved), "--format", "openvino", "--out", str(ours), "--threads",
            str(threads)]
    if export_cli.main(argv) != 0:
        raise SystemExit(f"alphanet-export failed for {name}")
    fp32 = folder / "fp32.onnx"
    to_onnx(model, fp32, verify=False)
    reduced = {"min_cosine": -1.0, "calib_data": calib_data}  # report int8's agreement, refuse nothing
    export_model(model, folder / "int8.onnx", "onnx", precision="int8", **reduced)
    export_model(model, folder / "int8.xml", "openvino", precision="int8", **reduced)
    export_model(model, folder / "fp32.xml", "openvino", precision="fp32")
    # each runtime with the other's int8 recipe: ONNX Runtime with the convolutions (and classifier) only,
    # OpenVINO with every op the quantizer can (QDQ around swish, squeeze-excite, additions too)
    images = image_sets(model.pretrained_cfg.preprocessing, calib_data).calibration
    quantize_onnx(fp32, folder / "int8_convs.onnx", images, "calibration images", op_types=OPENVINO_OPS)
    quantize_onnx(fp32, folder / "int8_all.onnx", images, "calibration images", op_types=ONNXRUNTIME_OPS)
    save_ir(convert_onnx(folder / "int8_all.onnx"), folder / "int8_all.xml", model.pretrained_cfg.to_dict(), None)
    baseline = openvino_core().compile_model(str(fp32), "CPU", {"INFERENCE_NUM_THREADS": threads})
    request = baseline.create_infer_request()

    def eager(x: np.ndarray) -> np.ndarray:
        with torch_threads(threads), torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return {"ours": open_model(ours, threads=threads), "ov-default": lambda x: request.infer(x)[0],
            "ort-fp32": open_model(fp32, threads=threads), "ort-int8": open_model(folder / "int8.onnx",
                                                                                  threads=threads),
            "ort-int8-convs": open_model(folder / "int8_convs.onnx", threads=threads),
            "ov-fp32": open_model(folder / "fp32.xml", threads=threads),
            "ov-int8": open_model(folder / "int8.xml", threads=threads),
            "ov-int8-all": open_model(folder / "int8_all.xml", threads=threads), "eager": eager}


def main() -> None:
    parser = deploy_parser(__doc__)
    parser.add_argument("--supernet", help="weights: a supernet checkpoint (default: random weights, seed 0)")
    parser.add_argument("--calib-data", help="real images for int8 calibration and agreement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = args.supernet or "random"
    results: dict = {"cpu": cpu_name(), "threads": args.threads, "rounds": args.rounds, "block": args.block,
                     "weights": weights, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = WeightsLoader(weights).load(_arch(name), name).eval()
            folder = Path(tmp) / name
            folder.mkdir()
            rows = runners(model, folder, name, args.threads, args.calib_data)
            info = read_export_info(folder / "ours.xml")
            images = image_sets(model.pretrained_cfg.preprocessing, args.calib_data).verification
            with torch.inference_mode():
                reference = model(images).numpy()
            entry = results["models"][name] = {"ours": {"precision": info["precision"],
                                                        "choice": info["choice"]["reason"]}, "agreement": {},
                                               "batches": {}}
            print(f"{name}: ours = {info['precision']} ({info['choice']['reason']})", file=sys.stderr)
            for row, run in rows.items():
                got = np.concatenate([np.asarray(run(images[i:i + 16].numpy())) for i in range(0, len(images), 16)])
                a = measure_agreement(reference, got, "verification images")
                entry["agreement"][row] = a.to_dict()
            for batch in map(int, args.batches.split(",")):
                x = np.ascontiguousarray(np.random.RandomState(batch).standard_normal(
                    (batch, 3, model.arch.resolution, model.arch.resolution)).astype(np.float32))
                entry["batches"][batch] = summarise(interleaved(rows, x, args.rounds, args.block))
    print(f"\n{results['cpu']}, {args.threads} threads, {args.rounds} rounds x {args.block} calls, weights {weights}")
    print("ms per image: median [min..max] (paired speed-up vs ov-default); agreement with fp32 PyTorch")
    for name, entry in results["models"].items():
        for batch, summary in entry["batches"].items():
            print(f"\n{name} batch {batch}")
            for row, s in summary.items():
                a = entry["agreement"][row]
                print(f"  {row:<11} {s['median_ms_per_image']:7.3f} [{s['min']:6.3f}..{s['max']:7.3f}] "
                      f"x{s['paired_speedup_vs_baseline']:.3f}   cosine {a['cosine_min']:.5f} "
                      f"top-1 {100 * a['top1_agreement']:.0f}%")
    if args.json:
        write_json(args.json, results)


def _arch(name: str):
    return model_info(name).arch


if __name__ == "__main__":
    main()
