"""Supernet training: the sandwich step (parity with the official implementation), its parts, labels,
checkpoints and the fast fault paths of ``alphanet-train`` (in-process, fabricated checkpoints).

The runs under torchrun (2 gloo processes: SIGKILL, a lost rank, SIGTERM, exact resume) are in
test_train_faults.py."""
from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_helpers import SYNSETS, events, make_image_folder, read_log, state_digest
from conftest import PARITY_DIR, det
from PIL import Image

from alphanet_zoo import SEARCH_SPACE, ArchConfig, InputError, Supernet
from alphanet_zoo.checkpoint import CheckpointError, from_official
from alphanet_zoo.train import (WarmupCosineSchedule, build_optimizer, load_config, no_weight_decay, sample_sandwich,
                                sandwich_step, scaled_lr)
from alphanet_zoo.train.autoaugment import POLICY_V0, AutoAugment
from alphanet_zoo.train.checkpointing import load_checkpoint, load_latest, save_checkpoint
from alphanet_zoo.train.precision import use_training_layout
from alphanet_zoo.train.data import SeededDataset, ShardedSampler, TrainTransform, training_data


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

@pytest.mark.parametrize("layout", ["contiguous", pytest.param("training", marks=pytest.mark.slow)])
def test_sandwich_step_matches_reference(reference, official_checkpoint_factory, layout):
    """As given, and in the layout the trainer gives the supernet (channels-last on a CPU)."""
    ref = reference["sandwich_step"]
    supernet = Supernet.from_checkpoint(official_checkpoint_factory(reference["salt"]))
    if layout == "training":
        use_training_layout(supernet, "cpu")
        convs = {n: p for n, p in supernet.named_parameters() if p.dim() == 4}
        assert all(p.is_contiguous(memory_format=torch.channels_last) == (not n.startswith("stem."))
                   for n, p in convs.items() if p.shape[2:] != (1, 1))
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
        # a sum of millions of cancelling updates: held to 1e-5 of the update's norm as given; in
        # channels-last, whose kernels sum in another order, the stem's (648 weights, each a sum over
        # every pixel) is 1.6e-4 of its norm off with one thread, so 5e-4 there
        assert abs(update.sum().item() - expected["update_sum"]) <= 1e-4 * abs(expected["update_sum"]) \
            + (1e-5 if layout == "contiguous" else 5e-4) * expected["update_l2"], key
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


@pytest.mark.slow
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
    dataset = SeededDataset(training_data(root).samples, TrainTransform(32, auto_augment="v0"), seed=5)
    dataset.set_epoch(2)
    direct = torch.stack([dataset[i][0] for i in range(6)])
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2)
    via_workers = torch.cat([x for x, _, _, _ in loader])
    assert torch.equal(direct, via_workers) and direct.shape == (6, 3, 32, 32) and direct.dtype == torch.uint8
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
    from alphanet_zoo.commands.train import main

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


def test_config_rejects_non_finite_and_out_of_range_settings():
    config = load_config("tiny", ["data.train=/x", "checkpoint_every_steps=7", "collective_timeout_s=30"])
    assert config.checkpoint_every_steps == 7 and config.collective_timeout_s == 30.0
    assert load_config("alphanet_imagenet", ["data.train=/x"]).checkpoint_every_steps == 500
    for bad, message in ((["optim.lr_per_256=.nan"], "optim.lr_per_256 must be a finite number"),
                         (["collective_timeout_s=.inf"], "collective_timeout_s must be a finite number"),
                         (["collective_timeout_s=0.5"], r"collective_timeout_s must be in \[1, 86400\]"),
                         (["checkpoint_every_steps=-1"], "checkpoint_every_steps must be >= 0"),
                         (["checkpoint_every_steps=2.5"], "checkpoint_every_steps must be int"),
                         (["optim.momentum=1.5"], r"optim.momentum must be in \[0, 1\)"),
                         (["data.crop_scale=[0.9, 0.1]"], "data.crop_scale"),
                         (["data.num_classes=0"], "data.num_classes must be positive")):
        with pytest.raises(InputError, match=message):
            load_config("tiny", ["data.train=/x", *bad]).check()


