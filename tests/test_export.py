"""alphanet-export and alphanet_zoo.export: ONNX and TorchScript files that reproduce the official
reference logits, carry their metadata, and are never left behind half-written or unverified."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from alphanet_zoo.commands import export as cli
from alphanet_zoo.export import (ExportVerificationError, export_metadata, export_model, load_torchscript,
                                 onnx_export, onnxruntime_session, open_model, read_metadata, to_onnx, to_torchscript,
                                 torchscript_export, verify_onnx, verify_torchscript)
from conftest import REFERENCE_NAMES, det
from onnx import numpy_helper

import alphanet_zoo
from alphanet_zoo import SEARCH_SPACE, AlphaNet, count_flops
from alphanet_zoo.imagenet import class_names
from alphanet_zoo.preprocessing import preprocessing_for

TOLERANCE = 1e-4
MODELS = ("a0", "a5_1")  # official reference keys: the smallest model, and A5-base at 288 px
FORMATS = ("onnx", "torchscript")
ALL_FORMATS = ("onnx", "torchscript", "pt2", "openvino")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2", "openvino": ".xml"}


def run_file(path: Path, fmt: str, x: torch.Tensor) -> np.ndarray:
    """Logits of an exported file, computed by its runtime (not by the exporter's model)."""
    if fmt == "onnx":
        return onnxruntime_session(path).run(["logits"], {"input": x.numpy()})[0]
    if fmt == "torchscript":
        with torch.inference_mode():
            return load_torchscript(path)(x).numpy()
    return open_model(path)(x.numpy())  # pt2 and OpenVINO IR (fp32), with the settings users get


@pytest.fixture(scope="module")
def exported(tmp_path_factory, supernet):
    """(reference key, format) -> (exported file, the extracted model, its export result); built once."""
    folder = tmp_path_factory.mktemp("exported")
    cache = {}

    def get(key: str, fmt: str):
        if (key, fmt) not in cache:
            model = supernet.extract(REFERENCE_NAMES.get(key, key))
            path = folder / f"{key}{SUFFIX[fmt]}"
            if fmt in FORMATS:
                result = (to_onnx if fmt == "onnx" else to_torchscript)(model, path)
            else:
                result = export_model(model, path, fmt, precision="fp32")
            cache[key, fmt] = path, model, result
        return cache[key, fmt]

    return get


@pytest.fixture(scope="module")
def small_arch_file(tmp_path_factory) -> Path:
    """A small custom architecture (not a published one) as .json, for CLI runs that need no reference."""
    smallest = SEARCH_SPACE.smallest()
    arch = dataclasses.replace(smallest, width=(24, 24, *smallest.width[2:]), kernel_size=(5, 3, 3, 5, 3, 3, 3))
    path = tmp_path_factory.mktemp("arch") / "tiny.json"
    path.write_text(json.dumps(arch.to_dict()))
    return path


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str, status: int = 2) -> None:
    lines = err.strip().splitlines()
    assert code == status, err
    assert len(lines) == 1 and lines[0].startswith("alphanet-export: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ---------------------------------------------------------------- parity with the official reference

# The quick loop checks the files other tests reuse (A0 in every format, A5-base in ONNX for the
# metadata test); CI checks every pair.
QUICK_PARITY = {*(("a0", fmt) for fmt in ALL_FORMATS), ("a5_1", "onnx")}
PARITY = [(key, fmt) if (key, fmt) in QUICK_PARITY else pytest.param(key, fmt, marks=pytest.mark.slow)
          for key in MODELS for fmt in ALL_FORMATS]


@pytest.mark.parametrize("key, fmt", PARITY)
def test_exported_file_reproduces_reference_logits(exported, reference, key, fmt):
    path, _model, result = exported(key, fmt)
    assert result.verification is not None and result.verification.max_abs_diff <= TOLERANCE
    sub = reference["subnets"][key]
    x = det(sub["input"]["seed"], sub["input"]["shape"])
    expected = np.asarray(sub["logits"], dtype=np.float32).reshape(x.shape[0], -1)
    got = run_file(path, fmt, x)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOLERANCE


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_dynamic_batch(exported, reference, fmt):
    path, _model, _result = exported("a0", fmt)
    sub = reference["subnets"]["a0"]
    x = det(sub["input"]["seed"], sub["input"]["shape"])  # 2 images; the export traced other data
    expected = np.asarray(sub["logits"], dtype=np.float32).reshape(2, -1)
    one = run_file(path, fmt, x[:1])
    three = run_file(path, fmt, torch.cat([x, x[:1]]))
    assert one.shape == (1, 1000) and three.shape == (3, 1000)
    assert np.abs(one - expected[:1]).max() <= TOLERANCE
    assert np.abs(three - expected[[0, 1, 0]]).max() <= TOLERANCE


# ---------------------------------------------------------------- graph and metadata

def test_onnx_graph_is_a_clean_inference_graph(exported):
    path, model, _result = exported("a0", "onnx")
    proto = onnx.load(str(path))
    graph = proto.graph
    ops = [n.op_type for n in graph.node]
    assert not {"BatchNormalization", "Dropout", "Identity"} & set(ops)
    # one Conv per conv layer of the model (none dropped, none dead), and the classifier as one Gemm
    assert ops.count("Conv") == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert ops.count("Gemm") == 1
    used = {name for node in graph.node for name in node.input}
    assert all(init.name in used for init in graph.initializer)
    assert [proto.opset_import[0].domain, proto.opset_import[0].version] == ["", onnx_export.DEFAULT_OPSET]
    (inp,), (out,) = graph.input, graph.output
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert (inp.name, in_dims) == ("input", ["batch", 3, 192, 192])
    assert (out.name, out_dims) == ("logits", ["batch", 1000])


@pytest.mark.parametrize("fmt", ["onnx", *(pytest.param(f, marks=pytest.mark.slow)
                                            for f in ("torchscript", "openvino"))])
def test_metadata_travels_with_the_file(exported, fmt):
    path, model, result = exported("a5_1", fmt)
    meta = read_metadata(path)
    assert meta == json.loads(json.dumps(result.metadata)) == model.pretrained_cfg.to_dict()  # the record itself
    assert meta["format"] == "alphanet_zoo.model/3" and meta["name"] == "a5_base" and meta["origin"] == "extracted"
    assert meta["architecture"] == model.arch.to_dict()
    assert meta["preprocessing"] == preprocessing_for(model).to_dict()
    assert meta["preprocessing"]["resolution"] == 288 and meta["preprocessing"]["crop_size"] == 224
    assert meta["labels"] == class_names() and meta["label_set"] == "imagenet-1k"
    assert meta["license"] == "cc-by-nc-4.0" and meta["calibrated"] is False
    assert meta["mflops"] == round(count_flops("a5_base"), 4)
    assert meta["params"] == sum(p.numel() for p in model.parameters())
    assert meta["library_version"] == alphanet_zoo.__version__


def test_onnxruntime_user_sees_metadata(exported):
    """What an ONNX Runtime user without this package reads: strings, JSON where structured."""
    path, model, _result = exported("a0", "onnx")
    props = onnxruntime_session(path).get_modelmeta().custom_metadata_map
    assert set(props) == {"config", "export"}
    config = json.loads(props["config"])
    export = json.loads(props["export"])
    assert export["precision"] == "fp32" and export["file_format"] == "onnx" and export["verified"] is True
    assert config["preprocessing"]["mean"] == list(preprocessing_for(model).mean)
    assert config["architecture"]["resolution"] == 192
    assert config["license"] == "cc-by-nc-4.0" and config["name"] == "a0"
    assert len(config["labels"]) == 1000


def test_fixed_batch_and_opset(tmp_path):
    model = AlphaNet("a0", num_classes=10).eval()
    result = to_onnx(model, tmp_path / "fixed.onnx", batch=4, opset=17)
    assert result.verification.batch_sizes == (4,)
    proto = onnx.load(str(tmp_path / "fixed.onnx"))
    assert proto.opset_import[0].version == 17
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [4, 3, 192, 192]
    meta = read_metadata(tmp_path / "fixed.onnx")
    assert meta["num_classes"] == 10 and "class_names" not in meta  # names only for the 1000 ImageNet classes
    with pytest.raises(ValueError, match="opset"):
        to_onnx(model, tmp_path / "bad.onnx", opset=99)
    assert not (tmp_path / "bad.onnx").exists()


@pytest.mark.slow
def test_export_leaves_the_model_as_it_was(tmp_path):
    model = AlphaNet("a0").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    to_torchscript(model, tmp_path / "m.pt")  # converts a copy to channels-last, in eval mode
    to_onnx(model, tmp_path / "m.onnx", verify=False)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) and v.is_contiguous(), k


