"""``alphanet-train`` under torchrun (2 gloo processes on loopback, the tiny recipe): what a run survives.

An uninterrupted run is the reference. SIGTERM writes a checkpoint and exits 143; a job SIGKILLed at
a random moment and rerun with the same command resumes from its last checkpoint; either way each
step is logged once and the run ends bit for bit as the reference. A killed rank ends the other with
one line naming it, in seconds, and a damaged newest checkpoint is replaced by the previous one; a
hung rank ends the other within ``collective_timeout_s``. Every run here takes tens of seconds of
CPU: all are ``slow``.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _train_helpers import (REPO, SYNSETS, events, finish, kill_job, logged_step, make_image_folder, rank_output,
                            read_log, running, start_torchrun, state_digest, train_args, train_losses, wait_until,
                            workers)

pytestmark = pytest.mark.slow

# 40 training images, 2 processes x batch 4: 5 steps an epoch, 2 epochs; a checkpoint every 2 steps
RECIPE = ("epochs=2", "checkpoint_every_steps=2", "optim.lr_per_256=1.0", "sandwich.num_archs=3")
STEPS = 10
VAL_IMAGES = 12


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_image_folder(root / "train", list(SYNSETS), 10, size=40, seed=0)
    make_image_folder(root / "val", list(SYNSETS), VAL_IMAGES // len(SYNSETS), size=40, seed=1)
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data) -> Path:
    out = tmp_path_factory.mktemp("runs") / "reference"
    proc = start_torchrun(out, data, *RECIPE)
    text = finish(proc)
    assert proc.returncode == 0, text[-3000:]
    return out


def _read(path: Path) -> dict:
    """A checkpoint as plain data, read here with torch.load rather than by the code under test."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _no_litter(out: Path) -> None:
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _problems(text: str) -> list[str]:
    """Errors, warnings and tracebacks among a process's output lines (INFO lines are fine)."""
    return [line for line in text.splitlines() if "error" in line or "warning" in line or "Traceback" in line]


def _assert_resumed_exactly(out: Path, reference: Path, resumed_from: Path, state: dict) -> None:
    """The rerun started at ``state`` (the checkpoint it resumed from) and continued as the reference did."""
    log = read_log(out / "log.jsonl")
    start = events(log, "start")[-1]
    step = state["global_step"]
    assert start["resumed"] and start["resumed_from"] == str(resumed_from) and start["global_step"] == step
    assert start["state_sha256"] == state_digest(state["model"])  # the very weights of that checkpoint
    after = [s for s, _ in train_losses(log[log.index(start):])]
    assert after == list(range(step + 1, STEPS + 1))  # it went on from the checkpoint, not from scratch
    reference_log = read_log(reference / "log.jsonl")
    assert train_losses(log) == train_losses(reference_log)  # every step once, bit for bit
    assert [(r["smallest"], r["largest"]) for r in events(log, "validation")] == \
        [(r["smallest"], r["largest"]) for r in events(reference_log, "validation")]
    final, expected = _read(out / "checkpoint.pt"), _read(reference / "checkpoint.pt")
    assert final["model"].keys() == expected["model"].keys()
    assert all(torch.equal(final["model"][k], expected["model"][k]) for k in final["model"])
    buffers = [(final["optimizer"]["state"][i], expected["optimizer"]["state"][i]) for i in final["optimizer"]["state"]]
    momentum = [(a["momentum_buffer"], b["momentum_buffer"]) for a, b in buffers]
    assert momentum and all(torch.equal(a, b) for a, b in momentum)
    _no_litter(out)


def test_an_uninterrupted_run(reference, data):
    log = read_log(reference / "log.jsonl")
    start, = events(log, "start")
    assert not start["resumed"] and start["world_size"] == 2 and start["global_batch"] == 8
    assert start["steps_per_epoch"] == 5 and start["base_lr"] == pytest.approx(1.0 * 8 / 256)
    # no data.num_classes: one output per class folder, numbered in sorted order
    assert start["num_classes"] == 4 and start["labels"] == "class_folders" and start["classes"] == sorted(SYNSETS)
    assert [s for s, _ in train_losses(log)] == list(range(1, STEPS + 1))
    assert all(torch.isfinite(torch.tensor(losses)).all() for _, losses in train_losses(log))
    assert [(r["global_step"], r["reason"]) for r in events(log, "checkpoint")] == \
        [(2, "step"), (4, "step"), (5, "epoch"), (5, "validation"), (6, "step"), (8, "step"), (10, "epoch"),
         (10, "validation")]
    validations = events(log, "validation")
    assert [v["epoch"] for v in validations] == [1, 2]
    counted = len(list((data / "val").glob("*/*.png")))
    assert all(v[name]["images"] == counted == VAL_IMAGES for v in validations for name in ("smallest", "largest"))
    newest, previous = _read(reference / "checkpoint.pt"), _read(reference / "checkpoint.prev.pt")
    assert (newest["global_step"], newest["epoch"], newest["validation_pending"]) == (STEPS, 2, False)
    assert (previous["global_step"], previous["validation_pending"]) == (STEPS, True)  # the one before validation
    assert newest["model"]["classifier.weight"].shape[0] == 4
    from safetensors.torch import load_file

    final = load_file(reference / "supernet.safetensors")
    assert all(torch.equal(final[k], v) for k, v in newest["model"].items())
    assert rank_output(reference, 0) == rank_output(reference, 1) == ""  # no warning, no error
    assert not (reference / "log.discarded.jsonl").exists()
    _no_litter(reference)