# ---- labels: the same as every other command's (alphanet_zoo.data.labelled_samples) -----------------------

def test_training_labels_match_labelled_samples(tmp_path):
    from alphanet_zoo.data import labelled_samples

    # ImageNet synsets in an order of their own: sorted they are 0..3, their ImageNet indices are not
    synsets = list(SYNSETS)
    train = make_image_folder(tmp_path / "train", synsets, 2, size=12)
    val = make_image_folder(tmp_path / "val", synsets[1:3], 1, size=12)  # a subset of the classes
    expected_sorted = {name: i for i, name in enumerate(sorted(synsets))}

    data = training_data(train, val)  # no num_classes: one output per class folder, in sorted order
    assert data.num_classes == 4 and data.classes == sorted(synsets) and data.labels == "class_folders"
    assert {(Path(s.path).parent.name, s.target) for s in data.samples} == set(expected_sorted.items())
    assert {(Path(s.path).parent.name, s.target) for s in data.val_samples} == \
        {(n, expected_sorted[n]) for n in synsets[1:3]}
    assert data.samples == labelled_samples(train, 4)[0]

    data = training_data(train, val, num_classes=1000)  # a 1000-class supernet: ImageNet's own indices
    assert data.labels == "imagenet" and data.num_classes == 1000
    assert {(Path(s.path).parent.name, s.target) for s in data.samples} == set(SYNSETS.items())
    assert {(Path(s.path).parent.name, s.target) for s in data.val_samples} == {(n, SYNSETS[n]) for n in synsets[1:3]}
    assert data.samples == labelled_samples(train, 1000)[0]
    assert data.classes == sorted(synsets, key=SYNSETS.get)

    assert training_data(train, num_classes=10).samples == labelled_samples(train, 10)[0]  # spare outputs
    with pytest.raises(InputError, match="4 class folders but the model has 3 classes"):
        training_data(train, num_classes=3)
    make_image_folder(tmp_path / "val_other", ["n99999999"], 1, size=12)
    with pytest.raises(InputError, match="not the model's classes"):
        training_data(train, tmp_path / "val_other")
    with pytest.raises(InputError, match="training image folder not found"):
        training_data(tmp_path / "missing")


# ---- checkpoints: atomic, the previous one kept, damage detected ---------------------------------------

def _fake_state(step: int) -> dict:
    return {"model": {"w": torch.full((100_000,), float(step))}, "optimizer": {"state": {}, "param_groups": []},
            "schedule": {"progress": 0.0}, "epoch": 0, "consumed": 8 * step, "global_step": step}


