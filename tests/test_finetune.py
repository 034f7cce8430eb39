"""alphanet-finetune and alphanet_zoo.finetune: a model folder from any weights on class folders, resumed
exactly, distilled without NaNs, and taken by load, predict and alphanet-predict."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _train_helpers import REPO, make_image_folder, read_log, wait_until
from safetensors.torch import load_file

import alphanet_zoo
from alphanet_zoo import SEARCH_SPACE, AlphaNet, InputError, count_flops
from alphanet_zoo.commands.finetune import main as finetune_main
from alphanet_zoo.commands import running
from alphanet_zoo.commands.export import main as export_main
from alphanet_zoo.commands.predict import main as predict_main
from alphanet_zoo.errors import AlphaNetError
from alphanet_zoo.export import BUILDERS, export_model, open_model
from alphanet_zoo.export.builders import builder_for
from alphanet_zoo.train.losses import AdaptiveAlphaDivergence, SoftTargetCrossEntropy
from alphanet_zoo.train.finetune import auto_resolution, finetune
from alphanet_zoo.train.step import build_optimizer, finetune_step

CLASSES = ["blue", "red"]
#: the smallest subnet with narrow early stages: a step at 32 x 32 takes milliseconds
TINY = dataclasses.replace(SEARCH_SPACE.smallest(), width=(16, 16, 24, 32, 64, 112, 192, 216, 1792))
# bf16 on every machine (auto would time the step: the uninterrupted and the resumed runs must agree)
QUICK = dict(arch=TINY, epochs=2, batch_size=8, lr=0.05, resolution=32, workers=0, precision="bf16",
             overrides=["checkpoint_every_steps=2", "validation.calib_batches=2", "validation.calib_batch_size=8"])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colours")
    make_image_folder(root / "train", CLASSES, 12, size=32, seed=0)
    make_image_folder(root / "val", CLASSES, 4, size=32, seed=1)
    return root


@pytest.fixture(scope="module")
def tuned(data, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "whole"
    return out, finetune("random", data, out, **QUICK)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("loss", [AdaptiveAlphaDivergence(), SoftTargetCrossEntropy()], ids=["alpha", "kl"])
def test_distillation_is_finite_on_near_one_hot_low_precision_teachers(dtype, loss):
    teacher = torch.tensor([[30.0, -30, -30, -30], [-30, 30, -30, -30], [-30, -30, -30, 30]], dtype=dtype)
    for student in (teacher.clone(), teacher.flip(1), torch.zeros_like(teacher), teacher * 100):
        student = student.clone().requires_grad_(True)
        value = loss(student, teacher)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(student.grad).all() and student.grad.dtype == dtype


@pytest.mark.slow
def test_a_bf16_finetune_step_distilled_from_a_one_hot_teacher_is_finite():
    torch.manual_seed(0)
    model = AlphaNet(TINY, num_classes=4).train()
    optimizer = build_optimizer(model, 0.1)
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    teacher = (torch.nn.functional.one_hot(targets, 4) * 60 - 30).to(torch.bfloat16)
    for distill in (AdaptiveAlphaDivergence(), SoftTargetCrossEntropy()):
        out = finetune_step(model, images, targets, optimizer, teacher_logits=teacher, distill=distill,
                            amp_dtype=torch.bfloat16)
        assert all(map(torch.isfinite, map(torch.tensor, [*out["losses"], *out["divergences"], out["grad_norm"]])))
        assert len(out["losses"]) == 2 and len(out["divergences"]) == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.slow
def test_an_interrupted_and_resumed_run_ends_bit_for_bit_as_the_uninterrupted_one(data, tuned, tmp_path, capsys):
    whole, summary = tuned
    assert summary["stopped"] is None and summary["global_step"] == 6 and summary["folder"] == str(whole)
    out = tmp_path / "resumed"
    args = ["--weights", "random", "--arch", str(_arch_file(tmp_path)), "--data", str(data), "--out", str(out),
            "--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--resolution", "32", "--workers", "0",
            "--precision", "bf16", "--json", *QUICK["overrides"]]
    assert finetune_main([*args, "--max-steps", "3"]) == 0
    stopped = json.loads(capsys.readouterr().out)
    assert stopped["stopped"] == "max_steps" and stopped["global_step"] == 3 and stopped["folder"] is None
    assert not (out / "model.safetensors").exists()
    assert finetune_main(args) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["resumed"] and done["global_step"] == 6 and done["top1"] == summary["top1"]
    a, b = load_file(whole / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    starts = [r for r in read_log(out / "log.jsonl") if r["event"] == "start"]
    assert [r["global_step"] for r in starts] == [0, 3]


def test_resume_file_continues_another_folders_checkpoint_as_the_uninterrupted_run(data, tuned, tmp_path, capsys):
    """``--resume FILE``: the run goes on from that checkpoint into --out, ending as the uninterrupted run; a
    missing FILE, or an --out holding a checkpoint of its own, is one error."""
    whole, summary = tuned
    first = finetune("random", data, tmp_path / "first", max_steps=3, **QUICK)
    assert first["stopped"] == "max_steps" and first["global_step"] == 3
    args = ["--weights", "random", "--arch", str(_arch_file(tmp_path)), "--data", str(data), "--epochs", "2",
            "--batch-size", "8", "--lr", "0.05", "--resolution", "32", "--workers", "0", "--precision", "bf16",
            "--json", *QUICK["overrides"]]
    checkpoint = tmp_path / "first" / "checkpoint.pt"
    assert finetune_main([*args, "--out", str(tmp_path / "second"), "--resume", str(checkpoint)]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["resumed"] and done["global_step"] == 6 and done["top1"] == summary["top1"]
    a, b = load_file(whole / "model.safetensors"), load_file(tmp_path / "second" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    (start,) = [r for r in read_log(tmp_path / "second" / "log.jsonl") if r["event"] == "start"]
    assert start["resumed_from"] == str(checkpoint) and start["global_step"] == 3
    assert finetune_main([*args, "--out", str(tmp_path / "second"), "--resume", str(checkpoint)]) == 2
    _one_line(capsys, "second/checkpoint.pt exists", "--resume without a file")
    assert finetune_main([*args, "--out", str(tmp_path / "third"), "--resume", str(tmp_path / "none.pt")]) == 2
    _one_line(capsys, "no checkpoint to resume at", "none.pt")
    assert finetune_main([*args, "--out", str(tmp_path / "first"), "--no-resume"]) == 2
    _one_line(capsys, "first/checkpoint.pt exists", "drop --no-resume")


def test_the_folder_is_a_finetuned_model_that_load_predict_and_alphanet_predict_take(data, tuned, capsys):
    folder, summary = tuned
    model = alphanet_zoo.load(folder)
    record = model.pretrained_cfg
    assert record.origin == "finetuned" and record.labels == tuple(CLASSES) and model.num_classes == 2
    assert record.preprocessing.resolution == 32 and record.license is None
    assert str(data / "train") in record.source
    (measured,) = record.measured
    assert measured.top1 == pytest.approx(summary["top1"]) and measured.images == 8
    assert measured.data == str(data / "val")
    red = sorted((data / "val" / "red").iterdir())[0]
    top = alphanet_zoo.predict(model, [str(red)], topk=2)[0]
    assert {r["name"] for r in top} == set(CLASSES)
    assert predict_main(["--weights", str(folder), str(red), "--topk", "1"]) == 0
    printed = capsys.readouterr()
    assert any(f"%  {name}" in printed.out for name in CLASSES), printed


def test_alphanet_predict_shows_every_class_of_a_model_with_fewer_than_five(data, tuned, tmp_path, capsys):
    folder, _ = tuned
    red = str(sorted((data / "val" / "red").iterdir())[0])
    assert predict_main(["--weights", str(folder), red]) == 0  # the command alphanet-finetune prints
    printed = capsys.readouterr().out
    assert "  2. " in printed and "  3. " not in printed and all(name in printed for name in CLASSES)
    model = AlphaNet(TINY, num_classes=3)
    exported = tmp_path / "three.onnx"
    export_model(model, exported, "onnx", precision="fp32")
    assert predict_main(["--model", str(exported), "--json", red]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(row["top"]) == 3
    assert predict_main(["--weights", str(folder), "--topk", "3", red]) == 2
    assert "--topk 3 is more than the model's 2 classes" in capsys.readouterr().err


def _installed(fmt: str) -> bool:
    try:
        return builder_for(fmt).supported("fp32") is None
    except AlphaNetError:  # its optional library is not installed
        return False


def test_a_finetuned_model_is_a_model_of_its_training_resolution(tuned):
    folder, _ = tuned
    record = alphanet_zoo.load(folder).pretrained_cfg
    assert record.arch.resolution == record.preprocessing.resolution == 32
    assert record.mflops == pytest.approx(count_flops(dataclasses.replace(TINY, resolution=32), 2))
    assert json.loads((folder / "config.json").read_text())["architecture"]["resolution"] == 32


def test_a_finetuned_folder_of_alphanet_zoo_0_2_reads_as_a_model_of_its_preprocessing_resolution(tuned, tmp_path):
    folder, _ = tuned
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["architecture"]["resolution"], config["mflops"] = 192, count_flops(TINY, 2)  # as 0.2 wrote it
    (old / "config.json").write_text(json.dumps(config))
    model = alphanet_zoo.load(old)
    assert model.arch.resolution == 32 and model.pretrained_cfg.mflops < config["mflops"] / 10
    assert model.pretrained_cfg == alphanet_zoo.load(folder).pretrained_cfg


PHONE_FORMATS = ("executorch", "tflite")  # slow to build


@pytest.mark.parametrize("fmt", [pytest.param(f, marks=pytest.mark.slow) if f in PHONE_FORMATS else f
                                 for f in sorted(BUILDERS)])
def test_alphanet_export_takes_a_finetuned_folder_at_its_resolution(data, tuned, tmp_path, capsys, fmt):
    if not _installed(fmt):
        pytest.skip(f"{fmt}: its optional library is not installed")
    folder, _ = tuned
    # the architecture comes from the folder; openvino's default (auto) times bf16 too: fp32 is enough here
    assert export_main(["--weights", str(folder), "--format", fmt, "--precision", "fp32", "--out", str(tmp_path),
                        "--json"]) == 0
    printed = capsys.readouterr()
    assert f"{folder.name}: input 32x32," in printed.err and "verified" in printed.err
    result = json.loads(printed.out)
    assert result["config"]["architecture"]["resolution"] == result["config"]["preprocessing"]["resolution"] == 32
    exported = open_model(result["path"])
    assert exported.resolution == 32 and exported.static_resolution() in (None, 32)
    red = str(sorted((data / "val" / "red").iterdir())[0])
    assert predict_main(["--model", result["path"], "--json", red]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["name"] for r in row["top"]} == set(CLASSES)


def test_alphanet_export_without_arch_needs_a_folder(capsys):
    assert export_main(["--weights", "random", "--format", "onnx"]) == 2
    assert "--arch is needed with --weights random" in capsys.readouterr().err


@pytest.mark.slow
def test_frozen_features_keep_their_weights_and_a_teacher_is_distilled(data, tuned, tmp_path):
    teacher, _ = tuned
    out = tmp_path / "frozen"
    summary = finetune("random", data, out, freeze="features", teacher=teacher, distill="kl", max_steps=None,
                       **{**QUICK, "epochs": 1})
    trained = load_file(out / "model.safetensors")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        base = AlphaNet(TINY).state_dict()
    assert torch.equal(trained["stem.conv.weight"], base["stem.conv.weight"])
    assert not torch.equal(trained["feature_mix.weight"], base["feature_mix.weight"])
    records = [r for r in read_log(out / "log.jsonl") if r["event"] == "train"]
    assert all(len(r["losses"]) == 2 and len(r["divergences"]) == 1 for r in records)
    assert "distilled (kl)" in alphanet_zoo.load(out).pretrained_cfg.source and summary["top1"] is not None


def test_bad_input_is_one_clear_error(data, tmp_path, capsys):
    base = ["--weights", "random", "--arch", "a0", "--out", str(tmp_path / "o")]
    assert finetune_main([*base, "--data", str(data / "train")]) == 2
    assert "no train/ and val/ folders" in capsys.readouterr().err
    assert finetune_main([*base, "--data", str(data), "--distill", "alpha"]) == 2
    assert "--distill alpha needs --teacher" in capsys.readouterr().err
    assert finetune_main(["--weights", "random", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "needs an architecture" in capsys.readouterr().err
    with pytest.raises(InputError, match="the teacher has 1000 classes"):  # an ImageNet head for two colours
        finetune("random", data, tmp_path / "t", teacher="random", teacher_arch=TINY, **QUICK)


def test_a_finished_folder_holds_no_lock_and_a_refused_run_leaves_no_folder(data, tuned, tmp_path):
    folder, _ = tuned
    assert not (folder / ".alphanet-train.lock").exists()
    with pytest.raises(InputError, match="the teacher has 1000 classes"):
        finetune("random", data, tmp_path / "refused", teacher="random", teacher_arch=TINY, **QUICK)
    assert not (tmp_path / "refused").exists()
    (tmp_path / "given").mkdir()  # a folder the user made stays
    with pytest.raises(InputError, match="the teacher has 1000 classes"):
        finetune("random", data, tmp_path / "given", teacher="random", teacher_arch=TINY, **QUICK)
    assert (tmp_path / "given").is_dir()


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_run_stopped_while_setting_up_claims_no_checkpoint(data, tmp_path, sig, status):
    out = tmp_path / "early"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("ALPHANET_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "alphanet_zoo.commands.finetune", "--weights", "random", "--arch",
                             str(_arch_file(tmp_path)), "--data", str(data), "--out", str(out), "--epochs", "2",
                             "--batch-size", "8", "--resolution", "32", "--workers", "0", "--json",
                             *QUICK["overrides"]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (out / ".alphanet-train.lock").exists(), 120, "the output folder", proc)
        proc.send_signal(sig)  # while it reads the data, builds the model and calibrates: before step 1
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == status, stderr
    result = json.loads(stdout)
    assert result["stopped"] == sig.name and result["global_step"] == 0
    assert result["checkpoint"] is None and not (out / "checkpoint.pt").exists()
    assert "no checkpoint yet" in stderr and not (out / ".alphanet-train.lock").exists()


def test_progress_is_one_line_per_epoch_off_a_terminal_and_a_bar_on_one(data, tmp_path, capsys, monkeypatch):
    argv = ["--weights", "random", "--arch", str(_arch_file(tmp_path)), "--data", str(data), "--out",
            str(tmp_path / "p"), "--epochs", "2", "--batch-size", "8", "--resolution", "32", "--workers", "0",
            *QUICK["overrides"]]
    assert finetune_main(argv) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if ": epoch " in line]
    assert [line.split(" steps in ")[0] for line in lines] == ["alphanet-finetune: epoch 1/2: 3/3",
                                                               "alphanet-finetune: epoch 2/2: 3/3"]
    assert all(re.search(r"s \(\d+\.\d\d step/s\), loss \d\.\d{3}, lr ", line) for line in lines), lines

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = running.epoch_progress("alphanet-finetune")(total=4, initial=0, desc="epoch 1/2", unit="step")
    bar.update(2)
    bar.close()
    drawn = sys.stderr.getvalue()
    assert "epoch 1/2" in drawn and "2/4" in drawn and "step/s" in drawn and "<" in drawn  # rate and ETA


def _one_line(capsys, *fragments: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(f in err[0] for f in fragments), err


def test_input_silently_taken_before_is_refused_by_the_command_and_the_api(data, tmp_path, capsys):
    one = tmp_path / "one"
    make_image_folder(one / "train", ["red"], 12, size=32)
    make_image_folder(one / "val", ["red"], 4, size=32)
    out = tmp_path / "o"
    base = ["--weights", "random", "--arch", str(_arch_file(tmp_path)), "--out", str(out), "--batch-size", "8",
            "--resolution", "32", "--epochs", "1", "--workers", "0"]
    assert finetune_main([*base, "--data", str(one)]) == 2
    _one_line(capsys, "has one class folder (red)", "at least two classes")
    with pytest.raises(InputError, match="has one class folder"):
        finetune("random", one, out, **QUICK)
    for override, argument in (("output_dir", "--out"), ("epochs", "--epochs")):
        elsewhere = f"{override}={tmp_path / 'elsewhere' if override == 'output_dir' else 7}"
        assert finetune_main([*base, "--data", str(data), elsewhere]) == 2
        _one_line(capsys, f"override {elsewhere!r}", f"{override} is set by", argument)
        with pytest.raises(InputError, match=f"{override} is set by"):
            finetune("random", data, out, **{**QUICK, "overrides": [elsewhere]})
    assert finetune_main([*base, "--data", str(data), "--teacher-arch", "a0"]) == 2
    _one_line(capsys, "--teacher-arch needs --teacher")
    with pytest.raises(InputError, match="teacher_arch .* give the teacher"):
        finetune("random", data, out, teacher_arch="a0", **QUICK)
    assert finetune_main([*base, "--data", str(data), "--resolution", "7"]) == 2
    _one_line(capsys, "--resolution", "7 is outside")
    for bad in ({"warmup_epochs": float("inf")}, {"resolution": 7}, {"epochs": 2.5}, {"lr": 0.0},
                {"label_smoothing": 1.0}, {"batch_size": True}):
        name = next(iter(bad))
        with pytest.raises(InputError, match=rf"^{name} must be .* got {bad[name]!r}$"):
            finetune("random", data, out, **{**QUICK, **bad})
    assert not out.exists() and not (tmp_path / "elsewhere").exists()


def test_a_class_name_with_control_characters_prints_on_its_own_line(data, tmp_path, capsys):
    model = AlphaNet(TINY, num_classes=2)
    model.reset_classifier(2, labels=["blue", "red\n  1.  99.99%  forged\x1b[2J"])
    model.save_pretrained(tmp_path / "m")
    red = str(sorted((data / "val" / "red").iterdir())[0])
    assert predict_main(["--weights", str(tmp_path / "m"), red]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "\x1b" not in "".join(lines)
    assert any(line.endswith("red\\n  1.  99.99%  forged\\x1b[2J") for line in lines), lines


def test_auto_resolution_does_not_upsample_small_images(data):
    from alphanet_zoo.data import class_folder_samples

    samples, _ = class_folder_samples(data / "train")
    assert auto_resolution(192, samples) == 32
    assert auto_resolution(24, samples) == 24


def _arch_file(folder: Path) -> Path:
    path = folder / "tiny.json"
    path.write_text(json.dumps(TINY.to_dict()))
    return path


@pytest.mark.slow  # about a minute of CPU: three fine-tunings of real architectures with the default settings
def test_the_documented_flow_reaches_90_percent_by_alphanet_predict(tmp_path, capsys):
    data = tmp_path / "colours"
    make_image_folder(data / "train", CLASSES, 40, size=64, seed=0)
    make_image_folder(data / "val", CLASSES, 10, size=64, seed=1)
    images = sorted(str(p) for p in (data / "val").glob("*/*.png"))

    def tune(out: Path, *extra: str) -> None:
        assert finetune_main(["--weights", "random", "--data", str(data), "--out", str(out), *extra]) == 0
        capsys.readouterr()

    def accuracy(folder: Path) -> float:
        assert predict_main(["--weights", str(folder), "--json", "--topk", "1", *images]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return sum(r["top"][0]["name"] == Path(r["path"]).parent.name for r in rows) / len(rows)

    tune(tmp_path / "a1", "--arch", "a1")
    assert accuracy(tmp_path / "a1") >= 0.9
    for distill in ("alpha", "none"):
        teacher = ["--teacher", str(tmp_path / "a1")] if distill == "alpha" else []
        tune(tmp_path / distill, "--arch", "a0", "--distill", distill, *teacher)
        assert accuracy(tmp_path / distill) >= 0.9
        record = alphanet_zoo.load(tmp_path / distill).pretrained_cfg
        assert record.origin == "finetuned" and record.measured[0].top1 >= 90


def test_import_alphanet_zoo_loads_no_training_code_until_finetune_is_used():
    import subprocess
    import sys

    code = ("import sys, alphanet_zoo; before = 'alphanet_zoo.train.trainer' in sys.modules; "
            "f = alphanet_zoo.finetune; print(before, 'alphanet_zoo.train.trainer' in sys.modules, f.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "alphanet_zoo.train.finetune"]
    assert "finetune" in alphanet_zoo.__all__
