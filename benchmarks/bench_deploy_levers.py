"""What makes the OpenVINO path fast, lever by lever: each variant of running AlphaNet on OpenVINO,
timed side by side against OpenVINO's default compile of our fp32 ONNX (what a user does by hand).

    python benchmarks/bench_deploy_levers.py --models a0,a6 --threads 2 --rounds 40 --json levers.json

Variants (all on the same weights, ``--threads`` threads):

- ``ov-default``: ``Core().compile_model(onnx, "CPU", {"INFERENCE_NUM_THREADS": N})``: dynamic batch,
  OpenVINO's defaults (latency hint, bf16 where the CPU has it, threads pinned). The baseline.
- ``shipped``: what ``alphanet-export --format openvino`` writes, opened by ``open_model(path, threads=N)``:
  the graph pass (hard sigmoid folded), static shapes, batches split across one-thread streams,
  threads pinned.
- ``shipped-nopin`` / ``shipped-nosplit`` / ``shipped-no-passes``: the same without thread pinning /
  without splitting batches across streams / on the IR converted without our graph passes.
- ``dynamic-ours``: our compile settings on the dynamic-batch model (isolates the static-shape lever).
- ``static``: the model reshaped to the call's batch size, compiled with OpenVINO's defaults.
- ``static-nopin``: the same without thread pinning.
- ``static-tput``: throughput hint, one stream per thread, the batch split across the streams
  (asynchronous requests); batch > 1 only.
- ``static-f32``: fp32 inference (no bf16).
- ``static-hsig``: squeeze-excite's hard sigmoid folded into the preceding 1x1 conv (weights / 6,
  bias / 6 + 0.5) and a Clamp(0, 1), which OpenVINO fuses into the conv.
- ``static-poolconv``: the shortcut's 2x2 average pool followed by its 1x1 conv replaced by one
  2x2 stride-2 conv (weights / 4).
- ``static-int8``: the int8 QDQ model (`alphanet_zoo.export.quantize`, convs and classifier only).

Timing: rounds (`alphanet_zoo.export.timing.time_in_turns`); in each, every variant in turn pauses,
runs untimed for 0.1 s (at least once) and then ``--block`` timed calls. Reported per variant and
batch size: the median ms per image over all calls, min..max, and the *paired* ratio: the median
over rounds of (baseline's median in that round / the variant's), which cancels load that comes and goes between rounds.
Agreement with fp32 PyTorch: logit cosine (worst of the built-in test images). Weights are random
(seed 0; timings do not depend on them).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from onnx import ModelProto, helper, numpy_helper

from alphanet_zoo import AlphaNet
from alphanet_zoo._io import write_json
from alphanet_zoo.export import export_model, open_model, read_export_info, to_onnx
from alphanet_zoo.export.graph_passes import fold_hard_sigmoid
from alphanet_zoo.export.images import builtin_images
from alphanet_zoo.export.openvino_export import convert_onnx, save_ir
from alphanet_zoo.export.quantize import quantize_onnx
from alphanet_zoo.export.runtime import OpenVinoModel, openvino_core
from alphanet_zoo.export.timing import cpu_name, time_in_turns


# ---- a lever that did not pay off, kept here to measure it ---------------------------------------------

def fold_pool_into_conv(model: ModelProto) -> int:
    """``AveragePool(2x2, stride 2)`` then a 1x1 ``Conv`` -> one 2x2 stride-2 ``Conv``; returns the count."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    count = 0
    for pool in list(graph.node):
        if pool.op_type != "AveragePool":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in pool.attribute}
        users = consumers.get(pool.output[0], [])
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if attrs.get("kernel_shape") != [2, 2] or attrs.get("strides") != [2, 2] or attrs.get("ceil_mode", 0) \
                or (any(pads) and not attrs.get("count_include_pad", 0)) or len(users) != 1:
            continue
        conv = users[0]
        conv_attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        if conv.op_type != "Conv" or conv.input[1] not in inits or conv_attrs.get("group", 1) != 1 \
                or any(conv_attrs.get("pads", [])) or conv_attrs.get("strides", [1, 1]) != [1, 1]:
            continue
        w = numpy_helper.to_array(inits[conv.input[1]])
        if w.shape[2:] != (1, 1):
            continue
        name = f"{conv.name}/pooled_w"
        graph.initializer.append(numpy_helper.from_array((np.tile(w, (1, 1, 2, 2)) / 4).astype(np.float32), name))
        fused = helper.make_node("Conv", [pool.input[0], name, *conv.input[2:]], list(conv.output),
                                 name=f"{conv.name}/pooled", kernel_shape=[2, 2], strides=[2, 2], pads=pads)
        index = list(graph.node).index(conv)
        graph.node.remove(conv)
        graph.node.insert(index, fused)
        graph.node.remove(pool)
        count += 1
    return count