# ---------------------------------------------------------------- verification catches bad files

@pytest.mark.slow
def test_verify_rejects_a_file_of_other_weights(exported):
    path, model, _result = exported("a0", "onnx")
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.classifier.bias += 0.01
    with pytest.raises(ExportVerificationError, match=r"differs from PyTorch by 0\.01"):
        verify_onnx(path, other)
    ts_path, _, _ = exported("a0", "torchscript")
    with pytest.raises(ExportVerificationError, match=r"differs from PyTorch by 0\.01"):
        verify_torchscript(ts_path, other)


@pytest.mark.parametrize("fmt", FORMATS)
def test_verify_rejects_a_truncated_file(exported, tmp_path, fmt):
    path, model, _result = exported("a0", fmt)
    cut = tmp_path / f"cut{path.suffix}"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    verify = verify_onnx if fmt == "onnx" else verify_torchscript
    with pytest.raises(ExportVerificationError):
        verify(cut, model)


def _corrupt_onnx(monkeypatch):
    """Make the exporter's graph compute something else: the classifier bias shifted by 1."""
    real = onnx_export.onnx_model

    def corrupted(model, **kwargs):
        proto = real(model, **kwargs)
        for init in proto.graph.initializer:
            if init.name == "classifier.bias":
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 1.0, init.name))
        return proto

    monkeypatch.setattr(onnx_export, "onnx_model", corrupted)


