"""Reduced-precision exports (OpenVINO bf16 and int8, ONNX int8) and --precision auto: agreement
measured right and recorded, thresholds enforced, failures leave no file, auto records its choice.

Every agreement figure the export records is recomputed here, independently: the test runs the
written file itself on the built-in test images (preprocessed by the package's public transform)
and compares with the PyTorch model through torch's own cosine and top-k. A tiny custom
architecture with random weights keeps it cheap (its int8 agreement is poor: random weights are no
trained network, so int8 tests lower the bar)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from alphanet_zoo.commands import export as cli
from alphanet_zoo.export import deploy, export_model, open_model, read_export_info, read_metadata
from alphanet_zoo.export.agreement import Agreement, Thresholds
from alphanet_zoo.export.deploy import Candidate
from alphanet_zoo.export.images import builtin_image_paths
from alphanet_zoo.export.verify import ExportVerificationError
from onnx import numpy_helper
from PIL import Image
from test_export import _corrupt_onnx

import alphanet_zoo
from alphanet_zoo import SEARCH_SPACE, AlphaNet
from alphanet_zoo.errors import InputError

openvino = pytest.importorskip("openvino")
from alphanet_zoo.export.runtime import openvino_core  # noqa: E402  (the one Core: see its docstring)
HAS_BF16 = "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
LOW_BAR = 0.5  # random weights are no trained network: int8 keeps only the rough direction of their logits


@pytest.fixture(scope="module")
def tiny_model() -> AlphaNet:
    smallest = SEARCH_SPACE.smallest()
    arch = dataclasses.replace(smallest, width=(24, 24, *smallest.width[2:]))
    torch.manual_seed(1)
    return AlphaNet(arch, num_classes=100).eval()


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory, tiny_model) -> Path:
    path = tmp_path_factory.mktemp("arch") / "tiny.json"
    path.write_text(json.dumps(tiny_model.arch.to_dict()))
    return path


@pytest.fixture(scope="module")
def images_folder(tmp_path_factory) -> Path:
    """Real-image stand-in for --calib-data: the built-in images in two class folders."""
    root = tmp_path_factory.mktemp("calib")
    for i, path in enumerate(builtin_image_paths()):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(exist_ok=True)
        shutil.copyfile(path, folder / path.name)
    return root


def independent_agreement(model: AlphaNet, path: Path, image_paths) -> dict[str, float]:
    """Agreement of an exported file with the PyTorch model, recomputed here with torch's own ops."""
    transform = alphanet_zoo.transforms(model)
    x = torch.stack([transform(Image.open(p)) for p in image_paths])
    with torch.inference_mode():
        expected = model(x).double()
    got = torch.as_tensor(open_model(path)(x.numpy())).double()
    cosine = F.cosine_similarity(expected, got, dim=1)
    # an int8 file's logits tie; a tie at the fifth place goes to the lower class index (a stable sort), as
    # the exporter's own count does, since torch.topk leaves the order of ties undefined
    def top5_of(logits):
        return torch.sort(-logits, dim=1, stable=True).indices[:, :5].tolist()

    top5 = [len(set(a) & set(b)) / 5 for a, b in zip(top5_of(expected), top5_of(got))]
    return {"cosine_min": cosine.min().item(), "cosine_mean": cosine.mean().item(),
            "top1_agreement": (expected.argmax(1) == got.argmax(1)).double().mean().item(),
            "top5_overlap": float(np.mean(top5)), "max_abs_diff": (expected - got).abs().max().item(),
            "images": len(x)}


def assert_recorded(info: dict, expected: dict) -> None:
    recorded = info["agreement"]
    for key, value in expected.items():
        assert recorded[key] == pytest.approx(value, abs=2e-6), key


@pytest.fixture(scope="module")
def bf16_file(tmp_path_factory, tiny_model):
    if not HAS_BF16:
        pytest.skip("this CPU has no native bf16 in OpenVINO")
    path = tmp_path_factory.mktemp("bf16") / "tiny.xml"
    return export_model(tiny_model, path, "openvino", precision="bf16")


def test_bf16_openvino_agreement_is_measured_and_recorded(bf16_file, tiny_model):
    result = bf16_file
    info = read_export_info(result.path)
    assert result.precision == info["precision"] == "bf16" and info["runtime"]["inference_precision"] == "bf16"
    assert info["thresholds"] == {"min_cosine": 0.999, "min_top1": 0.0, "min_top5": 0.0}
    expected = independent_agreement(tiny_model, result.path, builtin_image_paths())
    assert_recorded(info, expected)
    assert expected["cosine_min"] >= 0.999  # the bf16 bar, independently
    assert 0 < expected["max_abs_diff"] and expected["cosine_min"] < 1  # it really ran in bf16, not f32
    assert info["agreement"]["data"] == "built-in test images" and info["agreement"]["images"] == 16
    # the IR itself was verified in f32 against PyTorch
    assert "the IR in f32 vs PyTorch" in info["verification"]["checks"][0]
    assert read_metadata(result.path) == tiny_model.pretrained_cfg.to_dict()
    assert [p.name for p in result.files] == ["tiny.xml", "tiny.bin"] and all(p.is_file() for p in result.files)