# ---- variants --------------------------------------------------------------------------------------

def _static(path: Path, batch: int, side: int, config: dict) -> Callable[[np.ndarray], np.ndarray]:
    core = openvino_core()
    model = core.read_model(str(path))
    model.reshape([batch, 3, side, side])
    request = core.compile_model(model, "CPU", config).create_infer_request()
    return lambda x: np.array(request.infer(x, share_inputs=True, share_outputs=True)[0])


def _split(path: Path, batch: int, side: int, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    core = openvino_core()
    model = core.read_model(str(path))
    model.reshape([batch // threads, 3, side, side])
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": threads,
                                                 "PERFORMANCE_HINT": "THROUGHPUT"})
    requests = [compiled.create_infer_request() for _ in range(threads)]
    part = batch // threads

    def run(x: np.ndarray) -> np.ndarray:
        for i, r in enumerate(requests):
            r.start_async(x[i * part:(i + 1) * part], share_inputs=True)
        for r in requests:
            r.wait()
        return np.concatenate([r.get_output_tensor(0).data for r in requests])

    return run


def make_variants(model: AlphaNet, folder: Path, batch: int, threads: int, shipped: Path) -> dict[str, Callable]:
    side = model.arch.resolution
    onnx_path = folder / "fp32.onnx"
    variants: dict[str, Callable] = {}
    core = openvino_core()
    baseline = core.compile_model(str(onnx_path), "CPU", {"INFERENCE_NUM_THREADS": threads}).create_infer_request()
    variants["ov-default"] = lambda x: baseline.infer(x)[0]
    precision = read_export_info(shipped)["runtime"]["inference_precision"]
    variants["shipped"] = open_model(shipped, threads=threads)
    variants["shipped-nopin"] = OpenVinoModel(shipped, None, None, threads, "cpu", inference_precision=precision,
                                              pin=False)
    variants["shipped-nosplit"] = OpenVinoModel(shipped, None, None, threads, "cpu", inference_precision=precision,
                                                split=False)
    plain_ir = folder / "plain.xml"
    if not plain_ir.exists():
        save_ir(convert_onnx(onnx_path), plain_ir, {}, None)
    variants["shipped-no-passes"] = OpenVinoModel(plain_ir, None, None, threads, "cpu",
                                                  inference_precision=precision)
    dynamic = core.compile_model(str(onnx_path), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT":
                                                         "LATENCY", "NUM_STREAMS": 1}).create_infer_request()
    variants["dynamic-ours"] = lambda x: np.array(dynamic.infer(x, share_inputs=True, share_outputs=True)[0])
    base = {"INFERENCE_NUM_THREADS": threads}
    variants["static"] = _static(onnx_path, batch, side, base)
    variants["static-nopin"] = _static(onnx_path, batch, side, {**base, "ENABLE_CPU_PINNING": False})
    if batch > 1 and batch % threads == 0 and threads > 1:
        variants["static-tput"] = _split(onnx_path, batch, side, threads)
    variants["static-f32"] = _static(onnx_path, batch, side, {**base, "INFERENCE_PRECISION_HINT": "f32"})
    for name, surgery in (("hsig", fold_hard_sigmoid), ("poolconv", fold_pool_into_conv)):
        path = folder / f"{name}.onnx"
        if not path.exists():
            proto = onnx.load(str(onnx_path))
            surgery(proto)
            onnx.save(proto, str(path))
        variants[f"static-{name}"] = _static(path, batch, side, base)
    int8 = folder / "int8.onnx"
    if not int8.exists():
        quantize_onnx(onnx_path, int8, builtin_images(model.pretrained_cfg.preprocessing), "built-in test images")
    variants["static-int8"] = _static(int8, batch, side, base)
    return variants


