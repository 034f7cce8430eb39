"""The zoo's own commands (alphanet-models, -predict, -extract), the shared command vocabulary and
exit statuses of all eight commands, and the torch.hub entry points."""
import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from _train_helpers import make_image_folder

import alphanet_zoo
from alphanet_zoo.commands import flags, running
from alphanet_zoo.commands import extract_main, models_main, predict_main

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "tests" / "parity" / "photo.png"
COMMANDS = {f"alphanet-{name}": f"alphanet_zoo.commands.{name}:main"
            for name in ("models", "extract", "predict", "export", "bench", "eval", "train", "search", "finetune")}


def command(name):
    module, function = COMMANDS[name].split(":")
    return getattr(importlib.import_module(module), function)


def test_models_table_and_json(capsys, tmp_path):
    assert models_main([]) == 0
    out = capsys.readouterr().out
    assert "a5_base" in out and "594.79" in out and "80.78" in out and "not published" in out
    assert models_main(["--json", "--out", str(tmp_path / "models.json")]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)  # stdout is only JSON
    assert [r["name"] for r in rows] == alphanet_zoo.list_models()
    assert rows[0]["mflops"] == 203.39 and rows[0]["params"] == 8_954_184 and rows[0]["weights"] == "not published"
    assert json.loads((tmp_path / "models.json").read_text()) == rows
    assert models_main(["--arch", "a0,AlphaNet-A6", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["a0", "a6"]


@pytest.mark.slow  # seconds of subprocesses or compiles: CI runs it, the quick loop does not
def test_console_scripts_are_installed_and_a_closed_pipe_is_quiet():
    script = str(Path(sys.executable).parent / "alphanet-models")
    run = subprocess.run([script, "--json"], capture_output=True, text=True)
    assert run.returncode == 0 and json.loads(run.stdout)[-1]["name"] == "a6"
    # the reader goes away before the command writes (as `alphanet-models --json | head -c 10` can)
    proc = subprocess.Popen([script, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == running.EXIT_BROKEN_PIPE and b"Traceback" not in err and err.strip() == b""
    shell = subprocess.run(f"{script} --json | head -c 10", shell=True, capture_output=True, text=True)
    assert shell.stdout == "[\n  {\n    " and shell.stderr == ""


def test_every_console_script_is_a_main_in_alphanet_zoo_commands():
    installed = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")
                 if e.name.startswith("alphanet-")}
    assert installed == COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_of_every_command_has_help_and_shows_its_default(name, capsys):
    main = command(name)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: {name}")
    parser = _parser_of(name)
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        assert action.help, f"{name} {action.option_strings} has no help"
        shown = parser.formatter_class("x")._get_help_string(action)
        if action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in shown, f"{name} {action.option_strings}: default {action.default!r} not shown"


def _parser_of(name):
    captured = {}
    original = flags.ArgumentParser.parse_args

    def grab(self, args=None, namespace=None):
        captured["parser"] = self
        raise SystemExit(0)

    flags.ArgumentParser.parse_args = grab
    try:
        try:
            command(name)([])
        except SystemExit:
            pass
    finally:
        flags.ArgumentParser.parse_args = original
    return captured["parser"]


SHARED_FLAGS = {"--arch", "--weights", "--device", "--batch-size", "--workers", "--threads", "--seed", "--calib-data",
                "--calib-batches", "--calib-batch-size", "--out", "--json"}


def test_shared_flags_are_defined_once_and_mean_the_same_everywhere():
    seen = {}
    for name in COMMANDS:
        for action in _parser_of(name)._actions:
            for flag in set(action.option_strings) & SHARED_FLAGS:
                seen.setdefault(flag, []).append((name, action.type, action.metavar, action.nargs))
    assert set(seen) == SHARED_FLAGS
    for flag, uses in seen.items():
        kinds = {(getattr(t, "__name__", t), m, n) for _, t, m, n in uses}
        assert len(kinds) == 1, f"{flag} differs between commands: {uses}"
    assert {name for name, *_ in seen["--json"]} == set(COMMANDS)  # --json is a switch on all nine
    assert {name for name, *_ in seen["--weights"]} == {"alphanet-predict", "alphanet-export", "alphanet-bench",
                                                        "alphanet-eval", "alphanet-finetune"}
    assert {name for name, *_ in seen["--out"]} == set(COMMANDS)


@pytest.mark.parametrize("argv, value", [
    (["--calib-batches", "nan"], "expected an integer"), (["--threads", "0"], "outside the allowed range"),
    (["--flops", "nan"], "expected a finite number"), (["--flops", "inf"], "expected a finite number"),
    (["--flops", "-3"], "outside the allowed range"), (["--flops", "10"], "smallest subnet has 203.39"),
    (["--flops", "5000"], "the largest 1939.34"), (["--batch-size", "0"], "outside the allowed range"),
])
def test_numeric_flags_reject_nan_inf_and_out_of_range_in_one_line(argv, value, tmp_path, capsys):
    from alphanet_zoo.commands.search import main

    (tmp_path / "d").mkdir()
    base = ["--supernet", str(tmp_path / "s.pt"), "--data", str(tmp_path / "d"), "--calib-data", str(tmp_path / "d"),
            "--out", str(tmp_path / "b.json"), "--flops", "300"]
    assert main(base + argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alphanet-search: error:") and value in err and "\n" not in err
    assert not (tmp_path / "b.json").exists()


def test_predict_matches_the_library_and_reports_softmax_probabilities(official_checkpoint, supernet, capsys):
    assert predict_main([str(PHOTO), "--arch", "a0", "--supernet", str(official_checkpoint), "--topk", "3",
                         "--json"]) == 0
    captured = capsys.readouterr()
    line = json.loads(captured.out)
    assert "a0 is extracted from" in captured.err and "without BatchNorm re-calibration" in captured.err
    model = supernet.extract("a0")
    with torch.no_grad():
        logits = model(alphanet_zoo.transforms(model)(Image.open(PHOTO)).unsqueeze(0))[0]
    probabilities = torch.exp(logits - logits.max()) / torch.exp(logits - logits.max()).sum()  # softmax, by hand
    expected = torch.topk(probabilities, 3)
    assert line["path"] == str(PHOTO)
    assert [r["index"] for r in line["top"]] == expected.indices.tolist()
    assert [r["probability"] for r in line["top"]] == pytest.approx(expected.values.tolist(), rel=1e-5)
    names = alphanet_zoo.imagenet.class_names()
    assert [r["name"] for r in line["top"]] == [names[i] for i in expected.indices.tolist()]


def test_predict_with_random_weights_and_a_fine_tuned_folder(supernet, tmp_path, capsys):
    assert predict_main([str(PHOTO), "--arch", "a0", "--weights", "random", "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["top"]) == 5 and "re-calibration" not in captured.err
    model = supernet.extract("a0")
    model.reset_classifier(10, labels=[f"label{i}" for i in range(10)])
    folder = model.save_pretrained(tmp_path / "ten")
    assert predict_main([str(PHOTO), "--weights", str(folder), "--topk", "10", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["top"]
    assert sorted(r["index"] for r in top) == list(range(10))  # the 10-class head, not a random 1000-class one
    assert {r["name"] for r in top} == {f"label{i}" for i in range(10)} and top[0]["synset"] is None


@pytest.mark.parametrize("argv, message, code", [
    (["nope.png", "--arch", "a0", "--random"], "unrecognized arguments: --random", 2),
    (["missing.png", "--arch", "a0", "--weights", "random"], "cannot read image missing.png: file not found", 2),
    ([str(PHOTO), "--arch", "a9"], "unknown model 'a9'; known: a0, a1", 2),
    ([str(PHOTO), "--arch", "a0", "--weights", "absent_folder"], "weights not found: absent_folder", 2),
    ([str(PHOTO), "--weights", "random"], "--arch is needed with --weights random", 2),
])
def test_predict_errors_are_one_line(argv, message, code, capsys):
    assert predict_main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("alphanet-predict: error:") and message in err and "\n" not in err


def test_predict_without_weights_points_to_the_alternatives(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert predict_main([str(PHOTO), "--arch", "a0"]) == 1  # a runtime failure: the weights cannot be had
    err = capsys.readouterr().err
    assert "not cached" in err and "alphanet-extract" in err and len(err.strip().splitlines()) == 1


def test_extract_errors(tmp_path, capsys):
    assert extract_main(["--supernet", str(tmp_path / "none.pth"), "--arch", "a0", "--out", str(tmp_path)]) == 2
    assert "supernet checkpoint not found" in capsys.readouterr().err
    bad = tmp_path / "arch.json"
    bad.write_text(json.dumps({**alphanet_zoo.get_arch("a0").to_dict(), "depth": [1, 3, 3]}))
    assert extract_main(["--supernet", str(bad), "--arch", str(bad), "--out", str(tmp_path)]) == 2
    assert "depth needs 7 entries" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert extract_main(["--supernet", str(bad), "--arch", "a0", "--out", str(tmp_path / "afile")]) == 2
    assert "a file of that name exists" in capsys.readouterr().err


def test_torch_hub_entry_points(official_checkpoint, supernet):
    model = torch.hub.load(str(REPO), "alphanet_a0", source="local", weights=str(official_checkpoint))
    x = torch.randn(1, 3, 192, 192)
    with torch.no_grad():
        assert torch.allclose(model(x), supernet.extract("a0")(x), rtol=0, atol=1e-6)
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = {n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")}
    assert {f"alphanet_{m}" for m in alphanet_zoo.list_models()} | {"supernet"} <= entries
    assert hubconf.alphanet_a5().arch == alphanet_zoo.get_arch("a5")


@pytest.mark.slow
def test_extract_calibrates_with_the_given_seed(official_checkpoint, supernet, tmp_path):
    from safetensors.torch import load_file

    from alphanet_zoo.calibration import calibrate
    from alphanet_zoo.data import calibration_batches

    train = make_image_folder(tmp_path / "train", ["n01440764", "n01443537"], 3)
    outs = {}
    for seed in (3, 4):
        out = tmp_path / f"seed{seed}"
        assert extract_main(["--supernet", str(official_checkpoint), "--arch", "a0", "--out", str(out),
                             "--calib-data", str(train), "--calib-batches", "2", "--calib-batch-size", "4",
                             "--seed", str(seed), "--workers", "0"]) == 0
        outs[seed] = load_file(out / "a0" / "model.safetensors")
    # the library's own calibration with seed 3 gives exactly what the command wrote for seed 3
    expected = calibrate(supernet.extract("a0"), calibration_batches(train, 2, 4, seed=3), 192).state_dict()
    assert all(torch.equal(outs[3][k], expected[k]) for k in outs[3])
    assert not torch.equal(outs[3]["stem.bn.running_mean"], outs[4]["stem.bn.running_mean"])  # seeds differ
    uncalibrated = supernet.extract("a0").state_dict()
    assert not torch.equal(outs[3]["stem.bn.running_mean"], uncalibrated["stem.bn.running_mean"])
    assert torch.equal(outs[3]["stem.conv.weight"], uncalibrated["stem.conv.weight"])
    config = json.loads((tmp_path / "seed3" / "a0" / "config.json").read_text())
    assert config["calibration"]["seed"] == 3 and config["calibration"]["num_batches"] == 2
    assert config["calibration"]["data"] == "train" and config["calibrated"] is True
