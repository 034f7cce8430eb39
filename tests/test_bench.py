"""alphanet-bench: every backend timed on the same model, checked against eager, reported as a
table and as JSON. (No timing is asserted: the numbers are only checked for consistency.)"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from alphanet_zoo.export import bench

from alphanet_zoo import SEARCH_SPACE, AlphaNet, count_flops


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory):
    smallest = SEARCH_SPACE.smallest()
    arch = dataclasses.replace(smallest, width=(24, 24, *smallest.width[2:]))
    path = tmp_path_factory.mktemp("bench") / "small.json"
    path.write_text(json.dumps(arch.to_dict()))
    return path, arch


def test_bench_all_backends_json_and_table(tmp_path, capsys, arch_file):
    path, arch = arch_file
    out = tmp_path / "bench.json"
    code = bench.main(["--arch", str(path), "--backend", "all", "--batch-size", "2", "--threads", "1", "--warmup",
                       "1", "--repeats", "2", "--no-gemm", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["backend"], r["batch"]) for r in rows] == [(b, n) for n in (1, 2) for b in bench.BACKENDS]
    params = sum(p.numel() for p in AlphaNet(arch).parameters())
    for r in rows:
        assert r["model"] == "small" and r["threads"] == 1
        assert r["params"] == params and r["mflops"] == round(count_flops(arch), 2)
        assert len(r["times_ms"]) == 2 and r["ms_per_batch"] == pytest.approx(sorted(r["times_ms"])[0] / 2
                                                                                + sorted(r["times_ms"])[1] / 2)
        assert r["best_ms_per_image"] == pytest.approx(min(r["times_ms"]) / r["batch"])
        assert r["images_per_s"] == pytest.approx(r["batch"] / r["ms_per_batch"] * 1e3)
        assert r["gflops_per_s"] == pytest.approx(2 * r["mflops"] * r["images_per_s"] / 1e3, rel=1e-3)
        assert r["ceiling_fraction"] is None  # --no-gemm
        assert r["max_abs_diff_vs_eager"] <= 1e-4  # every backend computes the same logits
    assert all(r["speedup_vs_eager"] == 1.0 for r in rows if r["backend"] == "eager")
    assert report["environment"]["threads"] == 1 and report["settings"]["backends"] == list(bench.BACKENDS)
    # one table line per row, under a header
    table = [line for line in printed.splitlines() if line.startswith("small ")]
    assert len(table) == len(rows)
    assert "images/s" in printed and "ms/image" in printed


def test_bench_with_supernet_weights_and_ceiling(capsys, official_checkpoint, monkeypatch):
    monkeypatch.setattr(bench, "GEMM_SIZE", 256)  # the ceiling's measurement, kept small for the test
    code = bench.main(["--arch", "a0", "--backend", "onnxruntime", "--batch-size", "1", "--threads", "1", "--warmup",
                       "0", "--repeats", "1", "--supernet", str(official_checkpoint)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "alphanet_pretrained.pth.tar" in printed and "GFLOP/s" in printed
    rows = [line.split() for line in printed.splitlines() if line.startswith("a0 ")]
    assert [r[1] for r in rows] == ["eager", "onnxruntime"]  # eager is always there, as the reference
    assert all(float(r[-1]) <= 1e-4 for r in rows)  # max diff vs eager, the last column


def test_gemm_ceiling_is_measured():
    assert bench.gemm_gflops(1, size=128, repeats=2) > 0


def test_runner_outputs_match_eager(tmp_path):
    model = AlphaNet("a0", num_classes=10).eval()
    x = torch.randn(2, 3, 192, 192)
    with torch.inference_mode():
        expected = model(x)
        for backend in bench.BACKENDS:
            runner = bench.make_runner(backend, model, tmp_path, threads=1)
            got = torch.as_tensor(runner.run(runner.prepare(x)))
            assert (got - expected).abs().max() <= 1e-4, backend


@pytest.mark.parametrize("argv, fragment", [
    (["--backend", "tensorrt"], "valid backends: eager, eager-cl, torchscript, onnxruntime"),
    (["--arch", "a0,zz"], "valid names"),
    (["--batch-size", "0"], "--batch-size: 0 is outside the allowed range"),
    (["--threads", "0"], "--threads: 0 is outside the allowed range"),
    (["--out", "/nonexistent/folder/x.json"], "does not exist"),
])
def test_bench_bad_arguments(capsys, argv, fragment):
    code = bench.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("alphanet-bench: error:") and fragment in err[0]
