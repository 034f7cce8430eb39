"""Mobile exports (issue 18): ExecuTorch ``.pte`` (XNNPACK) and TFLite/LiteRT ``.tflite`` files, fp32 and
int8, opened by `open_model` like every export, with their record beside them (``.pte.json``) or inside
(flatbuffer metadata).

The quick tests need neither runtime (a missing extra is one line that names it; the formats are told
from their bytes; records are read without the runtimes where they can be). Converting a model takes a
minute or more in each runtime's Python pipeline, so the tests that convert are marked slow, and skip
where the extras are not installed. Expected values come from the PyTorch model, never from the code
under test."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from alphanet_zoo.export import export_metadata, export_model, file_format, open_model, read_export_info, read_metadata
from alphanet_zoo.commands import bench as bench_command
from alphanet_zoo.export.bench import available_backends
from alphanet_zoo.export.builders import builder_for, format_of_suffix
from alphanet_zoo.export.metadata import sidecar_path
from alphanet_zoo.export.verify import ExportResult
from PIL import Image

from alphanet_zoo import SEARCH_SPACE, ArchConfig
from alphanet_zoo.errors import AlphaNetError, InputError
from alphanet_zoo.search.latency_runtimes import make_runtime

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "tests" / "parity" / "photo.png"
TOLERANCE = 1e-4
SUFFIX = {"executorch": ".pte", "tflite": ".tflite"}
PACKAGE = {"executorch": "executorch", "tflite": "litert_torch"}
EXTRA = {"executorch": "executorch", "tflite": "litert"}


# ---- without the runtimes -------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", SUFFIX)
def test_a_missing_extra_is_one_line_naming_it(monkeypatch, tiny_model, tmp_path, capsys, fmt):
    monkeypatch.setitem(sys.modules, PACKAGE[fmt], None)  # importing it now fails, as where it is not installed
    path = tmp_path / f"m{SUFFIX[fmt]}"
    with pytest.raises(AlphaNetError) as e:
        export_model(tiny_model, path, fmt, precision="fp32")
    assert f"pip install 'alphanet_zoo[{EXTRA[fmt]}]'" in str(e.value) and "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())
    backend = {"executorch": "executorch", "tflite": "litert"}[fmt]
    assert backend not in available_backends(opt_in=True)
    with pytest.raises(InputError, match=rf"alphanet_zoo\[{EXTRA[fmt]}\]"):
        make_runtime(backend, 1, 1)
    assert bench_command.main(["--arch", "a0", "--backend", f"{backend}-int8"]) == 2
    assert f"pip install 'alphanet_zoo[{EXTRA[fmt]}]'" in capsys.readouterr().err


def test_bench_times_the_same_files_at_each_thread_count(capsys, monkeypatch, tmp_path, tiny_model):
    from alphanet_zoo.export import bench

    built = []
    builder = bench.BUILDERS["onnx"]
    original = builder.build
    monkeypatch.setattr(builder, "build", lambda job, p: built.append(p) or original(job, p))
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(tiny_model.arch.to_dict()))
    assert bench_command.main(["--arch", str(arch), "--backend", "onnxruntime", "--batch-size", "1",
                               "--thread-counts", "1,2", "--warmup", "0", "--repeats", "1", "--no-gemm",
                               "--no-agreement", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(r["backend"], r["threads"]) for r in doc["rows"]] == [("eager", 1), ("onnxruntime", 1), ("eager", 2),
                                                                   ("onnxruntime", 2)]
    assert doc["environment"]["threads"] == [1, 2] and built == ["fp32"]  # built once, timed at 1 and 2 threads


def test_phone_backends_are_benchmarked_only_when_named(monkeypatch):
    from alphanet_zoo.export import runtimes

    phone = {"executorch", "executorch-int8", "litert", "litert-int8"}
    default, named = set(available_backends()), set(available_backends(opt_in=True))
    assert {"eager", "onnxruntime"} <= default and not phone & default
    runtime = {"executorch": PACKAGE["executorch"], "litert": PACKAGE["tflite"]}
    installed = {b for b in phone if importlib.util.find_spec(runtime[b.split("-")[0]])}
    assert named & phone == installed
    # as where every runtime is installed: every phone backend, when named
    monkeypatch.setattr(runtimes.RuntimeInfo, "unavailable", lambda self: None)
    assert phone <= set(available_backends(opt_in=True)) and not phone & set(available_backends())


def test_the_formats_are_registered_by_suffix_and_told_from_their_bytes(tmp_path):
    assert format_of_suffix(".pte") == "executorch" and format_of_suffix(".tflite") == "tflite"
    assert builder_for("executorch").precisions == builder_for("tflite").precisions == ("fp32", "int8")
    pte, tflite = tmp_path / "model.bin1", tmp_path / "model.bin2"  # suffixes say nothing: the bytes do
    pte.write_bytes(b"\x1c\x00\x00\x00ET12" + bytes(56))
    tflite.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(56))
    assert file_format(pte) == "executorch" and file_format(tflite) == "tflite"
    assert builder_for("executorch").targets(tmp_path / "a.pte") == [tmp_path / "a.pte", tmp_path / "a.pte.json"]
    assert ExportResult(tmp_path / "a.pte", "executorch", {}, None).files == [tmp_path / "a.pte",
                                                                              tmp_path / "a.pte.json"]


def test_a_pte_record_is_read_from_beside_it_without_executorch(monkeypatch, tmp_path, tiny_model):
    for name in [m for m in sys.modules if m == "executorch" or m.startswith("executorch.")] + ["executorch"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if never installed, whatever ran before
    path = tmp_path / "tiny.pte"
    path.write_bytes(b"\x1c\x00\x00\x00ET12" + bytes(56))
    with pytest.raises(InputError, match="has no record tiny.pte.json beside it"):
        read_metadata(path)
    meta = export_metadata(tiny_model)
    sidecar_path(path).write_text(json.dumps({"config": meta, "export": {"precision": "int8"}}))
    assert read_metadata(path) == meta and read_export_info(path) == {"precision": "int8"}
    with pytest.raises(InputError, match="give its tiny.pte"):
        file_format(sidecar_path(path))
    with pytest.raises(InputError, match=r"alphanet_zoo\[executorch\]"):
        open_model(path)


def test_a_pte_and_its_record_are_tied_by_the_programs_sha256(tmp_path, tiny_model):
    from alphanet_zoo.export.metadata import file_sha256, sidecar_record

    meta = export_metadata(tiny_model)
    path, other = tmp_path / "tiny.pte", tmp_path / "other.pte"
    path.write_bytes(b"\x1c\x00\x00\x00ET12" + bytes(56))
    other.write_bytes(b"\x1c\x00\x00\x00ET12" + bytes(55) + b"\x01")
    sidecar_path(path).write_text(sidecar_record(path, meta, {"precision": "fp32"}))
    assert json.loads(sidecar_path(path).read_text())["file_sha256"] == file_sha256(path)
    assert read_metadata(path) == meta
    sidecar_path(other).write_text(sidecar_path(path).read_text())  # another program's record copied over
    with pytest.raises(InputError, match="other.pte.json is not the record of other.pte"):
        read_metadata(other)
    with pytest.raises(InputError, match="is not the record of other.pte"):
        open_model(other)
    path.write_bytes(path.read_bytes()[:-1] + b"\x07")  # the program changed after its record was written
    with pytest.raises(InputError, match="export the model again"):
        read_export_info(path)


@pytest.mark.parametrize("suffix", [".pte", ".tflite", ".onnx"])
def test_empty_and_mislabelled_files_are_named_as_such(tmp_path, suffix):
    empty = tmp_path / f"m{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"is empty \(0 bytes\)"):
        open_model(empty)
    if suffix != ".onnx":
        junk = tmp_path / f"junk{suffix}"
        junk.write_bytes(bytes(range(64)))
        with pytest.raises(InputError, match="lacks the format's identifier"):
            open_model(junk)


def test_bf16_is_refused_with_a_hint(tiny_model, tmp_path):
    for fmt in SUFFIX:
        with pytest.raises(InputError, match="--format openvino runs bf16"):
            export_model(tiny_model, tmp_path / f"m{SUFFIX[fmt]}", fmt, precision="bf16")


# ---- with the runtimes (slow: each conversion takes a minute or more) -----------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model):
    """format -> the tiny model's fp32 file (verified by the exporter); formats whose extra is missing skip."""
    folder = tmp_path_factory.mktemp("mobile")
    files = {}
    for fmt, suffix in SUFFIX.items():
        pytest.importorskip(PACKAGE[fmt], reason=f"pip install 'alphanet_zoo[{EXTRA[fmt]}]'")
        files[fmt] = export_model(tiny_model, folder / f"tiny{suffix}", fmt, precision="fp32", verify_images=8)
    return files


