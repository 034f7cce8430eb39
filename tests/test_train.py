"""Supernet training: the sandwich step (parity with the official implementation), its parts,
and ``alphanet-train`` under torchrun with gloo: loss falls, SIGTERM, exact resume."""
from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_helpers import make_image_folder, read_log
from conftest import PARITY_DIR, REPO, det
from PIL import Image

from alphanet_zoo import SEARCH_SPACE, ArchConfig, InputError, Supernet
from alphanet_zoo.checkpoint import CheckpointError, from_official
from alphanet_zoo.train import (WarmupCosineSchedule, build_optimizer, load_config, no_weight_decay, sample_sandwich,
                                sandwich_step, scaled_lr)
from alphanet_zoo.train.autoaugment import POLICY_V0, AutoAugment
from alphanet_zoo.train.checkpointing import load_checkpoint, save_checkpoint
from alphanet_zoo.train.data import SeededDataset, ShardedSampler, TrainTransform, image_folder


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: the 2-core test machine is shared, and OpenMP spinning on busy cores
    is many times slower than a single thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- the optimizer ----------------------------------------------------------------------------------


def _official_to_ours() -> dict[str, str]:
    keys = [k for k, _ in json.loads((PARITY_DIR / "official_supernet_keys.json").read_text())["keys"]]
    translated, _skipped = from_official({k: torch.tensor(i) for i, k in enumerate(keys)})
    return {keys[int(index)]: ours for ours, index in translated.items()}


def test_no_weight_decay_is_the_official_rule():
    with torch.device("meta"):
        supernet = Supernet()
    params = {name for name, _ in supernet.named_parameters()}
    official = {ours for key, ours in _official_to_ours().items()
                if ours in params and (".bn" in key or ".bias" in key)}
    assert no_weight_decay(supernet) == official
    assert any(n.endswith("se.reduce.bias") for n in official) and "classifier.bias" in official


def test_build_optimizer_groups():
    with torch.device("meta"):
        supernet = Supernet(num_classes=10)
    optimizer = build_optimizer(supernet, lr=0.3, weight_decay=1e-4)
    decay, no_decay = optimizer.param_groups
    names = {id(p): n for n, p in supernet.named_parameters()}
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in no_decay["params"]} == no_weight_decay(supernet)
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)
    assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.9 and decay["lr"] == 0.3


def test_sample_sandwich():
    archs = sample_sandwich(random.Random(3), 4)
    assert archs[0] == SEARCH_SPACE.largest() and archs[-1] == SEARCH_SPACE.smallest() and len(archs) == 4
    assert sample_sandwich(random.Random(3), 4) == archs and all(SEARCH_SPACE.contains(a) for a in archs)
    with pytest.raises(ValueError, match="at least 2"):
        sample_sandwich(random.Random(0), 1)


# ---- the sandwich step: parity with reference_salt0.json["sandwich_step"] -----------------------------

def test_sandwich_step_matches_reference(reference, official_checkpoint_factory):
    ref = reference["sandwich_step"]
    supernet = Supernet.from_checkpoint(official_checkpoint_factory(reference["salt"]))
    before = {k: v.detach().clone() for k, v in supernet.named_parameters()}
    sgd = ref["sgd"]
    optimizer = build_optimizer(supernet, sgd["lr"], sgd["momentum"], sgd["nesterov"], sgd["weight_decay"])
    images = det(ref["images"]["seed"], ref["images"]["shape"])
    archs = [ArchConfig.from_dict(a) for a in ref["archs"]]
    out = sandwich_step(supernet, images, torch.tensor(ref["targets"]), archs, optimizer)

    np.testing.assert_allclose(out["losses"], ref["losses"], rtol=1e-5)
    np.testing.assert_allclose(out["grad_norm"], ref["grad_l2_before_clip"], rtol=1e-4)
    np.testing.assert_allclose(out["grad_norm_clipped"], ref["grad_l2_after_clip_value_1"], rtol=1e-4)
    updates = {k: (v.detach() - before[k]).double() for k, v in supernet.named_parameters()}
    update_l2 = torch.sqrt(sum((u ** 2).sum() for u in updates.values())).item()
    np.testing.assert_allclose(update_l2, ref["update_l2"], rtol=1e-4)
    names = _official_to_ours()
    for key, expected in ref["param_updates"].items():
        update = updates[names[key]]
        np.testing.assert_allclose(torch.linalg.vector_norm(update).item(), expected["update_l2"], rtol=1e-4)
        # a sum of millions of cancelling updates: held to 1e-5 of the update's norm
        assert abs(update.sum().item() - expected["update_sum"]) <= 1e-4 * abs(expected["update_sum"]) \
            + 1e-5 * expected["update_l2"], key
    assert len(out["divergences"]) == 3 and all(d > 0 for d in out["divergences"]) and not out["skipped"]


