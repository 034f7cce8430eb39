"""Training precision: one `precision` setting, resolved once (`alphanet_zoo.train.precision`) for the trainer and
the fine-tuner; ``auto`` picks bfloat16 only where it is faster; old configs' ``amp``/``amp_dtype`` still read."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from _train_helpers import make_image_folder, read_log
from safetensors.torch import load_file

from alphanet_zoo import SEARCH_SPACE, InputError
from alphanet_zoo.train import precision, trainer
from alphanet_zoo.train.config import TrainConfig, load_config
from alphanet_zoo.train.finetune import FineTuner, FinetuneSettings, finetune
from alphanet_zoo.train.precision import resolve_precision

TINY = dataclasses.replace(SEARCH_SPACE.smallest(), width=(16, 16, 24, 32, 64, 112, 192, 216, 1792))
RUN = dict(arch=TINY, epochs=1, batch_size=8, lr=0.05, resolution=32, workers=0,
           overrides=["checkpoint_every_steps=1", "validation.calib_batches=1", "validation.calib_batch_size=8"])


def _cpu(monkeypatch, amx: bool, native: bool) -> None:
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)


def _timings(fp32: list[float], bf16: list[float]):
    def measure():
        measure.calls += 1
        return {"fp32": fp32, "bf16": bf16}

    measure.calls = 0
    return measure


@pytest.mark.parametrize("amx, native, fp32, bf16, expected, timed", [
    (True, True, [1.0], [2.0], "bf16", False),  # AMX: bfloat16, no timing
    (False, False, [2.0], [1.0], "fp32", False),  # emulated bfloat16: float32, no timing
    # AVX512-BF16 without AMX (the Zen 4 figures): slower
    (False, True, [0.277, 0.27, 0.29], [0.300, 0.29, 0.31], "fp32", True),
    (False, True, [1.0, 1.0, 1.0], [0.97, 0.97, 0.97], "fp32", True),  # faster, but by less than the margin
    (False, True, [1.0, 1.1, 1.0], [0.8, 0.9, 0.8], "bf16", True),  # faster by more, in every turn
    (False, True, [1.0, 3.0, 3.0], [1.0, 1.0, 1.0], "fp32", True),  # fp32 turns disturbed: not faster
    (False, True, [1.0, 1.0, 1.0], [0.5, 0.5, 1.2], "fp32", True),  # a bf16 turn disturbed: too noisy to tell
])
def test_auto_on_a_cpu_picks_bf16_only_where_it_is_faster(monkeypatch, amx, native, fp32, bf16, expected, timed):
    _cpu(monkeypatch, amx, native)
    measure = _timings(fp32, bf16)
    chosen = resolve_precision("auto", "cpu", measure)
    assert chosen.name == expected and measure.calls == int(timed) and chosen.requested == "auto"
    assert chosen.autocast_dtype == {"fp32": None, "bf16": torch.bfloat16}[expected]
    assert chosen.grad_scaler("cpu") is None and (chosen.timings == measure() if timed else not chosen.timings)
    if native and not amx:  # without a step to time, no guess
        assert resolve_precision("auto", "cpu").name == "fp32"


def test_explicit_precisions_and_cuda(monkeypatch):
    _cpu(monkeypatch, False, False)
    assert resolve_precision("bf16", "cpu").autocast_dtype == torch.bfloat16
    assert resolve_precision("fp32", "cpu").autocast_dtype is None
    with pytest.raises(InputError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(InputError, match="precision must be one of auto, fp32, bf16, fp16, got 'int8'"):
        resolve_precision("int8", "cpu")
    monkeypatch.setattr(precision, "parse_device", lambda device: torch.device("cuda", 0))
    for supported, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: supported)
        assert resolve_precision("auto", "cuda", _timings([2.0], [1.0])).name == expected
    fp16 = resolve_precision("fp16", "cuda")
    assert fp16.autocast_dtype == torch.float16 and fp16.name == "fp16"


def test_old_configs_with_amp_keys_still_read(tmp_path):
    meant = {(False, "bfloat16"): "fp32", (False, "float16"): "fp32", (True, "bfloat16"): "auto",
             (True, "float16"): "fp16"}
    for (amp, dtype), expected in meant.items():
        path = tmp_path / f"{amp}_{dtype}.yaml"
        path.write_text(yaml.safe_dump({"amp": amp, "amp_dtype": dtype, "data": {"train": "/x"}}))
        config = load_config(path)
        assert config.precision == expected and "amp" not in config.to_dict()
        assert TrainConfig(amp=amp, amp_dtype=dtype).precision == expected
    assert TrainConfig.from_dict({"amp": False}).precision == "fp32"  # amp alone (old default dtype)
    assert TrainConfig.from_dict({"amp_dtype": "float16"}).precision == "fp16"  # dtype alone (old default amp)
    assert TrainConfig.from_dict({"amp": False, "precision": "fp32"}).precision == "fp32"  # agreeing: fine
    # the old default is the new one, and an old override on a new recipe replaces its precision
    assert TrainConfig().precision == load_config("alphanet_imagenet").precision == "auto"
    assert load_config("alphanet_imagenet", ["amp=false"]).precision == "fp32"
    assert load_config("tiny", ["precision=bf16"]).precision == "bf16"
    for data, message in (({"amp": False, "precision": "bf16"}, "precision: bf16 and the old amp: false, which "
                                                                 "means precision: fp32: keep precision only"),
                          ({"amp": "yes"}, "config key amp must be bool"),
                          ({"amp_dtype": "half"}, "amp_dtype must be bfloat16 or float16")):
        with pytest.raises(InputError, match=message):
            TrainConfig.from_dict(data)
    with pytest.raises(InputError, match="precision must be one of"):
        load_config("tiny", ["precision=int8", "data.train=/x"]).check()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colours")
    make_image_folder(root / "train", ["blue", "red"], 8, size=32, seed=0)
    make_image_folder(root / "val", ["blue", "red"], 2, size=32, seed=1)
    return root


def _start(out: Path) -> list[dict]:
    return [r for r in read_log(out / "log.jsonl") if r["event"] == "start"]


def test_auto_times_the_runs_own_step_without_changing_the_run(data, tmp_path, monkeypatch):
    """The timing steps run on copies (weights, optimizer, random state untouched): a run whose timing chose
    fp32 ends bit for bit as an fp32 run; the choice and its timings are in the start record."""
    plain = finetune("random", data, tmp_path / "fp32", precision="fp32", **RUN)
    _cpu(monkeypatch, False, True)
    steps = []

    def timed(step_for, rounds=precision.PROBE_ROUNDS):
        steps.append(precision.time_precisions(step_for, rounds=1))  # the real steps, on copies
        return {"fp32": [1.0], "bf16": [2.0]}

    monkeypatch.setattr(trainer, "time_precisions", timed)
    auto = finetune("random", data, tmp_path / "auto", **RUN)
    assert len(steps) == 1 and set(steps[0]) == {"fp32", "bf16"} and auto["precision"] == plain["precision"] == "fp32"
    a, b = load_file(tmp_path / "fp32" / "model.safetensors"), load_file(tmp_path / "auto" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    (start,) = _start(tmp_path / "auto")
    assert start["precision"] == "fp32" and start["precision_timings"] == {"fp32": [1.0], "bf16": [2.0]}
    assert "timed on this model's step" in start["precision_reason"]


def test_a_resumed_auto_run_keeps_the_precision_it_chose(data, tmp_path, monkeypatch):
    """Chosen bf16, stopped, then resumed where timing would now say fp32: the run stays bf16, untimed (a
    resumed run repeats the uninterrupted run's arithmetic)."""
    _cpu(monkeypatch, False, True)
    monkeypatch.setattr(trainer, "time_precisions", lambda step_for: {"fp32": [2.0], "bf16": [1.0]})
    stopped = finetune("random", data, tmp_path / "resumed", max_steps=1, **RUN)
    assert stopped["stopped"] == "max_steps" and stopped["precision"] == "bf16"
    monkeypatch.setattr(trainer, "time_precisions", lambda step_for: pytest.fail("timed again on resume"))
    done = finetune("random", data, tmp_path / "resumed", **RUN)
    assert done["resumed"] and done["precision"] == "bf16"
    starts = _start(tmp_path / "resumed")
    assert [(r["precision"], r["amp"]) for r in starts] == [("bf16", "torch.bfloat16")] * 2
    assert starts[0]["precision_timings"] == starts[1]["precision_timings"] == {"fp32": [2.0], "bf16": [1.0]}


def test_finetune_refuses_two_settings_of_the_precision(data, tmp_path):
    with pytest.raises(InputError, match=r"amp is set by precision \(--precision\)"):
        finetune("random", data, tmp_path / "o", **{**RUN, "overrides": ["amp=false"]})
    config = TrainConfig.from_dict({"data": {"train": str(data / "train")}, "precision": "fp32"})
    with pytest.raises(InputError, match="settings.precision bf16 and config.precision fp32 differ"):
        FineTuner(config, FinetuneSettings("random", "d", "v", precision="bf16"), None)
    with pytest.raises(InputError, match="fp16 needs a CUDA device"):
        finetune("random", data, tmp_path / "o", precision="fp16", device="cpu", **RUN)
    assert not (tmp_path / "o").exists()