def _corrupt_torchscript(monkeypatch):
    real = torchscript_export.torchscript_module

    def corrupted(model, **kwargs):
        bad = copy.deepcopy(model)
        with torch.no_grad():
            bad.classifier.bias += 1.0
        return real(bad, **kwargs)

    monkeypatch.setattr(torchscript_export, "torchscript_module", corrupted)


@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_verification_leaves_no_file(tmp_path, capsys, monkeypatch, small_arch_file, fmt):
    (_corrupt_onnx if fmt == "onnx" else _corrupt_torchscript)(monkeypatch)
    out = tmp_path / f"model.{'onnx' if fmt == 'onnx' else 'pt'}"
    code, stdout, err = run_cli(["--arch", small_arch_file, "--random-init", "--format", fmt, "--out", out], capsys)
    assert code == 1
    assert "verification failed" in err and "differs from PyTorch by 1" in err and "nothing was written" in err
    assert len(err.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []  # neither the file nor its temporary


@pytest.mark.slow
def test_failed_verification_keeps_the_previous_file(tmp_path, capsys, monkeypatch, small_arch_file):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier, good export")
    _corrupt_onnx(monkeypatch)
    code, _, _ = run_cli(["--arch", small_arch_file, "--random-init", "--out", out], capsys)
    assert code == 1
    assert out.read_bytes() == b"an earlier, good export" and os.listdir(tmp_path) == ["model.onnx"]


def test_interrupted_export_leaves_nothing(tmp_path, capsys, monkeypatch, small_arch_file):
    real_save = onnx.save

    def save_half_then_interrupt(proto, path, *args, **kwargs):
        real_save(proto, path, *args, **kwargs)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx, "save", save_half_then_interrupt)
    code, _, err = run_cli(["--arch", small_arch_file, "--random-init", "--out", tmp_path / "m.onnx"], capsys)
    assert code == 130 and "interrupted" in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_export_exits_with_its_status_and_leaves_no_temporary_folder(tmp_path, sig, status):
    temp, out = tmp_path / "tmp", tmp_path / "out"
    temp.mkdir(), out.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("ALPHANET_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "alphanet_zoo.commands.export", "--arch", "a0", "--weights",
                             "random", "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(temp.glob("alphanet_export_*")):  # the export has begun
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert not list(temp.glob("alphanet_export_*")) and not list(out.iterdir())
    assert err.splitlines()[-1] in ("alphanet-export: interrupted", "alphanet-export: terminated (SIGTERM)")


def test_no_verify_skips_the_runtime_but_writes_atomically(tmp_path, capsys, monkeypatch, small_arch_file):
    def must_not_run(*args, **kwargs):
        raise AssertionError("verification ran despite --no-verify")

    monkeypatch.setattr(onnx_export, "verify_onnx", must_not_run)
    code, out, _ = run_cli(["--arch", small_arch_file, "--random-init", "--no-verify", "--out", tmp_path / "m.onnx"],
                           capsys)
    assert code == 0 and "not verified" in out
    assert os.listdir(tmp_path) == ["m.onnx"]
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)