def test_sandwich_step_clips_by_value_and_applies_dropout():
    torch.manual_seed(0)
    supernet = Supernet(num_classes=10)
    state = {k: v.clone() for k, v in supernet.state_dict().items()}
    images, targets = det(1, [4, 3, 32, 32]) * 3, torch.tensor([1, 2, 3, 4])
    archs = sample_sandwich(random.Random(0), 3)

    def step(seed, clip=1.0, rate=0.0):
        supernet.load_state_dict(state)
        torch.manual_seed(seed)
        return sandwich_step(supernet, images, targets, archs, build_optimizer(supernet, lr=0.1),
                             grad_clip_value=clip, resize=False, dropout=rate, drop_connect=rate)

    clipped = step(0, clip=1e-4)
    grads = [p.grad for p in supernet.parameters() if p.grad is not None]
    assert max(g.abs().max().item() for g in grads) <= 1e-4
    assert clipped["grad_norm_clipped"] < clipped["grad_norm"]
    assert step(1)["losses"] == step(2)["losses"]  # no dropout: the torch seed does not matter
    assert step(1, rate=0.5)["losses"][0] != step(2, rate=0.5)["losses"][0]


def test_sandwich_step_mixed_precision_with_loss_scaler():
    torch.manual_seed(0)
    supernet = Supernet(num_classes=10)
    optimizer = build_optimizer(supernet, lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    before = supernet.classifier.weight.detach().clone()
    out = sandwich_step(supernet, det(2, [4, 3, 32, 32]), torch.tensor([0, 1, 2, 3]),
                        sample_sandwich(random.Random(1), 2), optimizer, resize=False, amp_dtype=torch.bfloat16,
                        grad_scaler=scaler)
    assert all(np.isfinite(out["losses"])) and np.isfinite(out["grad_norm"]) and not out["skipped"]
    assert out["grad_norm"] < 1e3  # unscaled before the norm and the clip
    assert not torch.equal(before, supernet.classifier.weight)


# ---- data, augmentation, schedule, config ------------------------------------------------------------

def test_sharded_sampler_resumes_exactly_and_with_another_world_size():
    def shards(world, consumed=0, epoch=3):
        out = []
        for rank in range(world):
            s = ShardedSampler(50, world, rank, batch_size=4, seed=7)
            s.set_epoch(epoch, consumed)
            out.append(list(s))
        return out

    full = shards(2)
    assert len(full[0]) == len(full[1]) == 24  # 48 of 50 images: whole global batches of 8
    assert sorted(full[0] + full[1]) == sorted(set(full[0] + full[1]))
    resumed = shards(2, consumed=16)  # two global batches done
    assert resumed[0] == full[0][8:] and resumed[1] == full[1][8:]
    order = shards(1)[0]  # the epoch's permutation, cut to whole batches
    assert sorted(order) == sorted(full[0] + full[1]) and resumed[0] + resumed[1] != []
    assert set(resumed[0] + resumed[1]) == set(order[16:])
    # resumed on 3 processes (global batch 12): the 16 done are rounded down to 12, nothing is skipped
    three = shards(3, consumed=16)
    rest = [i for shard in three for i in shard]
    assert sorted(rest) == sorted(order[12:]) and len({len(s) for s in three}) == 1
    assert shards(2, epoch=4) != full


def test_augmentation_is_a_function_of_seed_epoch_and_index(tmp_path):
    root = make_image_folder(tmp_path / "train", ["a", "b"], 3, size=40)
    dataset = SeededDataset(image_folder(root), TrainTransform(32, auto_augment="v0"), seed=5)
    dataset.set_epoch(2)
    direct = torch.stack([dataset[i][0] for i in range(6)])
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2)
    via_workers = torch.cat([x for x, _ in loader])
    assert torch.equal(direct, via_workers) and direct.shape == (6, 3, 32, 32)
    dataset.set_epoch(3)
    assert not torch.equal(direct[0], dataset[0][0])


