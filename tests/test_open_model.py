"""open_model: one runtime for every exported file (ONNX, OpenVINO IR, TorchScript, pt2), and the
commands that run exported files through it (alphanet-predict --model, alphanet-eval --model).

A small custom architecture with random weights keeps the exports cheap; every expected value comes
from the PyTorch model itself (or from its saved folder's config.json), never from the code under test."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from alphanet_zoo.export import (ExportedModel, export_model, file_format, open_model, read_export_info,
                                 read_metadata)
from PIL import Image

import alphanet_zoo
from alphanet_zoo import AlphaNet
from alphanet_zoo.errors import InputError

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "tests" / "parity" / "photo.png"
FORMATS = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".pt", "pt2": ".pt2"}
BACKENDS = {"onnx": "onnxruntime", "openvino": "openvino", "torchscript": "torchscript", "pt2": "pt2"}  # runtimes.py
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model):
    """format -> fp32 file of the tiny model, exported once (verified by the exporter)."""
    folder = tmp_path_factory.mktemp("files")
    return {fmt: export_model(tiny_model, folder / f"tiny{suffix}", fmt, precision="fp32").path
            for fmt, suffix in FORMATS.items()}


def torch_logits(model: AlphaNet, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_computes_the_pytorch_logits(exported, tiny_model, fmt):
    x = torch.randn(3, 3, 192, 192, generator=torch.Generator().manual_seed(5))
    expected = torch_logits(tiny_model, x)
    with open_model(exported[fmt], threads=1) as model:
        assert isinstance(model, ExportedModel) and model.format == fmt and model.backend == BACKENDS[fmt]
        from_array = model(x.numpy())
        from_tensor = model(x)
        single = model(x[:1].numpy())
    assert isinstance(from_array, np.ndarray) and from_array.dtype == np.float32 and from_array.shape == (3, 1000)
    assert isinstance(from_tensor, torch.Tensor) and from_tensor.dtype == torch.float32
    assert np.abs(from_array - expected.numpy()).max() <= TOLERANCE
    assert (from_tensor - expected).abs().max() <= TOLERANCE
    assert np.abs(single - expected[:1].numpy()).max() <= TOLERANCE  # batch 1 and 3: static shapes per batch


@pytest.mark.parametrize("fmt", FORMATS)
def test_metadata_is_the_folders_config_json(exported, tiny_model, tmp_path, fmt):
    folder = tiny_model.save_pretrained(tmp_path / "folder")
    config = json.loads((Path(folder) / "config.json").read_text())
    model = open_model(exported[fmt])
    assert model.metadata == config == read_metadata(exported[fmt])
    assert model.record() == tiny_model.pretrained_cfg
    assert file_format(exported[fmt]) == fmt


@pytest.mark.parametrize("fmt", FORMATS)
def test_preprocess_is_the_models_eval_transform(exported, tiny_model, fmt):
    image = Image.open(PHOTO)
    got = open_model(exported[fmt]).preprocess(image)
    expected = alphanet_zoo.transforms(tiny_model)(image)
    assert got.shape == (3, 192, 192) and torch.equal(got, expected)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_info_says_fp32_and_how_it_was_verified(exported, fmt):
    info = read_export_info(exported[fmt])
    assert info["format"] == "alphanet_zoo.export/1" and info["file_format"] == fmt
    assert info["precision"] == info["requested_precision"] == "fp32" and info["choice"] is None
    assert info["verification"]["max_abs_diff"] <= TOLERANCE and info["verification"]["tolerance"] == TOLERANCE
    agreement = info["agreement"]
    assert agreement["images"] == 16 and agreement["data"] == "built-in test images"
    assert agreement["cosine_min"] > 0.99999 and agreement["top1_agreement"] == 1.0
    assert read_metadata(exported[fmt])["name"] == "tiny"  # the second entry leaves the record alone


def test_predict_gives_softmax_top_k_with_labels(exported, tiny_model):
    image = Image.open(PHOTO)
    with torch.inference_mode():
        logits = tiny_model(alphanet_zoo.transforms(tiny_model)(image)[None])[0].double()
    probabilities = torch.exp(logits - logits.max()) / torch.exp(logits - logits.max()).sum()
    expected = torch.topk(probabilities, 3)
    for fmt in FORMATS:
        (top,) = open_model(exported[fmt]).predict(image, topk=3)
        assert [r["index"] for r in top] == expected.indices.tolist(), fmt
        assert [r["probability"] for r in top] == pytest.approx(expected.values.tolist(), abs=1e-5)
        assert [r["name"] for r in top] == [alphanet_zoo.imagenet.class_names()[i] for i in expected.indices]


def test_a_model_in_memory_runs_as_an_exported_model(tiny_model):
    """Eager, channels-last and exported files: one interface, and one top-k (`alphanet_zoo.predict`'s)."""
    from alphanet_zoo.export import TorchModel

    x = torch.randn(2, 3, 192, 192, generator=torch.Generator().manual_seed(7))
    expected = torch_logits(tiny_model, x)
    eager, cl = TorchModel.of(tiny_model, threads=1), TorchModel.of(tiny_model, channels_last=True)
    assert isinstance(eager, ExportedModel) and eager.module is tiny_model and cl.module is not tiny_model
    assert eager.resolution == 192 and eager.metadata["name"] == "tiny" and eager.path is None
    for model in (eager, cl):
        assert (model(x) - expected).abs().max() <= TOLERANCE
        assert np.abs(model(x.numpy()) - expected.numpy()).max() <= TOLERANCE
        assert model.as_input(x) is x or torch.equal(model.as_input(x), x)
    assert eager.predict(Image.open(PHOTO), topk=4) == alphanet_zoo.predict(tiny_model, Image.open(PHOTO), topk=4)
    with pytest.raises(InputError, match="192x192"):
        eager(torch.zeros(1, 3, 100, 100))
    with pytest.raises(InputError, match="topk"):
        eager.predict(Image.open(PHOTO), topk=0)
    assert next(tiny_model.parameters()).is_contiguous()  # the channels-last copy left the model as it was


def test_an_ir_without_its_bin_and_other_bad_files(exported, tmp_path):
    lone = tmp_path / "lone.xml"
    shutil.copyfile(exported["openvino"], lone)
    with pytest.raises(InputError, match="lone.bin is not beside it"):
        open_model(lone)
    with pytest.raises(InputError, match="give its"):
        open_model(exported["openvino"].with_suffix(".bin"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07junk" * 10)
    with pytest.raises(InputError):
        open_model(junk)
    with pytest.raises(InputError, match="no such file"):
        open_model(tmp_path / "absent.onnx")
    with pytest.raises(InputError, match="threads"):
        open_model(exported["onnx"], threads=0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_inputs_of_the_wrong_shape_are_refused(exported, fmt):
    model = open_model(exported[fmt])
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)|192x192"):
        model(np.zeros((1, 3, 100, 100), np.float32) if fmt != "pt2" else np.zeros((1, 4, 192, 192), np.float32))
    with pytest.raises(InputError):
        model([1, 2, 3])


def test_a_foreign_onnx_file_runs_without_metadata(tmp_path, tiny_model):
    path = tmp_path / "plain.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(tiny_model, (torch.zeros(1, 3, 192, 192),), str(path), dynamo=False,
                          input_names=["images"], output_names=["out"], dynamic_axes={"images": {0: "n"}})
    model = open_model(path)
    assert model.metadata is None and model.export_info is None and model.resolution == 192
    x = torch.randn(2, 3, 192, 192)
    assert (model(x) - torch_logits(tiny_model, x)).abs().max() <= TOLERANCE
    with pytest.raises(InputError, match="no preprocessing metadata"):
        model.preprocess(Image.open(PHOTO))


@pytest.mark.slow  # seconds of subprocesses or compiles: CI runs it, the quick loop does not
def test_openvino_is_imported_only_when_an_ir_is_opened(exported):
    code = ("import sys; from alphanet_zoo.export import open_model, read_metadata; "
            f"m = open_model({str(exported['onnx'])!r}); read_metadata({str(exported['openvino'])!r}); "
            "print('openvino' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.slow  # seconds of subprocesses or compiles: CI runs it, the quick loop does not
def test_one_openvino_core_per_process_so_signals_stay_deliverable(exported):
    """OpenVINO 2026.4's CPU plugin leaves the main thread's signal stack freed when two Cores die in the
    order they were made; the next handled signal (torch's DataLoader handles SIGCHLD) is then a SIGSEGV.
    Exporting, opening, verifying and timing IRs must all share the one Core."""
    code = f"""
import gc, signal, subprocess, sys
import openvino
made, real = [], openvino.Core
openvino.Core = lambda *a, **k: made.append(1) or real(*a, **k)
import numpy as np
from alphanet_zoo import SEARCH_SPACE
from alphanet_zoo.export import open_model
from alphanet_zoo.search.latency_runtimes import make_runtime
runtime = make_runtime("openvino", threads=1, batch_size=1)  # how alphanet-search times layers
with runtime.active():
    runtime.model(SEARCH_SPACE.smallest())()
runtime.close()
model = open_model({str(exported['openvino'])!r}, threads=1)
model(np.zeros((2, 3, model.resolution, model.resolution), np.float32))
del model
gc.collect()
other = open_model({str(exported['openvino'])!r}, threads=1)
other(np.zeros((1, 3, other.resolution, other.resolution), np.float32))
del other
gc.collect()
signal.signal(signal.SIGCHLD, lambda *a: None)
subprocess.run([sys.executable, "-c", "pass"], check=True)
print(len(made))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1"]


# ---- the commands ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_predict_command_runs_every_format(exported, tiny_model, capsys, tmp_path):
    from alphanet_zoo.commands import predict_main

    image = Image.open(PHOTO)
    with torch.inference_mode():
        expected = tiny_model(alphanet_zoo.transforms(tiny_model)(image)[None])[0].topk(5).indices.tolist()
    for fmt, path in exported.items():
        assert predict_main(["--model", str(path), str(PHOTO), "--json", "--threads", "1"]) == 0, fmt
        line = json.loads(capsys.readouterr().out)
        assert [r["index"] for r in line["top"]] == expected, fmt
        assert line["top"][0]["synset"] is not None  # ImageNet labels come from the file's record
    _every_format_labels_a_folder_in_batches(exported, tiny_model, tmp_path)


def _every_format_labels_a_folder_in_batches(exported: dict, tiny_model, tmp_path: Path) -> None:
    """Each file labels a folder of images in batches of 3 (the last one short) as the PyTorch model does."""
    from alphanet_zoo.commands import predict_main
    from alphanet_zoo.export.images import builtin_image_paths

    images = sorted(builtin_image_paths())
    expected = [top[0]["index"] for top in alphanet_zoo.predict(tiny_model, images, topk=1)]
    for fmt, path in exported.items():
        path = getattr(path, "path", path)
        out = tmp_path / f"{fmt}.jsonl"
        assert predict_main([*map(str, images), "--model", str(path), "--out", str(out), "--batch-size", "3",
                             "--workers", "0", "--threads", "1", "--topk", "1"]) == 0, fmt
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["path"] for r in rows] == list(map(str, images)), fmt
        if "int8" not in str(path):
            assert [r["top"][0]["index"] for r in rows] == expected, fmt


def test_predict_command_model_errors(exported, tiny_model, tmp_path, capsys):
    from alphanet_zoo.commands import predict_main

    assert predict_main(["--model", str(exported["onnx"]), str(PHOTO), "--arch", "a0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alphanet-predict: error:") and "--arch and --weights do not apply" in err
    assert "\n" not in err
    plain = tmp_path / "plain.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(tiny_model, (torch.zeros(1, 3, 192, 192),), str(plain), dynamo=False)
    assert predict_main(["--model", str(plain), str(PHOTO)]) == 2
    err = capsys.readouterr().err.strip()
    assert "carries no metadata" in err and "\n" not in err


@pytest.mark.slow
def test_eval_command_runs_every_format_like_pytorch(exported, tiny_model, tmp_path, capsys):
    from alphanet_zoo.commands import eval as eval_cli
    from alphanet_zoo.export.images import builtin_image_paths

    data = tmp_path / "val"
    for i, image in enumerate(builtin_image_paths()[:6]):  # two images each in three ImageNet classes
        folder = data / ["n01440764", "n01443537", "n01484850"][i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, folder / image.name)
    weights = tiny_model.save_pretrained(tmp_path / "weights")

    def evaluate(*argv) -> tuple[dict, list]:
        out, preds = tmp_path / "r.json", tmp_path / "p.jsonl"
        code = eval_cli.main([*map(str, argv), "--data", str(data), "--workers", "0", "--batch-size", "4",
                              "--out", str(out), "--save-predictions", str(preds)])
        assert code == 0, capsys.readouterr().err
        return json.loads(out.read_text()), [json.loads(line) for line in preds.read_text().splitlines()]

    reference, reference_preds = evaluate("--weights", weights)
    for fmt, path in exported.items():
        result, preds = evaluate("--model", path)
        assert result["backend"] == BACKENDS[fmt] and result["name"] == "tiny"
        assert result["images"] == 6 and result["correct5"] == reference["correct5"], fmt
        assert [p["top5"] for p in preds] == [p["top5"] for p in reference_preds], fmt
    result, _ = evaluate("--onnx", exported["onnx"])  # the old spelling
    assert result["backend"] == "onnxruntime"
