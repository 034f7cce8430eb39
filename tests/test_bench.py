"""alphanet-bench: every backend timed on the same model, checked against eager, reported as a
table and as JSON. No timing is asserted: the numbers are checked for consistency only (medians,
ratios and agreement recomputed here from the rows' own raw figures)."""
from __future__ import annotations

import dataclasses
import json
import statistics

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from alphanet_zoo.commands import bench as bench_command
from alphanet_zoo.export import bench

import alphanet_zoo
from alphanet_zoo import SEARCH_SPACE, AlphaNet, count_flops

REDUCED = {"openvino-bf16": "bf16", "onnxruntime-int8": "int8", "openvino-int8": "int8"}


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory):
    smallest = SEARCH_SPACE.smallest()
    arch = dataclasses.replace(smallest, width=(24, 24, *smallest.width[2:]))
    path = tmp_path_factory.mktemp("bench") / "small.json"
    path.write_text(json.dumps(arch.to_dict()))
    return path, arch


@pytest.fixture(scope="module")
def report(tmp_path_factory, arch_file):
    """One run of every available backend at batch 1 and 2, JSON to a file (ceilings on small matrices)."""
    path, arch = arch_file
    out = tmp_path_factory.mktemp("report") / "bench.json"
    size = bench.GEMM_SIZE
    bench.GEMM_SIZE = 256  # the ceilings' measurement, kept small for the test
    try:
        code = bench_command.main(["--arch", str(path), "--backend", "all", "--batch-size", "2", "--threads", "1",
                           "--warmup", "1", "--repeats", "3", "--out", str(out)])
    finally:
        bench.GEMM_SIZE = size
    assert code == 0
    return json.loads(out.read_text()), arch


@pytest.mark.slow  # one run of every backend: about a minute
def test_every_backend_is_a_row_at_each_batch_size(report):
    doc, arch = report
    rows = doc["rows"]
    backends = bench.available_backends()
    assert [(r["backend"], r["batch"]) for r in rows] == [(b, n) for n in (1, 2) for b in backends]
    assert doc["settings"]["backends"] == backends and doc["environment"]["threads"] == 1
    assert {"eager", "eager-cl", "torchscript", "pt2", "onnxruntime", "onnxruntime-int8"} <= set(backends)
    assert "compile" not in backends  # opt-in only
    params = sum(p.numel() for p in AlphaNet(arch).parameters())
    for r in rows:
        assert r["model"] == "small" and r["threads"] == 1
        assert r["params"] == params and r["mflops"] == round(count_flops(arch), 2)
        assert r["precision"] == REDUCED.get(r["backend"], r["precision"])


@pytest.mark.slow  # one run of every backend: about a minute
def test_medians_ratios_and_flops_follow_from_the_raw_times(report):
    rows = report[0]["rows"]
    for r in rows:
        times = r["times_ms"]
        assert len(times) == 3
        assert r["ms_per_batch"] == pytest.approx(statistics.median(times))
        assert r["ms_per_batch"] == pytest.approx(sorted(times)[1])  # the middle of three, by hand
        assert r["ms_per_image"] == pytest.approx(r["ms_per_batch"] / r["batch"])
        assert r["best_ms_per_image"] == pytest.approx(min(times) / r["batch"])
        assert r["worst_ms_per_image"] == pytest.approx(max(times) / r["batch"])
        assert r["images_per_s"] == pytest.approx(r["batch"] / r["ms_per_batch"] * 1e3)
        assert r["gflops_per_s"] == pytest.approx(2 * r["mflops"] * r["images_per_s"] / 1e3, rel=1e-3)
        assert r["cold_start_s"] is not None and r["cold_start_s"] > 0
    for n in (1, 2):
        same = [r for r in rows if r["batch"] == n]
        eager = next(r for r in same if r["backend"] == "eager")
        best = min(r["ms_per_batch"] for r in same)
        for r in same:
            assert r["speedup_vs_eager"] == pytest.approx(eager["ms_per_batch"] / r["ms_per_batch"])
            assert r["vs_best"] == pytest.approx(r["ms_per_batch"] / best)
        assert min(r["vs_best"] for r in same) == pytest.approx(1.0)


@pytest.mark.slow  # one run of every backend: about a minute
def test_ceilings_are_measured_and_matched_to_each_rows_precision(report):
    doc = report[0]
    ceilings = doc["gemm"]["ceilings"]
    assert set(ceilings) == {"fp32", "bf16", "int8"} and all(v > 0 for v in ceilings.values())
    assert doc["gemm"]["gflops_per_s"] == ceilings["fp32"] and doc["gemm"]["size"] == 256
    for r in doc["rows"]:
        kind = {"int8": "int8", "bf16": "bf16"}.get(r["precision"], "fp32")
        assert r["ceiling"] == kind
        assert r["ceiling_fraction"] == pytest.approx(r["gflops_per_s"] / ceilings[kind])