def test_cached_uint8_crops_normalise_exactly_like_the_eval_transform():
    from alphanet_zoo.preprocessing import EvalTransform, Preprocessing
    from alphanet_zoo.preprocessing import EvalCrop, normalize

    image = Image.open(PARITY_DIR / "photo.png")
    preprocessing = Preprocessing(resolution=224)
    crop = EvalCrop(preprocessing)(image)
    assert crop.dtype == torch.uint8 and crop.shape == (3, 224, 224)
    assert torch.equal(normalize(crop), EvalTransform(preprocessing)(image))


def test_autoaugment_policy_v0():
    assert len(POLICY_V0) == 25 and all(len(sub) == 2 for sub in POLICY_V0)
    rng = np.random.RandomState(0)
    image = Image.fromarray(rng.randint(0, 256, (37, 45, 3), dtype=np.uint8))
    ops = {name for sub in POLICY_V0 for name, _, _ in sub}
    from alphanet_zoo.train.autoaugment import _OPS

    for name in ops:
        for level in (0, 5, 10):
            out = _OPS[name](image, float(level), random.Random(level))
            assert out.size == image.size and out.mode == "RGB"
    pixels = np.asarray(image)
    assert np.asarray(_OPS["Posterize"](image, 2.0, random.Random(0))).max() == 0  # int(0.8) = 0 bits
    assert np.array_equal(np.asarray(_OPS["Posterize"](image, 6.0, random.Random(0))), pixels & 0b11000000)
    assert np.array_equal(np.asarray(_OPS["Solarize"](image, 10.0, random.Random(0))), pixels)  # threshold 256
    assert np.array_equal(np.asarray(_OPS["Invert"](image, 0.0, random.Random(0))), 255 - pixels)
    added = np.asarray(_OPS["SolarizeAdd"](image, 10.0, random.Random(0))).astype(int)
    assert np.array_equal(added, np.where(pixels < 128, np.minimum(pixels.astype(int) + 110, 255), pixels))
    moved = np.asarray(_OPS["TranslateY"](image, 10.0, random.Random(0)))
    assert (moved == 128).all()  # 250 pixels: the whole image is fill
    aa = AutoAugment("v0")
    assert np.array_equal(np.asarray(aa(image, random.Random(9))), np.asarray(aa(image, random.Random(9))))
    with pytest.raises(ValueError, match="v0"):
        AutoAugment("imagenet")


def test_schedule_warmup_then_cosine():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupCosineSchedule(optimizer, base_lr=0.8, epochs=10, warmup_epochs=2, min_lr=0.0)
    assert schedule.set_progress(0.0) == 0.0
    assert schedule.set_progress(1.0) == pytest.approx(0.4)
    assert schedule.set_progress(2.0) == pytest.approx(0.8)
    assert schedule.set_progress(6.0) == pytest.approx(0.4)
    assert schedule.set_progress(10.0) == pytest.approx(0.0, abs=1e-12)
    assert optimizer.param_groups[0]["lr"] == schedule.lr_at(10.0)
    restored = WarmupCosineSchedule(optimizer, 0.8, 10, 2)
    restored.load_state_dict(schedule.state_dict())
    assert restored.progress == 10.0
    assert scaled_lr(0.1, 2048) == pytest.approx(0.8)