# ---------------------------------------------------------------- the command

@pytest.mark.slow
def test_cli_exports_supernet_subnet(tmp_path, capsys, official_checkpoint, reference):
    out = tmp_path / "a0.onnx"
    code, stdout, err = run_cli(["--arch", "a0", "--supernet", official_checkpoint, "--out", out], capsys)
    assert code == 0, err
    assert "max abs diff" in stdout and f"wrote {out}" in stdout
    assert "without BatchNorm re-calibration" in err  # the supernet's statistics: said, not hidden
    sub = reference["subnets"]["a0"]
    x = det(sub["input"]["seed"], sub["input"]["shape"])
    expected = np.asarray(sub["logits"], dtype=np.float32).reshape(2, -1)
    assert np.abs(run_file(out, "onnx", x) - expected).max() <= TOLERANCE
    meta = read_metadata(out)
    assert meta["license"] == "cc-by-nc-4.0" and official_checkpoint.name in meta["source"]


@pytest.mark.slow
def test_cli_weights_folder_to_default_torchscript_name(tmp_path, capsys, monkeypatch, supernet, reference):
    supernet.extract("a0").save_pretrained(tmp_path / "a0_weights")
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_cli(["--arch", "a0", "--weights", "a0_weights", "--format", "torchscript"], capsys)
    assert code == 0, err
    out = tmp_path / "alphanet_a0.pt"
    sub = reference["subnets"]["a0"]
    x = det(sub["input"]["seed"], sub["input"]["shape"])
    expected = np.asarray(sub["logits"], dtype=np.float32).reshape(2, -1)
    assert np.abs(run_file(out, "torchscript", x) - expected).max() <= TOLERANCE


def test_cli_random_init_architecture_file(tmp_path, capsys, small_arch_file):
    out = tmp_path / "tiny.pt"  # the suffix picks the format
    code, stdout, err = run_cli(["--arch", small_arch_file, "--random-init", "--out", out], capsys)
    assert code == 0, err
    meta = read_metadata(out)
    assert meta["origin"] == "random" and meta["name"] == "tiny"
    assert meta["architecture"] == json.loads(small_arch_file.read_text())