def test_sigterm_then_sigkill_then_the_same_command_resumes_exactly(tmp_path, data, reference):
    """SIGTERM to every training process (as a scheduler pre-empting the job sends it): a checkpoint at the
    step it stopped at, status 143. The same command resumes from it; SIGKILL of the whole job at a random
    moment; the same command resumes from the last checkpoint. The end is the reference, bit for bit.
    (torchrun itself is not signalled: it would exit 1 with its own report. Here its report shows the
    training processes' status.)"""
    out = tmp_path / "preempted"
    proc = start_torchrun(out, data, *RECIPE)
    wait_until(lambda: logged_step(out) >= 3, 300, "step 3", proc)
    ranks = workers(proc)
    signalled = time.monotonic()
    for pid in ranks.values():
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not any(running(pid) for pid in ranks.values()), 60, "the processes to stop")
    assert time.monotonic() - signalled < 60  # a hang guard: it takes one step and a checkpoint write
    text = finish(proc, 60)
    assert text.count("exitcode  : 143") == 2, text[-3000:]  # both training processes
    stopped, = events(read_log(out / "log.jsonl"), "stopped")
    step = stopped["global_step"]
    assert stopped["signal"] == "SIGTERM" and 3 <= step <= 6
    state = _read(out / "checkpoint.pt")
    assert state["global_step"] == step and state["consumed"] == 8 * (step % 5)
    assert f"stopped by SIGTERM at step {step}" in rank_output(out, 0, "stdout")
    assert rank_output(out, 0) == rank_output(out, 1) == ""

    proc = start_torchrun(out, data, *RECIPE)  # the same command
    wait_until(lambda: logged_step(out) >= step + 2, 300, f"step {step + 2}", proc)
    start = events(read_log(out / "log.jsonl"), "start")[-1]
    assert start["resumed"] and start["global_step"] == step and start["state_sha256"] == state_digest(state["model"])
    delay = random.uniform(0.0, 2.5)  # any moment: in a step, in a checkpoint write, in validation
    time.sleep(delay)
    kill_job(proc, signal.SIGKILL)
    proc.wait(60)
    newest = out / "checkpoint.pt" if (out / "checkpoint.pt").is_file() else out / "checkpoint.prev.pt"
    state = _read(newest)
    assert state["global_step"] >= step, delay

    proc = start_torchrun(out, data, *RECIPE)  # the same command
    text = finish(proc)
    assert proc.returncode == 0, (delay, text[-3000:])
    _assert_resumed_exactly(out, reference, newest, state)
    problems = _problems(rank_output(out, 0))
    if newest.name == "checkpoint.pt":
        assert problems == [], problems
    else:  # killed between the renames of a checkpoint write: the previous one is used, and that is said
        assert len(problems) == 1 and "resuming from the previous checkpoint" in problems[0], problems