def test_config_overrides_and_errors():
    config = load_config("alphanet_imagenet", ["data.train=/x", "optim.lr_per_256=0.2", "data.crop_scale=[0.2, 1]"])
    assert config.optim.lr_per_256 == 0.2 and config.data.crop_scale == (0.2, 1.0)
    assert config.epochs == 360 and config.sandwich.num_archs == 4 and config.optim.warmup_epochs == 5
    assert config.data.auto_augment == "v0" and config.sandwich.dropout == 0.2
    assert load_config(None, ["data.train=/x"]).to_dict() == load_config("alphanet_imagenet", ["data.train=/x"]) \
        .to_dict() | {"output_dir": "outputs/alphanet_train"}
    for bad, message in ((["optim.lr=1"], "unknown config key optim.lr"), (["epochs=many"], "epochs must be int"),
                         (["nonsense"], "key=value")):
        with pytest.raises(ValueError, match=message):
            load_config("tiny", bad)
    with pytest.raises(ValueError, match="data.train is not set"):
        load_config("tiny").check()
    with pytest.raises(InputError, match="bundled recipes"):
        load_config("no_such_recipe")


def test_cli_errors_are_one_line(tmp_path, capsys):
    from alphanet_zoo.train.cli import main

    assert main(["--config", "tiny"]) == 2
    assert "data.train is not set" in capsys.readouterr().err
    assert main(["--config", "tiny", "optim.lr=1"]) == 2
    assert "unknown config key optim.lr" in capsys.readouterr().err
    assert main(["--config", "tiny", f"data.train={tmp_path / 'missing'}", f"output_dir={tmp_path / 'o'}"]) == 2
    assert "image folder not found" in capsys.readouterr().err
    assert main(["--config", "tiny", "epochs=3", "--print-config"]) == 0
    assert "epochs: 3" in capsys.readouterr().out


def test_checkpoints_are_plain_data(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.ones(2)}, "optimizer": {}, "schedule": {},
                                               "epoch": 1, "consumed": 0, "global_step": 5})
    assert load_checkpoint(path)["global_step"] == 5
    assert not list(tmp_path.glob(".c.pt.*"))  # the temporary file was renamed
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an alphanet-train checkpoint"):
        load_checkpoint(tmp_path / "other.pt")

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"format": "alphanet_zoo.train/1", "x": Payload()}, protocol=2))
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(tmp_path / "evil.pt")


# ---- alphanet-train under torchrun: 2 processes, gloo on loopback -------------------------------------

CLASSES = ["n01440764", "n01443537", "n01484850", "n01491361"]  # ImageNet synsets 0..3


def _torchrun(output_dir: Path, data: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "alphanet_zoo.train.cli", "--config", "tiny",
               f"data.train={data / 'train'}", f"data.val={data / 'val'}", f"output_dir={output_dir}",
               "data.num_classes=1000", "data.crop_size=48", "data.batch_size=4", "optim.lr_per_256=1.0",
               "epochs=2", "validation.every_epochs=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, cwd=output_dir.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 400) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"alphanet-train did not finish in {timeout} s:\n{out[-3000:]}")
    return out


def _train_losses(log: list[dict]) -> dict[int, list[float]]:
    return {r["global_step"]: r["losses"] for r in log if r["event"] == "train"}


@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_data")
    make_image_folder(root / "train", CLASSES, 20, size=40, seed=0)  # 80 images: 10 steps of 2 x 4
    make_image_folder(root / "val", CLASSES, 4, size=40, seed=1)
    return root


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, train_data) -> Path:
    out = tmp_path_factory.mktemp("run") / "uninterrupted"
    out.mkdir()
    proc = _torchrun(out, train_data)
    text = _finish(proc)
    assert proc.returncode == 0, text[-3000:]
    return out