def deploy_parser(doc: str, *, models: str = "a0,a6", rounds: int | None = 30,
                  batches: bool = True) -> argparse.ArgumentParser:
    """The flags the deployment benchmarks share: --models --threads [--batches] [--rounds --block] --json."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--models", default=models)
    parser.add_argument("--threads", type=int, default=2)
    if batches:
        parser.add_argument("--batches", default="1,16")
    if rounds is not None:
        parser.add_argument("--rounds", type=int, default=rounds)
        parser.add_argument("--block", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    return parser


def print_summary(title: str, summary: dict, last: Callable[[dict], str], width: int = 16) -> None:
    """One line per row of `summarise`'s output: median [min..max] ms per image, paired speed-up, ``last(row)``."""
    print(f"\n{title}")
    for row, s in summary.items():
        print(f"  {row:<{width}} {s['median_ms_per_image']:7.3f} [{s['min']:6.3f}..{s['max']:7.3f}]  "
              f"x{s['paired_speedup_vs_baseline']:.3f}  {last(s)}")


def interleaved(variants: dict[str, Callable], x: np.ndarray, rounds: int, block: int,
                settle_s: float = 0.1) -> dict[str, list[list[float]]]:
    """Per variant, per round: the ms per image of each timed call, the variants taking turns
    (`alphanet_zoo.export.timing.time_in_turns`): each turn a pause, untimed calls for ``settle_s`` seconds
    (at least one), then ``block`` timed calls. The previous variant's thread pool (ONNX Runtime's and
    OpenMP's spinning workers) keeps the cores busy for a while after its last call."""
    names = list(variants)
    turns = time_in_turns([lambda run=variants[n]: run(x) for n in names], rounds=rounds, calls=block, warmup=1,
                          first_warmup=3, settle_s=settle_s)
    return {n: [[s * 1e3 / len(x) for s in turn] for turn in t] for n, t in zip(names, turns)}


def summarise(times: dict[str, list[list[float]]], baseline: str = "ov-default") -> dict[str, dict]:
    base_rounds = [statistics.median(c) for c in times[baseline]]
    out = {}
    for name, rounds in times.items():
        flat = [v for calls in rounds for v in calls]
        per_round = [statistics.median(c) for c in rounds]
        out[name] = {"median_ms_per_image": statistics.median(flat), "min": min(flat), "max": max(flat),
                     "paired_speedup_vs_baseline": statistics.median(b / v for b, v in zip(base_rounds, per_round))}
    return out


def main() -> None:
    args = deploy_parser(__doc__).parse_args()
    torch.set_num_threads(args.threads)
    results: dict = {"cpu": cpu_name(), "threads": args.threads, "rounds": args.rounds, "block": args.block,
                     "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = AlphaNet(name).eval()
            folder = Path(tmp) / name
            folder.mkdir()
            to_onnx(model, folder / "fp32.onnx", verify=False)
            shipped = export_model(model, folder / "shipped.xml", "openvino", threads=args.threads)
            print(f"{name}: shipped precision {shipped.precision} ({shipped.export_info['choice']['reason']})",
                  file=sys.stderr)
            images = builtin_images(model.pretrained_cfg.preprocessing).numpy()
            with torch.inference_mode():
                reference = model(torch.from_numpy(images)).numpy()
            results["models"][name] = {"shipped_precision": shipped.precision, "batches": {}}
            for batch in map(int, args.batches.split(",")):
                variants = make_variants(model, folder, batch, args.threads, shipped.path)
                x = np.ascontiguousarray(np.random.RandomState(batch).standard_normal(
                    (batch, 3, model.arch.resolution, model.arch.resolution)).astype(np.float32))
                summary = summarise(interleaved(variants, x, args.rounds, args.block))
                usable = len(images) // batch * batch
                for v, run in variants.items():  # agreement on the built-in images, in batches of this size
                    if not usable:
                        summary[v]["cosine_min"] = float("nan")
                        continue
                    got = np.concatenate([np.asarray(run(images[i:i + batch])) for i in range(0, usable, batch)])
                    ref = reference[:usable]
                    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
                    summary[v]["cosine_min"] = float(cos.min())
                results["models"][name]["batches"][batch] = summary
                print_summary(f"{name} batch {batch}: ms/image median [min..max], paired speed-up vs ov-default, "
                              "cosine", summary, lambda s: f"cos {s['cosine_min']:.6f}")
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