def test_a_killed_rank_ends_the_other_with_one_line_then_resume_falls_back(tmp_path, data, reference):
    out = tmp_path / "rank_killed"
    proc = start_torchrun(out, data, *RECIPE)
    wait_until(lambda: logged_step(out) >= 5, 300, "step 5", proc)  # checkpoints at steps 2 and 4 exist
    ranks = workers(proc)
    killed_at = time.monotonic()
    os.kill(ranks[1], signal.SIGKILL)
    wait_until(lambda: not running(ranks[0]), 60, "rank 0 to exit")  # a hang guard: it takes seconds
    survivor_s = time.monotonic() - killed_at
    text = finish(proc, 60)
    assert proc.returncode != 0, text[-3000:]
    errors = _error_lines(rank_output(out, 0))
    assert len(errors) == 1, errors
    assert errors[0].startswith("alphanet-train: error: lost rank 1 of 2") and "resume" in errors[0], errors
    assert survivor_s < 60

    # the newest checkpoint is damaged (a bit flipped on disk): resume falls back to the previous one, and says so
    newest = out / "checkpoint.pt"
    previous = _read(out / "checkpoint.prev.pt")
    damaged = bytearray(newest.read_bytes())
    damaged[len(damaged) // 2] ^= 0x10
    newest.write_bytes(bytes(damaged))
    proc = start_torchrun(out, data, *RECIPE)
    text = finish(proc)
    assert proc.returncode == 0, text[-3000:]
    problems = _problems(rank_output(out, 0))
    assert len(problems) == 1 and "warning" in problems[0], problems
    assert "resuming from the previous checkpoint" in problems[0]
    fallback = events(read_log(out / "log.jsonl"), "start")[-1]["fallback"]
    assert fallback.startswith(f"{newest} ") and "previous checkpoint" in fallback
    _assert_resumed_exactly(out, reference, out / "checkpoint.prev.pt", previous)


@pytest.fixture(scope="module")
def hung_run(tmp_path_factory, data) -> tuple[Path, float]:
    """A 1000-class run (ImageNet's labels) in which rank 1 stops (SIGSTOP: alive, silent) after step 6."""
    out = tmp_path_factory.mktemp("runs") / "hung"
    proc = start_torchrun(out, data, *RECIPE, "data.num_classes=1000", "collective_timeout_s=10")
    try:
        wait_until(lambda: logged_step(out) >= 6, 300, "step 6", proc)
        ranks = workers(proc)
        os.kill(ranks[1], signal.SIGSTOP)
        stopped_at = time.monotonic()
        wait_until(lambda: not running(ranks[0]), 90, "rank 0 to give up on rank 1")
        survivor_s = time.monotonic() - stopped_at
    finally:
        kill_job(proc)  # torchrun would wait 30 s more for the stopped process
    finish(proc, 60)
    return out, survivor_s


def test_a_hung_rank_ends_the_other_within_the_collective_timeout(hung_run):
    out, survivor_s = hung_run
    errors = _error_lines(rank_output(out, 0))
    assert len(errors) == 1 and errors[0].startswith("alphanet-train: error: lost rank 1 of 2"), errors
    assert 9.0 < survivor_s < 60  # it waited for collective_timeout_s=10, not forever


def test_a_1000_class_supernet_trains_and_validates_on_imagenet_labels(hung_run):
    out, _ = hung_run
    log = read_log(out / "log.jsonl")
    start = events(log, "start")[0]
    assert start["num_classes"] == 1000 and start["labels"] == "imagenet"
    # only the 4 classes trained on rise: their biases are the 4 largest, at ImageNet's indices (not 0..3)
    bias = _read(out / "checkpoint.pt")["model"]["classifier.bias"]
    assert bias.shape == (1000,) and set(bias.topk(4).indices.tolist()) == set(SYNSETS.values())
    losses = [losses[0] for _, losses in train_losses(log)]
    assert losses[0] > 6.0 and losses[-1] < losses[0] - 1.0  # ln(1000) = 6.9 at first
    validation, = events(log, "validation")
    assert validation["epoch"] == 1 and validation["largest"]["images"] == VAL_IMAGES


def test_one_process_stops_on_sigterm_with_a_checkpoint_and_status_143(tmp_path, data):
    sig, status = signal.SIGTERM, 143
    out = tmp_path / "one"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "alphanet_zoo.commands.train", *train_args(out, data, *RECIPE)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: logged_step(out) >= 1, 300, "step 1", proc)
    signalled = time.monotonic()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - signalled < 60
    assert proc.returncode == status and stderr == "", stderr
    step = events(read_log(out / "log.jsonl"), "stopped")[0]["global_step"]
    assert f"stopped by {sig.name} at step {step}" in stdout
    assert _read(out / "checkpoint.pt")["global_step"] == step
    _no_litter(out)


def test_training_checkpoint_feeds_extract_and_eval(reference, data, tmp_path, capsys):
    from alphanet_zoo import Supernet
    from alphanet_zoo.commands import extract_main
    from alphanet_zoo.commands.eval import main as eval_main

    checkpoint = reference / "checkpoint.pt"
    supernet = Supernet.from_checkpoint(checkpoint)
    assert supernet.num_classes == 4
    state = _read(checkpoint)
    assert all(torch.equal(v, state["model"][k]) for k, v in supernet.state_dict().items())
    assert extract_main(["--supernet", str(checkpoint), "--arch", "a0", "--out", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "a0" / "model.safetensors").is_file()
    results = tmp_path / "eval.json"
    assert eval_main(["--arch", "a0", "--supernet", str(checkpoint), "--data", str(data / "val"),
                      "--batch-size", "8", "--out", str(results)]) == 0
    assert results.is_file()
    capsys.readouterr()
