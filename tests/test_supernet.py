"""Supernet checkpoints (official layout and ours), bad inputs, extraction as a state-dict slice."""
import os
import pickle

import pytest
import torch
from conftest import det

from alphanet_zoo import SEARCH_SPACE, AlphaNet, CheckpointError, Supernet, get_arch
from alphanet_zoo.checkpoint import OFFICIAL_SKIPPED, from_official, read_state_dict


@pytest.fixture(scope="module")
def official_state(official_checkpoint):
    return read_state_dict(official_checkpoint)


def test_official_layout_keys_are_all_used_or_skipped_on_purpose(official_state, supernet):
    ours, skipped = from_official(official_state)
    assert len(ours) + len(skipped) == len(official_state) == 1468
    assert set(ours) == set(supernet.state_dict())
    assert all(".bn_tracking." in k or ".shortcut." in k for k in skipped)
    assert set(skipped.values()) == set(OFFICIAL_SKIPPED.values())
    # only the first block of each stage keeps a shortcut conv: 7 of the official 37
    assert sum(".shortcut." in k for k in ours) == 7
    assert sum(".shortcut." in k for k in skipped) == 30


def test_supernet_allocations_match_the_official_shapes(official_state):
    ours, _ = from_official(official_state)
    with torch.device("meta"):
        expected = Supernet().state_dict()
    assert {k: tuple(v.shape) for k, v in expected.items()} == {k: tuple(v.shape) for k, v in ours.items()}


def _save(tmp_path, state, name="ckpt.pth.tar"):
    path = tmp_path / name
    torch.save({"epoch": 0, "state_dict": state}, path)
    return path


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path, official_state):
    state = dict(official_state)
    del state["module.blocks.3.mobile_inverted_conv.point_linear.conv.conv.weight"]
    state["module.blocks.40.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"names block 40"):
        Supernet.from_checkpoint(_save(tmp_path, state))
    del state["module.blocks.40.extra.weight"]
    state["module.extra_head.weight"] = torch.zeros(1)
    state["module.first_conv.conv.conv.weight"] = torch.zeros(24, 3, 5, 5)
    with pytest.raises(CheckpointError) as err:
        Supernet.from_checkpoint(_save(tmp_path, state))
    message = str(err.value)
    assert "1 missing keys: stages.1.1.project.conv.weight" in message
    assert "1 unexpected keys: extra_head.weight" in message
    assert "mis-shaped tensors: stem.conv.weight (checkpoint [24, 3, 5, 5], expected [24, 3, 3, 3])" in message


def test_a_pickle_that_would_run_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"x": Exploit()}}, f, protocol=2)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Exploit()}, tmp_path / "evil_zip.pth")
    for candidate in (path, tmp_path / "evil_zip.pth"):
        with pytest.raises(CheckpointError, match="refusing to load"):
            Supernet.from_checkpoint(candidate)
    assert not marker.exists()


def test_truncated_and_garbage_files_are_clear_errors(tmp_path, official_checkpoint):
    cut = tmp_path / "cut.pth.tar"
    cut.write_bytes(official_checkpoint.read_bytes()[:1_000_000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Supernet.from_checkpoint(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        Supernet.from_checkpoint(junk)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        Supernet.from_checkpoint(tmp_path / "absent.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        Supernet.from_checkpoint(tmp_path / "list.pth")


def test_own_format_round_trip(tmp_path, supernet):
    path = tmp_path / "supernet.safetensors"
    supernet.save(path)
    again = Supernet.from_checkpoint(path)
    assert all(torch.equal(a, b) for a, b in zip(supernet.state_dict().values(), again.state_dict().values()))
    # a plain torch state dict with a DDP "module." prefix (as training checkpoints hold) loads too
    torch.save({"model": {f"module.{k}": v for k, v in supernet.state_dict().items()}}, tmp_path / "ddp.pt")
    assert torch.equal(Supernet.from_checkpoint(tmp_path / "ddp.pt").classifier.bias, supernet.classifier.bias)
    with pytest.raises(ValueError, match=r"\.safetensors"):
        supernet.save(tmp_path / "supernet.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.pt", "supernet.safetensors"]


def test_extracted_weights_are_leading_and_centred_slices(supernet):
    arch = get_arch("a1")  # mb4 uses 5x5 kernels, the rest 3x3
    model = supernet.extract(arch)
    big = supernet.state_dict()
    small = model.state_dict()
    assert set(small) < set(big)
    w = big["stages.2.0.dw.conv.weight"]  # mb3 first block, 3x3 from 5x5
    assert torch.equal(small["stages.2.0.dw.conv.weight"], w[:small["stages.2.0.dw.conv.weight"].shape[0], :, 1:4, 1:4])
    w = big["stages.3.0.dw.conv.weight"]  # mb4, 5x5 kept whole
    assert torch.equal(small["stages.3.0.dw.conv.weight"], w[:small["stages.3.0.dw.conv.weight"].shape[0]])
    se = big["stages.4.0.se.reduce.weight"]
    assert torch.equal(small["stages.4.0.se.reduce.weight"], se[:small["stages.4.0.se.reduce.weight"].shape[0],
                                                               :small["stages.4.0.se.reduce.weight"].shape[1]])
    # copies, not views: changing the subnet leaves the supernet alone
    before = supernet.stem.conv.weight.clone()
    with torch.no_grad():
        model.stem.conv.weight.add_(1.0)
    assert torch.equal(supernet.stem.conv.weight, before)
    assert all(p.requires_grad for p in model.parameters())


def test_supernet_forward_equals_the_extracted_subnet(supernet):
    arch = SEARCH_SPACE.sample(11)
    x = det(5, (2, 3, 96, 96))
    with torch.no_grad():
        assert torch.allclose(supernet(x, arch), supernet.extract(arch)(x), atol=1e-5)


def test_supernet_gradients_reach_only_the_subnet_slice():
    torch.manual_seed(0)
    net = Supernet().train()
    arch = SEARCH_SPACE.smallest()
    net(torch.randn(2, 3, 64, 64), arch).sum().backward()
    g = net.stages[1][0].expand.conv.weight.grad  # allocated 144 x 24, the subnet uses 64 x 16
    assert g[:64, :16].abs().sum() > 0 and g[64:].abs().sum() == 0 and g[:, 16:].abs().sum() == 0
    assert net.stages[1][4].expand.conv.weight.grad is None  # depth 3 of 5: block 4 never ran


def test_supernet_rejects_archs_outside_the_space_and_bad_names(supernet):
    bad = get_arch("a0").to_dict()
    bad["kernel_size"][0] = 7
    with pytest.raises(ValueError, match="kernel_size of stage mb1 is 7"):
        supernet.extract(bad)
    with pytest.raises(ValueError, match="unknown model 'a9'"):
        supernet(torch.zeros(1, 3, 64, 64), "a9")


def test_extract_by_name_and_alias(supernet):
    assert supernet.extract("AlphaNet-A5").arch == supernet.extract("a5_small").arch == get_arch("a5")
    assert isinstance(supernet.extract("a5_1"), AlphaNet)


def test_an_extracted_subnet_records_its_origin_and_that_it_needs_calibration(supernet):
    record = supernet.extract("a0").pretrained_cfg
    assert record.origin == "extracted" and record.needs_calibration and record.license == "cc-by-nc-4.0"
    assert record.source.split()[:2] == ["extracted", "from"]  # the words stay, for people