def test_checkpoints_keep_the_previous_one_and_resume_falls_back(tmp_path, caplog):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _fake_state(2))
    save_checkpoint(path, _fake_state(4))
    assert load_checkpoint(path)["global_step"] == 4 and load_checkpoint(tmp_path / "checkpoint.prev.pt")[
        "global_step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]  # no litter
    assert (path.stat().st_mode & 0o777) == 0o666 & ~_umask()
    state, used, fallback = load_latest(path)
    assert state["global_step"] == 4 and used == path and fallback is None

    good = path.read_bytes()
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0x01  # one flipped bit inside the tensor data: torch.load does not notice
    path.write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)
    with caplog.at_level("WARNING", logger="alphanet_zoo"):
        state, used, fallback = load_latest(path)
    assert state["global_step"] == 2 and used.name == "checkpoint.prev.pt"
    assert "damaged" in fallback and "previous checkpoint" in fallback and "step 2" in fallback
    assert any("resuming from the previous checkpoint" in r.getMessage() for r in caplog.records)

    path.write_bytes(good[:len(good) // 3])  # truncated
    assert load_latest(path)[0]["global_step"] == 2
    path.unlink()  # killed between the two renames
    state, used, fallback = load_latest(path)
    assert state["global_step"] == 2 and "missing" in fallback
    (tmp_path / "checkpoint.prev.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot be used either"):
        load_latest(path)
    assert load_latest(tmp_path / "none" / "checkpoint.pt") is None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tiny_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", "tiny", f"data.train={data}", f"output_dir={out}", "data.crop_size=16", *extra]


def test_resume_falls_back_to_the_previous_checkpoint_it_cannot_reproduce(tmp_path, capsys):
    """A newest checkpoint that is junk and a previous one holding state no training from scratch could make
    (all classifier biases 0.5, step 7): the run says it falls back, resumes that very state, cuts the log
    back to what that checkpoint saw (the rest moves to log.discarded.jsonl), and removes stale temporaries."""
    from alphanet_zoo.commands.train import main
    from alphanet_zoo.train.schedule import WarmupCosineSchedule

    data = make_image_folder(tmp_path / "train", ["b", "a"], 2, size=12)
    out = tmp_path / "out"
    out.mkdir()
    torch.manual_seed(1)
    supernet = Supernet(num_classes=2)
    with torch.no_grad():
        supernet.classifier.bias.fill_(0.5)
    optimizer = build_optimizer(supernet, 0.1)
    kept = ['{"event": "start", "global_step": 0}\n', '{"event": "checkpoint", "global_step": 7}\n']
    lost = ['{"event": "train", "global_step": 8, "losses": [1.0]}\n', '{"event": "train", "glo']
    (out / "log.jsonl").write_text("".join(kept + lost))
    state = {"model": supernet.state_dict(), "optimizer": optimizer.state_dict(),
             "schedule": WarmupCosineSchedule(optimizer, 0.1, 1).state_dict(), "epoch": 1, "consumed": 0,
             "global_step": 7, "log_offset": len("".join(kept)), "classes": ["a", "b"], "labels": "class_folders"}
    save_checkpoint(out / "checkpoint.prev.pt", state, keep_previous=False)
    (out / "checkpoint.pt").write_bytes(b"\x00" * 100)
    stale = out / ".checkpoint.pt.4000000.abcd.tmp"
    stale.write_bytes(b"half a checkpoint")

    assert main(_tiny_argv(data, out, "epochs=1")) == 0  # epoch 1 of 1 is done: nothing left to train
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "resuming from the previous checkpoint" in warnings[0] and "step 7" in warnings[0]
    log = read_log(out / "log.jsonl")
    assert [json.dumps(r) + "\n" for r in log[:2]] == kept
    start = events(log, "start")[-1]
    assert start["resumed"] and start["resumed_from"] == str(out / "checkpoint.prev.pt") and start["global_step"] == 7
    assert f"{out / 'checkpoint.pt'}: not plain data, or damaged" in start["fallback"]
    assert start["state_sha256"] == state_digest(supernet.state_dict())
    assert (out / "log.discarded.jsonl").read_text() == "".join(lost) + "\n"
    assert not stale.exists()
    from safetensors.torch import load_file

    final = load_file(out / "supernet.safetensors")
    assert torch.equal(final["classifier.bias"], torch.full((2,), 0.5))
    assert all(torch.equal(final[k], v) for k, v in supernet.state_dict().items())
    assert not list(out.glob(".*.tmp"))


def test_no_resume_refuses_an_existing_checkpoint(tmp_path, capsys):
    from alphanet_zoo.commands.train import main

    data = make_image_folder(tmp_path / "train", ["a", "b"], 1, size=12)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "checkpoint.pt").write_bytes(b"a fabricated checkpoint: never read")
    assert main(_tiny_argv(data, tmp_path / "out", "--no-resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint.pt exists" in err[0] and "--no-resume" in err[0]


def test_a_second_run_on_the_same_output_is_refused(tmp_path, capsys):
    import fcntl

    from alphanet_zoo.commands.train import main

    data = make_image_folder(tmp_path / "train", ["a", "b"], 1, size=12)
    (tmp_path / "out").mkdir()
    with open(tmp_path / "out" / ".alphanet-train.lock", "w") as lock:
        lock.write("4242\n")
        lock.flush()
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds it
        assert main(_tiny_argv(data, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another alphanet-train (pid 4242)" in err[0]
    assert not (tmp_path / "out" / "log.jsonl").exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_training_image_is_one_line_naming_it(tmp_path, capsys, workers):
    from alphanet_zoo.commands.train import main

    data = make_image_folder(tmp_path / "train", ["a", "b"], 2, size=12)
    for image in data.glob("*/*.png"):
        image.write_bytes(b"\x89PNG\r\n\x1a\n broken")  # every image: the first batch has one
    code = main(_tiny_argv(data, tmp_path / "out", "data.batch_size=2", "--workers", str(workers)))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot read image" in err[0] and str(data) in err[0], err
    assert "Traceback" not in "\n".join(err)


def test_divergence_stops_training_with_one_line(tmp_path, capsys):
    from alphanet_zoo.commands.train import main

    data = make_image_folder(tmp_path / "train", ["a", "b"], 2, size=12)
    out = tmp_path / "out"
    code = main(_tiny_argv(data, out, "data.batch_size=2", "optim.lr_per_256=1e30", "optim.grad_clip_value=null",
                           "sandwich.num_archs=2", "data.auto_augment=null"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "training diverged at step" in err[0], err
    assert not (out / "checkpoint.pt").exists()  # no diverged weights saved over a good checkpoint


@pytest.mark.parametrize("stopped, status", [(None, 0), ("SIGTERM", 143), ("SIGINT", 130)])
def test_exit_status_of_a_stopped_run(tmp_path, capsys, monkeypatch, stopped, status):
    from alphanet_zoo.commands.train import main
    from alphanet_zoo.train.trainer import Trainer

    summary = {"stopped": stopped, "epoch": 0, "global_step": 3, "checkpoint": "c.pt", "validation": {},
               "world_size": 1, "resumed": False}
    monkeypatch.setattr(Trainer, "run", lambda self: summary)
    assert main(_tiny_argv(tmp_path, tmp_path / "out")) == status
    out = capsys.readouterr().out
    assert (f"stopped by {stopped} at step 3" in out) if stopped else "3 steps" in out


def test_a_failed_checkpoint_write_is_one_error_and_loses_nothing(tmp_path, monkeypatch):
    from alphanet_zoo.errors import OutputError

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _fake_state(2))
    save_checkpoint(path, _fake_state(4))

    def disk_full(obj, f):  # what torch's writer raises when the disk fills up mid-file
        Path(f).write_bytes(b"PK\x03\x04 half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OutputError, match="cannot write .*checkpoint.pt: the write failed"):
        save_checkpoint(path, _fake_state(6))
    monkeypatch.undo()
    assert load_checkpoint(path)["global_step"] == 4 and load_checkpoint(tmp_path / "checkpoint.prev.pt")[
        "global_step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]


def test_checkpoint_reading_refuses_what_it_cannot_use(tmp_path):
    from alphanet_zoo.train.checkpointing import content_digest

    with pytest.raises(InputError, match="checkpoint not found: .*nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")
    state = _fake_state(3)
    del state["optimizer"]
    save_checkpoint(tmp_path / "partial.pt", state)
    with pytest.raises(CheckpointError, match="lacks optimizer"):
        load_checkpoint(tmp_path / "partial.pt")
    torch.save({"format": "something/9", **_fake_state(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="format 'something/9'"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "checkpoint.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no previous checkpoint checkpoint.prev.pt"):
        load_latest(tmp_path / "checkpoint.pt")
    # every part of the content counts: a value in a list, a dict value, a tensor's dtype, shape or bytes
    base = {"a": [1, 2.5], "b": {"c": torch.zeros(2, 2)}}
    variants = [{"a": [1, 2.0], "b": {"c": torch.zeros(2, 2)}}, {"a": [1, 2.5], "b": {"c": torch.ones(2, 2)}},
                {"a": [1, 2.5], "b": {"c": torch.zeros(2, 2, dtype=torch.float64)}},
                {"a": [1, 2.5], "b": {"c": torch.zeros(4)}}, {"a": [1, 2.5], "b": {"d": torch.zeros(2, 2)}}]
    digests = {content_digest(v) for v in [base, *variants]}
    assert len(digests) == 1 + len(variants) and content_digest(base) == content_digest(dict(base))


@pytest.mark.slow  # seconds of subprocesses or compiles: CI runs it, the quick loop does not
def test_a_resumed_run_continues_exactly_as_the_uninterrupted_one(tmp_path, monkeypatch, capsys):
    """One process, in-process: an uninterrupted run keeps copies of its checkpoints; each is then put in a
    fresh output folder with the run's whole log (as a job killed later leaves them) and the same command
    resumes it: from that checkpoint's step (not from scratch), every step logged once, the log records
    (averaged over 2 steps, across checkpoints) and the final weights bit for bit the uninterrupted run's."""
    import shutil

    from alphanet_zoo.train import trainer
    from alphanet_zoo.commands.train import main

    data = make_image_folder(tmp_path / "train", ["b", "a"], 2, size=12)
    val = make_image_folder(tmp_path / "val", ["b", "a"], 1, size=12, seed=1)
    recipe = ["data.batch_size=2", "epochs=2", "log_every=2", "checkpoint_every_steps=3", f"data.val={val}",
              "validation.calib_batches=1", "validation.calib_batch_size=2", "validation.batch_size=2",
              "sandwich.num_archs=3", "sandwich.dropout=0.3", "sandwich.drop_connect=0.3"]  # random draws
    kept = tmp_path / "kept"
    kept.mkdir()
    save = trainer.save_checkpoint

    def save_and_keep(path, state, **kwargs):
        save(path, state, **kwargs)
        shutil.copy(path, kept / f"{state['global_step']}{'v' if state['validation_pending'] else ''}.pt")

    monkeypatch.setattr(trainer, "save_checkpoint", save_and_keep)
    assert main(_tiny_argv(data, tmp_path / "whole", *recipe)) == 0
    monkeypatch.undo()
    whole = read_log(tmp_path / "whole" / "log.jsonl")
    records = [(r["global_step"], r["steps"], r["losses"]) for r in events(whole, "train")]
    assert [(step, steps) for step, steps, _ in records] == [(2, 2), (4, 2)]  # 2 steps an epoch
    assert sorted(p.name for p in kept.iterdir()) == ["2.pt", "2v.pt", "3.pt", "4.pt", "4v.pt"]
    reference = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")

    for name in ("3.pt", "2v.pt"):  # mid-window; and at an epoch end with its validation still to do
        out = tmp_path / f"from_{name}"
        out.mkdir()
        shutil.copy(kept / name, out / "checkpoint.pt")
        shutil.copy(tmp_path / "whole" / "log.jsonl", out / "log.jsonl")
        state = load_checkpoint(out / "checkpoint.pt")
        assert main(_tiny_argv(data, out, *recipe)) == 0
        log = read_log(out / "log.jsonl")
        start = events(log, "start")[-1]
        assert start["resumed"] and start["global_step"] == state["global_step"] == int(name[0])
        assert start["state_sha256"] == state_digest(state["model"])
        assert [(r["global_step"], r["steps"], r["losses"]) for r in events(log, "train")] == records
        assert [(r["smallest"], r["largest"]) for r in events(log, "validation")] == \
            [(r["smallest"], r["largest"]) for r in events(whole, "validation")]
        final = load_checkpoint(out / "checkpoint.pt")
        assert all(torch.equal(final["model"][k], v) for k, v in reference["model"].items())
        assert all(torch.equal(final["optimizer"]["state"][i]["momentum_buffer"], s["momentum_buffer"])
                   for i, s in reference["optimizer"]["state"].items())
        mark = next(i for i, r in enumerate(whole) if r["event"] == "checkpoint" and
                    (r["global_step"], r["validation_pending"]) == (state["global_step"], state["validation_pending"]))
        assert log[:mark + 1] == whole[:mark + 1] and read_log(out / "log.discarded.jsonl") == whole[mark + 1:]
    capsys.readouterr()