@pytest.mark.slow  # one run of every backend: about a minute
def test_agreement_with_fp32_per_row(report, arch_file):
    rows = report[0]["rows"]
    for r in rows:
        assert r["agreement_images"] == 16
        if r["precision"] == "fp32":
            assert r["max_abs_diff_vs_eager"] <= 1e-4 and r["cosine_min"] > 0.99999 and r["top1_agreement"] == 1.0
        elif r["precision"] == "bf16":
            assert r["cosine_min"] > 0.99  # bf16 keeps the direction of the logits
        assert -1 <= r["cosine_min"] <= 1 and 0 <= r["top1_agreement"] <= 1 and 0 <= r["top5_overlap"] <= 1
    eager = [r for r in rows if r["backend"] == "eager"]
    assert all(r["cosine_min"] == pytest.approx(1.0) and r["max_abs_diff_vs_eager"] == 0 for r in eager)


def test_json_mode_prints_only_json(capsys, arch_file):
    path, _ = arch_file
    code = bench_command.main(["--arch", str(path), "--backend", "onnxruntime", "--batch-size", "1", "--threads", "1",
                       "--warmup", "0", "--repeats", "1", "--no-gemm", "--no-agreement", "--json"])
    captured = capsys.readouterr()
    assert code == 0
    doc = json.loads(captured.out)
    assert [r["backend"] for r in doc["rows"]] == ["eager", "onnxruntime"]  # eager always, as the reference
    assert doc["gemm"]["ceilings"] is None and all(r["ceiling_fraction"] is None for r in doc["rows"])
    assert all(r["cosine_min"] is None for r in doc["rows"])
    assert "GFLOP/s" not in captured.out and "thread(s)" in captured.err


@pytest.mark.slow  # seconds of subprocesses or compiles: CI runs it, the quick loop does not
def test_table_with_supernet_weights(capsys, official_checkpoint, monkeypatch):
    monkeypatch.setattr(bench, "GEMM_SIZE", 256)
    code = bench_command.main(["--arch", "a0", "--backend", "onnxruntime", "--batch-size", "1", "--threads", "1",
                               "--warmup", "0", "--repeats", "1", "--supernet", str(official_checkpoint),
                               "--no-agreement"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "alphanet_pretrained.pth.tar" in printed and "GFLOP/s" in printed and "int8" in printed
    rows = [line.split() for line in printed.splitlines() if line.startswith("a0 ")]
    assert [r[1] for r in rows] == ["eager", "onnxruntime"]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_gemm_ceiling_is_measured(precision):
    assert bench.gemm_gflops(1, size=128, repeats=2, precision=precision) > 0


@pytest.mark.slow  # seconds of subprocesses or compiles: CI runs it, the quick loop does not
def test_runner_outputs_match_eager(tmp_path, arch_file):
    model = AlphaNet(arch_file[1], num_classes=10).eval()
    transform = alphanet_zoo.transforms(model)
    from alphanet_zoo.export.images import builtin_image_paths
    from PIL import Image

    x = torch.stack([transform(Image.open(p)) for p in builtin_image_paths()[:4]])
    with torch.inference_mode():
        expected = model(x)
    artifacts = bench._Artifacts(model, tmp_path)
    for backend in bench.available_backends():
        runner = bench.make_runner(backend, model, tmp_path, threads=1, artifacts=artifacts)
        with torch.inference_mode():
            got = torch.as_tensor(np.asarray(runner.run(runner.prepare(x)))).float()
        if runner.precision == "fp32":
            assert (got - expected).abs().max() <= 1e-4, backend
        else:  # reduced precision: same classes' direction (independent cosine)
            assert F.cosine_similarity(got, expected, dim=1).min() > 0.9, backend


@pytest.mark.parametrize("argv, fragment", [
    (["--backend", "tensorrt"], "valid backends: eager, eager-cl, torchscript, pt2"),
    (["--arch", "a0,zz"], "known: a0, a1"),
    (["--batch-size", "0"], "--batch-size: 0 is outside the allowed range"),
    (["--threads", "0"], "--threads: 0 is outside the allowed range"),
    (["--out", "/nonexistent/folder/x.json"], "does not exist"),
])
def test_bench_bad_arguments(capsys, argv, fragment):
    code = bench_command.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("alphanet-bench: error:") and fragment in err[0]