def test_distributed_training_loss_falls(uninterrupted):
    log = read_log(uninterrupted / "log.jsonl")
    start = next(r for r in log if r["event"] == "start")
    assert start["world_size"] == 2 and start["global_batch"] == 8 and start["steps_per_epoch"] == 10
    assert start["base_lr"] == pytest.approx(1.0 * 8 / 256)
    losses = _train_losses(log)
    assert sorted(losses) == list(range(1, 21))
    teacher = [losses[s][0] for s in sorted(losses)]
    assert teacher[0] > 6.0  # ln(1000): an untrained 1000-way classifier
    assert np.mean(teacher[-5:]) < 0.75 * np.mean(teacher[:5]) and np.mean(teacher[-5:]) < 0.6 * teacher[0], teacher
    assert all(np.isfinite(v).all() for v in losses.values())
    validations = [r for r in log if r["event"] == "validation"]
    assert [v["epoch"] for v in validations] == [1, 2]
    assert all(v[name]["images"] == 16 for v in validations for name in ("smallest", "largest"))
    assert [r["reason"] for r in log if r["event"] == "checkpoint"] == ["epoch", "epoch"]
    assert (uninterrupted / "supernet.safetensors").is_file()


def test_sigterm_then_resume_matches_an_uninterrupted_run(tmp_path, train_data, uninterrupted):
    out = tmp_path / "interrupted"
    out.mkdir()
    proc = _torchrun(out, train_data)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        log_file = out / "log.jsonl"
        if log_file.is_file() and any(s >= 4 for s in _train_losses(read_log(log_file))):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)  # to torchrun, which passes it to both workers
    _finish(proc)
    log = read_log(out / "log.jsonl")
    stopped = [r for r in log if r["event"] == "stopped"]
    assert stopped and stopped[0]["signal"] == "SIGTERM"
    stop_step = stopped[0]["global_step"]
    assert 4 <= stop_step < 20
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["global_step"] == stop_step and state["consumed"] == 8 * (stop_step % 10)

    proc = _torchrun(out, train_data)  # the same command resumes
    text = _finish(proc)
    assert proc.returncode == 0, text[-3000:]
    log = read_log(out / "log.jsonl")
    assert [r["resumed"] for r in log if r["event"] == "start"] == [False, True]
    reference_log = read_log(uninterrupted / "log.jsonl")
    assert _train_losses(log) == _train_losses(reference_log)  # every step, bit for bit
    assert [r["largest"] for r in log if r["event"] == "validation"] == \
        [r["largest"] for r in reference_log if r["event"] == "validation"]
    resumed, reference_state = load_checkpoint(out / "checkpoint.pt"), load_checkpoint(uninterrupted / "checkpoint.pt")
    assert resumed["model"].keys() == reference_state["model"].keys()
    assert all(torch.equal(resumed["model"][k], reference_state["model"][k]) for k in resumed["model"])
    momentum = [(resumed["optimizer"]["state"][i]["momentum_buffer"],
                 reference_state["optimizer"]["state"][i]["momentum_buffer"]) for i in resumed["optimizer"]["state"]]
    assert momentum and all(torch.equal(a, b) for a, b in momentum)


def test_training_checkpoint_feeds_extract_and_eval(uninterrupted, train_data, tmp_path, capsys):
    checkpoint = uninterrupted / "checkpoint.pt"
    supernet = Supernet.from_checkpoint(checkpoint)
    assert supernet.num_classes == 1000
    state = load_checkpoint(checkpoint)
    assert all(torch.equal(v, state["model"][k]) for k, v in supernet.state_dict().items())

    from alphanet_zoo.eval.cli import main as eval_main

    from alphanet_zoo.commands import extract_main

    assert extract_main(["--supernet", str(checkpoint), "--arch", "a0", "--out", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "a0" / "model.safetensors").is_file()
    results = tmp_path / "eval.json"
    assert eval_main(["--arch", "a0", "--supernet", str(checkpoint), "--data", str(train_data / "val"),
                      "--batch-size", "8", "--output", str(results)]) == 0
    assert results.is_file()
    capsys.readouterr()


def test_no_resume_refuses_to_overwrite(uninterrupted, train_data, capsys):
    from alphanet_zoo.train.cli import main

    argv = ["--config", "tiny", f"data.train={train_data / 'train'}", f"output_dir={uninterrupted}",
            "data.num_classes=1000", "--no-resume"]
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err