@pytest.mark.slow
@pytest.mark.parametrize("fmt", SUFFIX)
def test_fp32_files_compute_the_pytorch_logits_with_their_record(exported, tiny_model, fmt):
    result = exported[fmt]
    assert all(p.is_file() for p in result.files) and len(list(result.path.parent.iterdir())) == 3  # no leftovers
    assert result.verification.max_abs_diff <= TOLERANCE
    x = torch.randn(3, 3, 192, 192, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        expected = tiny_model(x)
    with open_model(result.path, threads=1) as model:
        assert model.format == fmt and model.metadata == export_metadata(tiny_model)
        assert model.record().name == "tiny" and model.precision == "fp32"
        got = model(x)
        assert isinstance(got, torch.Tensor) and float((got - expected).abs().max()) <= TOLERANCE
        assert np.abs(model(x[:1].numpy()) - expected[:1].numpy()).max() <= TOLERANCE
        image = Image.open(PHOTO).convert("RGB")
        assert torch.equal(model.preprocess(image), open_model(result.path).preprocess(image))
        with pytest.raises(InputError, match="takes 192x192"):
            model(np.zeros((1, 3, 224, 224), np.float32))
    info = read_export_info(result.path)
    assert info["file_format"] == fmt and info["verification"]["tolerance"] == TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("fmt", SUFFIX)
def test_a_record_that_does_not_describe_the_file_is_refused(exported, tmp_path, fmt):
    import shutil

    from alphanet_zoo.export.metadata import sidecar_record

    source = exported[fmt].path
    copy = tmp_path / source.name
    shutil.copyfile(source, copy)
    # 4 KiB of flipped bytes in the middle of the file (its weights): refused, not run
    damaged = tmp_path / f"damaged{source.suffix}"
    data = bytearray(source.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(b ^ 0xFF for b in data[middle:middle + 4096])
    damaged.write_bytes(bytes(data))
    if fmt == "executorch":
        shutil.copyfile(sidecar_path(source), sidecar_path(damaged))
    with pytest.raises(InputError, match="export the model again|not those it was exported with"):
        open_model(damaged)
    if fmt != "executorch":
        return  # the tflite record is inside the file
    from alphanet_zoo import AlphaNet

    meta = json.loads(sidecar_path(source).read_text())["config"]
    three = export_metadata(AlphaNet(ArchConfig.from_dict(meta["architecture"]), num_classes=3))  # a coherent record
    bigger = {**meta, "preprocessing": {**meta["preprocessing"], "resolution": 224, "crop_size": 224,
                                        "resize_size": 256}}
    for record, message in ((three, "record says 3 classes, the file gives 1000"),
                            (bigger, "record says 224x224 inputs, the file takes 192x192")):
        sidecar_path(copy).write_text(sidecar_record(copy, record, {"precision": "fp32"}))
        with pytest.raises(AlphaNetError, match=message):
            open_model(copy)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", SUFFIX)
def test_third_party_chatter_stays_off_the_terminal(exported, fmt):
    """ExecuTorch's C++ CPU probing, LiteRT's absl/oneDNN lines and torch's pytree warning go to our logger,
    not to the user's stderr."""
    import subprocess

    done = subprocess.run([str(Path(sys.executable).parent / "alphanet-predict"), "--model",
                           str(exported[fmt].path), str(PHOTO)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "%" in done.stdout
    assert done.stderr.strip() == "", done.stderr[-2000:]


@pytest.mark.slow
def test_predict_and_eval_commands_take_mobile_files(exported, tiny_model, tmp_path, capsys):
    from alphanet_zoo.commands import eval as eval_cli
    from alphanet_zoo.commands import predict_main
    from alphanet_zoo.export.images import builtin_image_paths

    import alphanet_zoo

    image = Image.open(PHOTO)
    with torch.inference_mode():
        expected = tiny_model(alphanet_zoo.transforms(tiny_model)(image)[None])[0].topk(5).indices.tolist()
    data = tmp_path / "val" / "n01440764"
    data.mkdir(parents=True)
    for path in builtin_image_paths()[:2]:
        (data / path.name).write_bytes(path.read_bytes())
    from test_open_model import _every_format_labels_a_folder_in_batches

    _every_format_labels_a_folder_in_batches(exported, tiny_model, tmp_path)
    capsys.readouterr()
    for fmt, result in exported.items():
        assert predict_main(["--model", str(result.path), str(PHOTO), "--json", "--threads", "1"]) == 0, fmt
        assert [r["index"] for r in json.loads(capsys.readouterr().out)["top"]] == expected, fmt
        out = tmp_path / f"{fmt}.json"
        assert eval_cli.main(["--model", str(result.path), "--data", str(data.parent), "--workers", "0",
                              "--out", str(out)]) == 0, capsys.readouterr().err
        capsys.readouterr()
        assert json.loads(out.read_text())["images"] == 2


@pytest.mark.slow
def test_executorch_int8_recipe_quantizes_the_folded_model(tiny_model):
    """XNNPACK's static recipe through pt2e, before lowering (lowering an int8 program takes minutes; the
    lowering itself is the fp32 files', and benchmarks/bench_mobile.py exports int8 .pte files end to end)."""
    pytest.importorskip("executorch", reason="pip install 'alphanet_zoo[executorch]'")
    from alphanet_zoo.export.executorch_export import quantized_module
    from alphanet_zoo.export.images import builtin_images
    from alphanet_zoo.export.pt2_export import fold_batchnorm

    images = builtin_images(tiny_model.pretrained_cfg.preprocessing)
    quantized = quantized_module(fold_batchnorm(tiny_model), images[:8])
    names = {str(n.target) for n in quantized.graph.nodes if n.op == "call_function"}
    assert any("quantize_per_tensor" in n for n in names) and any("dequantize_per_channel" in n for n in names)
    with torch.inference_mode():
        got, expected = quantized(images[8:]), tiny_model(images[8:])
    assert torch.nn.functional.cosine_similarity(got, expected).min() >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite"])
def test_int8_files_record_their_agreement_and_recipe(tiny_model, tmp_path, fmt):
    pytest.importorskip(PACKAGE[fmt], reason=f"pip install 'alphanet_zoo[{EXTRA[fmt]}]'")
    path = tmp_path / f"tiny_int8{SUFFIX[fmt]}"
    # random weights quantize worse than trained ones: the bar here only checks the agreement is measured and kept
    result = export_model(tiny_model, path, fmt, precision="int8", min_cosine=0.9, min_top1=0.0, min_top5=0.0,
                          verify_images=8)
    info = read_export_info(path)
    assert info["precision"] == "int8" and info["quantization"]["static"] is True
    assert info["agreement"]["cosine_min"] == result.verification.agreement["cosine_min"] >= 0.9
    summary = result.verification.summary()
    assert summary.count("int8") == 1, summary  # the precision said once
    x = torch.randn(2, 3, 192, 192, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = tiny_model(x).numpy()
    got = open_model(path, threads=1)(x.numpy())
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["executorch", "litert"])
def test_latency_tables_time_layers_on_the_phone_runtimes(backend):
    pytest.importorskip({"executorch": "executorch", "litert": "litert_torch"}[backend],
                        reason=f"pip install 'alphanet_zoo[{backend}]'")
    from alphanet_zoo.search.latency import LatencyTable, measure_layers
    from alphanet_zoo.search.latency_layers import arch_layers

    runtime = make_runtime(backend, threads=1, batch_size=1)
    try:
        table = LatencyTable(runtime.key())
        stem = arch_layers(SEARCH_SPACE.smallest())[0]
        measure_layers(runtime, table, [stem])
        assert list(table.entries) == [stem.key] and table.entries[stem.key] > 0
        assert runtime.key()["runtime"] == backend and runtime.key()["threads"] == 1
    finally:
        runtime.close()