@pytest.mark.slow  # three bf16 exports
def test_a_bar_just_above_the_measured_agreement_fails_and_leaves_nothing(bf16_file, tiny_model, tmp_path):
    measured = independent_agreement(tiny_model, bf16_file.path, builtin_image_paths())
    out = tmp_path / "m.xml"
    with pytest.raises(ExportVerificationError, match="logit cosine .* < .*--min-cosine.*nothing was written"):
        export_model(tiny_model, out, "openvino", precision="bf16", min_cosine=measured["cosine_min"] + 1e-6)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ExportVerificationError, match="top-5 overlap"):
        export_model(tiny_model, out, "openvino", precision="bf16", min_top5=measured["top5_overlap"] + 1e-3)
    assert os.listdir(tmp_path) == []
    # just below: passes (the bars are what they say, no more)
    export_model(tiny_model, out, "openvino", precision="bf16", min_cosine=measured["cosine_min"] - 1e-6,
                 min_top5=measured["top5_overlap"] - 1e-3, min_top1=measured["top1_agreement"])
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.xml"]


def _int8_graph_facts(path: Path) -> dict:
    """What the int8 ONNX graph says about its quantization, read from the graph itself."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    producers = {o: n for n in model.graph.node for o in n.output}
    weight_dq = [producers[w] for w in conv_weights if w in producers and producers[w].op_type == "DequantizeLinear"]
    activation_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    return {"ops": {n.op_type for n in model.graph.node},
            "weight_dtypes": {inits[n.input[0]].dtype.name for n in weight_dq},
            "weight_scales_per_channel": all(inits[n.input[1]].ndim == 1 and inits[n.input[1]].size > 1
                                             for n in weight_dq),
            "activation_dtypes": {inits[n.input[2]].dtype.name for n in activation_q},
            "quantized_convs": len(weight_dq), "convs": len(conv_weights)}


@pytest.mark.slow  # seconds of subprocesses or compiles: CI runs it, the quick loop does not
def test_int8_onnx_is_static_per_channel_uint8_and_calibrated_on_the_images(tiny_model, tmp_path, images_folder):
    out = tmp_path / "m.onnx"
    result = export_model(tiny_model, out, "onnx", precision="int8", calib_data=images_folder, calib_images=8,
                          verify_images=8, min_cosine=LOW_BAR)
    facts = _int8_graph_facts(out)
    assert "BatchNormalization" not in facts["ops"] and "QuantizeLinear" in facts["ops"]
    assert facts["quantized_convs"] == facts["convs"] > 0  # every convolution, BN folded into it
    assert facts["weight_dtypes"] == {"int8"} and facts["weight_scales_per_channel"]
    assert facts["activation_dtypes"] == {"uint8"}
    info = read_export_info(out)
    q = info["quantization"]
    assert q["calibration_images"] == 8 and q["calibration_data"].startswith(f"{images_folder.name}: 8 images")
    assert "per output channel" in q["weights"] and q["activations"].startswith("uint8")
    # verified on the other 8 images of the folder, and the figures are right
    assert info["agreement"]["images"] == 8 and "other images" in info["agreement"]["data"]
    import random

    files = sorted(str(p) for p in images_folder.rglob("*") if p.is_file())
    random.Random(0).shuffle(files)
    assert_recorded(info, independent_agreement(tiny_model, out, files[:8]))
    assert result.precision == "int8" and read_metadata(out) == tiny_model.pretrained_cfg.to_dict()


@pytest.mark.slow  # two int8 exports
def test_int8_openvino_and_a_refused_int8(tiny_model, tmp_path, images_folder):
    out = tmp_path / "m.xml"
    export_model(tiny_model, out, "openvino", precision="int8", calib_data=images_folder, min_cosine=LOW_BAR)
    info = read_export_info(out)
    assert info["precision"] == "int8" and info["quantization"]["format"] == "QDQ"
    ops = {op.get_type_name() for op in openvino_core().read_model(str(out)).get_ops()}
    assert "FakeQuantize" in ops  # OpenVINO reads the QDQ pairs as int8 quantization
    measured = info["agreement"]["cosine_min"]
    shutil.rmtree(tmp_path)
    tmp_path.mkdir()
    with pytest.raises(ExportVerificationError, match="int8 m.xml does not agree closely enough"):
        export_model(tiny_model, out, "openvino", precision="int8", calib_data=images_folder,
                     min_cosine=measured + 1e-4)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow  # seconds of subprocesses or compiles: CI runs it, the quick loop does not
def test_auto_times_the_candidates_and_records_its_choice(tiny_model, tmp_path):
    out = tmp_path / "auto.xml"
    result = export_model(tiny_model, out, "openvino", threads=1)  # auto is OpenVINO's default
    info = read_export_info(out)
    choice = info["choice"]
    assert info["requested_precision"] == "auto" and choice["threads"] == 1 and choice["machine"]
    tried = {c["precision"]: c for c in choice["candidates"]}
    assert set(tried) == ({"fp32", "bf16"} if HAS_BF16 else {"fp32"})
    assert "int8 not tried: needs --calib-data" in choice["reason"]
    passed = [c for c in tried.values() if c["passed"]]
    assert tried["fp32"]["passed"] and result.precision in {c["precision"] for c in passed}
    if len(passed) > 1:
        for c in passed:  # timed at batch 1 and 16; the score is their geometric mean
            ms = c["ms_per_image"]
            assert set(ms) == {"1", "16"} and c["score"] == pytest.approx((ms["1"] * ms["16"]) ** 0.5, rel=1e-3)
        fp32 = tried["fp32"]["score"]
        if result.precision == "fp32":
            assert all(c["score"] > fp32 * (1 - deploy.AUTO_MARGIN) for c in passed)
        else:
            assert tried[result.precision]["score"] <= fp32 * (1 - deploy.AUTO_MARGIN)
    assert result.precision in choice["reason"].split(" chosen")[0]
    expected = independent_agreement(tiny_model, out, builtin_image_paths())
    assert_recorded(info, expected)


def _candidate(precision: str, score: float | None, failure: str | None = None) -> Candidate:
    timing = {"ms_per_image": {"1": score, "16": score}, "score": score} if score else None
    return Candidate(precision, [], failure=failure, timing=timing,
                     agreement=Agreement(4, "x", 1.0, 1.0, 1.0, 1.0, 0.0))


@pytest.mark.parametrize("candidates, chosen", [
    ([("fp32", 10.0), ("bf16", 6.0), ("int8", 5.0)], "int8"),
    ([("fp32", 10.0), ("bf16", 6.0), ("int8", 6.5)], "bf16"),  # int8 slower than bf16: never
    ([("fp32", 10.0), ("bf16", 9.9), ("int8", 9.95)], "fp32"),  # within the margin: the more precise one
    ([("fp32", 10.0), ("bf16", 6.0, "cosine"), ("int8", 7.0)], "fp32"),  # int8 slower than bf16, even a failed bf16
    ([("fp32", 10.0), ("bf16", 6.0, "cosine"), ("int8", 5.0)], "int8"),
    ([("fp32", 10.0), ("bf16", 6.0), ("int8", None, "cosine")], "bf16"),
])
def test_auto_picks_the_fastest_that_passed_and_never_a_slower_int8(candidates, chosen):
    made = [_candidate(*c) for c in candidates]
    best, reason = deploy._choose(made)
    assert best.precision == chosen and reason.startswith(f"{chosen} chosen")


def test_precisions_each_format_refuses(tiny_model, tmp_path):
    with pytest.raises(InputError, match="no bf16 kernels"):
        export_model(tiny_model, tmp_path / "m.onnx", "onnx", precision="bf16")
    with pytest.raises(InputError, match="not available for --format pt2"):
        export_model(tiny_model, tmp_path / "m.pt2", "pt2", precision="int8")
    with pytest.raises(InputError, match="cannot be used without verification"):
        export_model(tiny_model, tmp_path / "m.xml", "openvino", verify=False)
    assert os.listdir(tmp_path) == []


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_a_failed_ir_leaves_neither_file_and_keeps_an_earlier_pair(tmp_path, capsys, monkeypatch, arch_file):
    (tmp_path / "m.xml").write_text("earlier xml")
    (tmp_path / "m.bin").write_bytes(b"earlier bin")
    _corrupt_onnx(monkeypatch)
    code, _, err = run_cli(["--arch", arch_file, "--weights", "random", "--format", "openvino", "--out",
                            tmp_path / "m.xml"], capsys)
    assert code == 1 and "differs from PyTorch by 1" in err and "nothing was written" in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.xml"]
    assert (tmp_path / "m.xml").read_text() == "earlier xml" and (tmp_path / "m.bin").read_bytes() == b"earlier bin"


@pytest.mark.slow
def test_an_interrupted_ir_export_leaves_nothing(tmp_path, capsys, monkeypatch, arch_file):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(deploy, "_final_check", interrupted)
    code, _, err = run_cli(["--arch", arch_file, "--weights", "random", "--format", "openvino", "--precision",
                            "fp32", "--out", tmp_path / "m.xml"], capsys)
    assert code == 130 and os.listdir(tmp_path) == []


@pytest.mark.slow  # auto times every precision
def test_cli_openvino_auto_json(tmp_path, capsys, arch_file):
    code, out, err = run_cli(["--arch", arch_file, "--weights", "random", "--format", "openvino", "--threads", "1",
                              "--out", tmp_path / "m.xml", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)  # stdout carries only JSON
    assert doc["format"] == "openvino" and doc["files"] == [str(tmp_path / "m.xml"), str(tmp_path / "m.bin")]
    assert doc["export"]["requested_precision"] == "auto" and doc["precision"] == doc["export"]["precision"]
    assert doc["config"] == read_metadata(tmp_path / "m.xml")
    assert doc["bytes"] == sum(p.stat().st_size for p in tmp_path.iterdir())
    assert "precision auto:" in err  # the choice, said on stderr in --json mode


@pytest.mark.parametrize("argv, fragment", [
    (["--format", "onnx", "--precision", "bf16"], "no bf16 kernels"),
    (["--format", "torchscript", "--precision", "int8"], "not available for --format torchscript"),
    (["--format", "onnx", "--min-cosine", "0.9"], "apply to reduced precision"),
    (["--format", "openvino", "--no-verify"], "cannot be used with --no-verify"),
    (["--format", "openvino", "--out", "{tmp}/m.onnx"], "--format"),
    (["--out", "{tmp}/m.ir"], "OpenVINO IR is written as NAME.xml"),
    (["--format", "onnx", "--precision", "int8", "--min-cosine", "2"], "--min-cosine"),
    (["--calib-images", "5"], "--calib-images applies with --calib-data only"),
])
def test_cli_precision_errors(tmp_path, capsys, arch_file, argv, fragment):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" in argv and "--format" not in argv:
        argv = ["--format", "openvino", *argv]
    code, _, err = run_cli(["--arch", arch_file, "--weights", "random", *argv], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("alphanet-export: error:") and fragment in lines[0]
    assert os.listdir(tmp_path) == []


@pytest.mark.slow  # seconds of subprocesses or compiles: CI runs it, the quick loop does not
def test_cli_pt2_by_suffix(tmp_path, capsys, arch_file, tiny_model):
    code, out, err = run_cli(["--arch", arch_file, "--weights", "random", "--out", tmp_path / "m.pt2"], capsys)
    assert code == 0, err
    assert "torch.export" in out and read_export_info(tmp_path / "m.pt2")["file_format"] == "pt2"
    program = torch.export.load(str(tmp_path / "m.pt2"))  # a plain torch user needs nothing of ours
    batch = program.module()(torch.randn(5, 3, 192, 192))
    assert batch.shape == (5, 1000)  # dynamic batch


def test_thresholds_report_each_missed_bar():
    agreement = Agreement(10, "x", cosine_min=0.998, cosine_mean=0.999, top1_agreement=0.8, top5_overlap=0.9,
                          max_abs_diff=0.1)
    assert Thresholds(0.998).failures(agreement) == []
    missed = Thresholds(0.999, 0.9, 0.95).failures(agreement)
    assert len(missed) == 3 and "0.998" in missed[0] and "0.8" in missed[1] and "0.9" in missed[2]
    with pytest.raises(ExportVerificationError):
        deploy.check_agreement(agreement, Thresholds(0.9985), "bf16", "f.xml")


def test_graph_passes_keep_the_function(tiny_model, tmp_path):
    """The OpenVINO graph pass folds every hard sigmoid into its conv, and computes what the graph did."""
    from alphanet_zoo.export import to_onnx
    from alphanet_zoo.export.graph_passes import optimise_for_openvino
    from alphanet_zoo.export.runtime import onnxruntime_session

    path = tmp_path / "m.onnx"
    to_onnx(tiny_model, path, verify=False)
    proto = onnx.load(str(path))
    before = [n.op_type for n in proto.graph.node]
    done = optimise_for_openvino(proto)
    after = [n.op_type for n in proto.graph.node]
    se_blocks = sum(m.se is not None for stage in tiny_model.stages for m in stage)
    assert done == {"hard_sigmoid_into_conv": se_blocks} and se_blocks > 0
    assert before.count("HardSigmoid") == se_blocks and "HardSigmoid" not in after
    assert after.count("Clip") == se_blocks and after.count("Conv") == before.count("Conv")
    onnx.checker.check_model(proto, full_check=True)
    optimised = tmp_path / "o.onnx"
    onnx.save(proto, str(optimised))
    x = np.random.RandomState(0).standard_normal((2, 3, 192, 192)).astype(np.float32)
    expected = onnxruntime_session(path).run(None, {"input": x})[0]
    got = onnxruntime_session(optimised).run(None, {"input": x})[0]
    assert np.abs(got - expected).max() <= 1e-5