def test_cli_without_weights_names_the_alternatives(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the real Hub client, told not to touch the network
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    code, _, err = run_cli(["--arch", "a0", "--out", tmp_path / "a0.onnx"], capsys)
    assert_one_line_error(code, err, "the weights of a0", "not cached and offline mode is on", "alphanet-extract",
                          status=1)
    assert not (tmp_path / "a0.onnx").exists()


def _arch_file(tmp_path: Path, name: str, drop: str | None = None, **changes) -> Path:
    data = AlphaNet("a0").arch.to_dict() | changes
    if drop:
        del data[drop]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


BAD_ARGUMENTS = {  # case -> (argv, after --arch, built in tmp_path; fragments the one-line error must hold)
    "unknown_arch": (lambda t: ["a9", "--random-init"], ["'a9'", "a0, a1, a2", "a5_base"]),
    "width_entries": (lambda t: [_arch_file(t, "w", width=[16] * 8), "--random-init"], ["width", "9 entries"]),
    "depth_value": (lambda t: [_arch_file(t, "d", depth=[1, 3, 3, 3, 9, 3, 1]), "--random-init"],
                    ["depth of stage mb5 is 9"]),
    "missing_key": (lambda t: [_arch_file(t, "m", drop="resolution"), "--random-init"], ["missing resolution"]),
    "not_json": (lambda t: [t / "file.txt", "--random-init"], ["file.txt", "JSON"]),
    "missing_folder": (lambda t: ["a0", "--random-init", "--out", t / "nope" / "m.onnx"], ["does not exist"]),
    "parent_is_file": (lambda t: ["a0", "--random-init", "--out", t / "file.txt" / "m.onnx"], ["not a folder"]),
    "bad_batch": (lambda t: ["a0", "--weights", "random", "--batch-axis", "zero"], ["--batch-axis", "'zero'"]),
    "bad_opset": (lambda t: ["a0", "--random-init", "--opset", "99"], ["--opset", "99"]),
    "batch_with_torchscript": (lambda t: ["a0", "--random-init", "--format", "torchscript", "--batch", "4"],
                               ["--batch-axis apply to ONNX"]),
    "format_suffix_clash": (lambda t: ["a0", "--random-init", "--format", "onnx", "--out", t / "m.pt"],
                            ["--format"]),
    "pretrained_custom_arch": (lambda t: [_arch_file(t, "custom", width=[24, *AlphaNet("a0").arch.width[1:]]),
                                          "--weights", "pretrained"],
                               ["custom architecture", "--weights random"]),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_bad_arguments_give_one_line_errors(tmp_path, capsys, monkeypatch, case):
    (tmp_path / "file.txt").write_text("not json")
    monkeypatch.chdir(tmp_path)
    make_argv, fragments = BAD_ARGUMENTS[case]
    before = set(os.listdir(tmp_path))
    argv = ["--arch", *make_argv(tmp_path)]
    before |= {p for p in os.listdir(tmp_path) if p.endswith(".json")}
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, *fragments)
    assert set(os.listdir(tmp_path)) == before  # nothing written


def test_conflicting_weight_flags_are_a_usage_error(capsys):
    assert cli.main(["--arch", "a0", "--weights", "random", "--supernet", "x.pth"]) == 2
    assert "not allowed with" in capsys.readouterr().err


@pytest.mark.slow  # seconds of subprocesses or compiles: CI runs it, the quick loop does not
def test_console_script(tmp_path, small_arch_file):
    script = Path(sys.executable).with_name("alphanet-export")
    done = subprocess.run([str(script), "--arch", str(small_arch_file), "--random-init", "--out",
                           str(tmp_path / "m.onnx")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "max abs diff" in done.stdout and (tmp_path / "m.onnx").is_file()
    done = subprocess.run([str(script), "--arch", "nonsense"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "known: a0, a1" in done.stderr


def test_export_metadata_of_a_custom_model():
    model = AlphaNet(SEARCH_SPACE.sample(3))
    meta = export_metadata(model)
    assert meta["name"] is None and meta["origin"] == "random" and meta["license"] is None and meta["published"] is None
    assert meta["mflops"] == round(count_flops(model.arch), 4)


# ---------------------------------------------------------------- the formats' registry

TOY_FORMAT = '''"""A format of the test's own: the pickled module. One module, registered on import."""
import shutil

import torch

from alphanet_zoo.export.builders import Builder, Candidate, register
from alphanet_zoo.export.runtime import TorchModel
from alphanet_zoo.export.verify import Verification


@register
class ToyBuilder(Builder):
    format = "toy"

    def build(self, job, precision):
        path = job.staging / "fp32.toy"
        torch.save(job.model, path)
        return Candidate("fp32", [path], Verification("toy", "torch.load", (1,), 0.0, job.tolerance, ("pickled",)))

    def write(self, job, candidate, export_info, folder):
        out = folder / "model.toy"
        shutil.copyfile(candidate.files[0], out)
        return [out]

    def open(self, job, candidate, files=None):
        path = (files or candidate.files)[0]
        return TorchModel(path, job.metadata, None, job.threads, "cpu", torch.load(path, weights_only=False))
'''


@pytest.fixture
def toy_format(tmp_path):
    """A format module written here and imported: it registers itself; unregistered afterwards."""
    import importlib.util

    from alphanet_zoo.export.builders import BUILDERS

    path = tmp_path / "formats" / "toy_format.py"
    path.parent.mkdir()
    path.write_text(TOY_FORMAT)
    spec = importlib.util.spec_from_file_location("toy_format", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    try:
        yield BUILDERS["toy"]
    finally:
        BUILDERS.pop("toy", None)


@pytest.mark.slow
def test_a_format_registered_from_its_own_module_is_exported_by_the_pipeline(toy_format, tmp_path):
    from alphanet_zoo.export import default_precision, deploy

    model = AlphaNet(SEARCH_SPACE.smallest(), num_classes=10).eval()
    out = tmp_path / "out" / "m.toy"
    out.parent.mkdir()
    result = export_model(model, out, "toy")
    assert result.format == "toy" and result.precision == "fp32" == default_precision("toy")
    assert os.listdir(out.parent) == ["m.toy"]
    assert result.export_info["file_format"] == "toy" and result.verification.checks == ("pickled",)
    assert result.verification.agreement["cosine_min"] > 0.99999  # measured on the images by the pipeline
    with torch.inference_mode():
        x = torch.randn(2, 3, model.arch.resolution, model.arch.resolution)
        assert torch.equal(torch.load(out, weights_only=False)(x), model(x))
    # what the format does not offer is refused with the formats that do
    with pytest.raises(ValueError, match="not available for --format toy.*--format onnx or openvino"):
        export_model(model, out.parent / "q.toy", "toy", precision="int8")
    with pytest.raises(ValueError, match="unknown export format 'nope'; choose from onnx, openvino, pt2, "
                                         "torchscript, executorch, tflite, toy"):
        export_model(model, out.parent / "q.nope", "nope")
    assert os.listdir(out.parent) == ["m.toy"]
    # the pipeline knows no format by name: each one's particulars live in its builder
    import inspect

    source = "".join(inspect.getsource(f) for f in (deploy.export_model, deploy._time_candidates, deploy._measure,
                                                    deploy._final_check, deploy._export_info, deploy.check_precision))
    assert not [fmt for fmt in deploy.BUILDERS if f'"{fmt}"' in source]


def test_builders_check_their_own_options(tmp_path):
    from alphanet_zoo.export.builders import BUILDERS, ExportJob

    job = ExportJob(AlphaNet("a0"), tmp_path / "m.onnx", "onnx", {}, tmp_path)
    BUILDERS["onnx"].check(job)
    assert job.opset == onnx_export.DEFAULT_OPSET and job.batch == "dynamic"
    for bad in ({"opset": 99}, {"batch": 0}, {"batch": "4"}):
        with pytest.raises(ValueError):
            BUILDERS["onnx"].check(dataclasses.replace(job, **bad))
    BUILDERS["torchscript"].check(dataclasses.replace(job, opset=None))  # no ONNX options to check
