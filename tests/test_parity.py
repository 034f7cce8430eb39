"""Parity with the official implementation's outputs on the deterministic checkpoint (tests/parity)."""
import filecmp

import pytest
import torch
from conftest import PARITY_DIR, REFERENCE_NAMES, SHARED_PARITY, VENDORED_PARITY, det, state_dict_sha256

from alphanet_zoo import (MODELS, AlphaNet, ArchConfig, Supernet, calibrate_bn, count_flops, count_flops_fvcore,
                          list_models, model_info)
from alphanet_zoo.checkpoint import read_state_dict
from alphanet_zoo.preprocessing import resize_to_resolution

LOGIT_TOL = 1e-4
SUBNETS = [MODELS[name].official_key for name in list_models()]  # every published model, by official key


def logits_of(model, x):
    with torch.no_grad():
        return model(x)


def assert_logits(actual, expected):
    expected = torch.tensor(expected, dtype=torch.float32).view(actual.shape)
    diff = (actual - expected).abs().max().item()
    assert diff <= LOGIT_TOL, f"max abs logit difference {diff:.2e} > {LOGIT_TOL}"


@pytest.mark.skipif(not SHARED_PARITY.is_dir(), reason="no workplace shared/parity beside the repo")
def test_vendored_parity_data_is_the_shared_one():
    for name in ("reference_salt0.json", "official_supernet_keys.json", "make_official_checkpoint.py",
                 "photo.png", "photo_official_eval_tensor.npy"):
        assert filecmp.cmp(VENDORED_PARITY / name, SHARED_PARITY / name, shallow=False), name


@pytest.fixture(scope="module")
def ref_supernet(reference, official_checkpoint_factory):
    """The official-layout checkpoint of the reference's salt, its sha checked, loaded by our Supernet."""
    path = official_checkpoint_factory(reference["salt"])
    state = read_state_dict(path)
    assert len(state) == 1468
    assert state_dict_sha256(state, PARITY_DIR / "official_supernet_keys.json") == reference["state_dict_sha256"]
    return Supernet.from_checkpoint(path).eval()


@pytest.mark.parametrize("key", SUBNETS)
def test_extracted_subnet_logits(ref_supernet, reference, key):
    sub = reference["subnets"][key]
    model = ref_supernet.extract(REFERENCE_NAMES.get(key, key))
    assert model.arch == ArchConfig.from_dict(sub["config"])
    assert not model.training
    assert_logits(logits_of(model, det(sub["input"]["seed"], sub["input"]["shape"])), sub["logits"])


@pytest.mark.parametrize("key", ["a0", "a6"])
def test_resized_input_logits(ref_supernet, reference, key):
    """The official forward resizes 224 inputs itself; ours leaves that to the caller (bicubic)."""
    sub = reference["subnets"][key]["resized_input"]
    model = ref_supernet.extract(key)
    x = resize_to_resolution(det(sub["seed"], sub["shape"]), model.arch.resolution)
    assert_logits(logits_of(model, x), sub["logits"])


@pytest.mark.parametrize("key", ["a0", pytest.param("a5", marks=pytest.mark.slow)])
def test_bn_calibrated_logits(ref_supernet, reference, key):
    sub = reference["subnets"][key]
    calib = sub["bn_calibration"]
    model = ref_supernet.extract(key)
    batches = [det(b["seed"], b["shape"]) for b in calib["batches"]]
    assert calibrate_bn(model, batches) is model and not model.training
    assert_logits(logits_of(model, det(sub["input"]["seed"], sub["input"]["shape"])), calib["logits"])
    # (images, labels) pairs and num_batches give the same statistics
    again = ref_supernet.extract(key)
    calibrate_bn(again, [(b, torch.zeros(len(b))) for b in batches + batches], num_batches=len(batches))
    assert torch.equal(again.stem.bn.running_mean, model.stem.bn.running_mean)
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("key", SUBNETS)
def test_flops_and_live_parameters(reference, key):
    sub = reference["subnets"][key]
    info = model_info(REFERENCE_NAMES.get(key, key))
    assert count_flops(info.arch) == pytest.approx(sub["mflops_official_counter"], abs=0.01)
    assert info.mflops == pytest.approx(sub["mflops_official_counter"], abs=1e-6)
    with torch.device("meta"):
        live = sum(p.numel() for p in AlphaNet(info.arch).parameters())
    # the official static model also carries 1x1 shortcut convs that never run (in == out at stride 1)
    dead = sum(b.in_channels * b.out_channels
               for stage, depth in zip(_official_blocks(info.arch), info.arch.depth)
               for b in stage[:depth] if b.in_channels == b.out_channels and b.stride == 1)
    assert live == info.params == sub["params"] - dead


def _official_blocks(arch):
    from alphanet_zoo.layout import subnet_layout

    return subnet_layout(arch).stages


@pytest.mark.parametrize("key", ["a0", "a5_1"])
def test_fvcore_counts(ref_supernet, reference, key):
    sub = reference["subnets"][key]
    counts = count_flops_fvcore(ref_supernet.extract(REFERENCE_NAMES.get(key, key)))
    assert counts["total"] == pytest.approx(sub["fvcore_mflops_per_image"], abs=0.01)
    assert counts["conv_linear"] == pytest.approx(sub["mflops_official_counter"], abs=0.01)


@pytest.mark.parametrize("which", ["max", "min"])
def test_supernet_training_mode_logits(ref_supernet, reference, which):
    spec = reference["supernet_train_mode"]
    sub = spec["subnets"][which]
    arch = ArchConfig.from_dict(sub["config"])
    x = resize_to_resolution(det(spec["input"]["seed"], spec["input"]["shape"]), arch.resolution)
    before = {k: v.clone() for k, v in ref_supernet.named_buffers()}
    ref_supernet.train()
    try:
        assert_logits(_run(ref_supernet, x, arch), sub["logits"])
    finally:
        ref_supernet.eval()
    # training-mode forwards never touch the supernet's running statistics
    assert all(torch.equal(v, before[k]) for k, v in ref_supernet.named_buffers())


def _run(supernet, x, arch):
    with torch.no_grad():
        return supernet(x, arch)
