"""Feature maps without timm: load(features_only=True), forward_intermediates, pruning, FX, TorchScript, ONNX."""
import math

import pytest
import torch
from torch.utils.checkpoint import checkpoint
from torchvision.models.feature_extraction import create_feature_extractor

import alphanet_zoo
from alphanet_zoo import registry
from alphanet_zoo import AlphaNet, AlphaNetFeatures, InputError
from alphanet_zoo import model as model_module
from alphanet_zoo.feature_info import TAP_STAGES, take_indices

SIDE = 96


@pytest.fixture(scope="module")
def a0():
    torch.manual_seed(0)
    return AlphaNet("a0").eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))


def test_load_features_only_gives_strides_4_to_32_matching_feature_info(x):
    features = alphanet_zoo.load("a0", features_only=True)
    assert isinstance(features, AlphaNetFeatures) and not features.training
    info = features.feature_info
    assert info.reduction() == [4, 8, 16, 32]
    assert info.module_name() == ["stages.1", "stages.2", "stages.4", "stages.6"]
    assert info.channels() == [24, 32, 112, 216]  # a0's widths of mb2, mb3, mb5, mb7
    with torch.no_grad():
        maps = features(x)
    assert len(maps) == 4
    for m, c, r in zip(maps, info.channels(), info.reduction()):
        assert m.shape == (2, c, math.ceil(SIDE / r), math.ceil(SIDE / r))


def test_features_state_dict_is_a_slice_of_the_model(a0):
    features = AlphaNetFeatures(a0, (1, 2))
    model_state = a0.state_dict()
    state = features.state_dict()
    assert state and all(torch.equal(v, model_state[k]) for k, v in state.items())
    assert len(features.stages) == TAP_STAGES[2]  # nothing past the last tap
    assert features.pretrained_cfg is a0.pretrained_cfg


def test_out_indices_are_checked():
    with pytest.raises(InputError, match="out of range"):
        alphanet_zoo.load("a0", features_only=True, out_indices=(1, 5))
    assert take_indices(5, None) == ([0, 1, 2, 3, 4], 4)
    assert take_indices(5, 2) == ([3, 4], 4)
    assert take_indices(5, (-1, 0)) == ([4, 0], 4)


def test_forward_intermediates_matches_the_taps_and_forward_features(a0, x):
    with torch.no_grad():
        final, maps = a0.forward_intermediates(x)
        assert torch.equal(final, a0.forward_features(x))
        assert [m.shape[1] for m in maps] == [d["num_chs"] for d in a0.feature_info]
        assert [SIDE // m.shape[-1] for m in maps] == [2, 4, 8, 16, 32]
        only = a0.forward_intermediates(x, indices=[1, 3], intermediates_only=True, stop_early=True)
        assert [torch.equal(a, b) for a, b in zip(only, (maps[1], maps[3]))] == [True, True]
        features = AlphaNetFeatures(a0)(x)
        assert len(features) == 4 and all(torch.equal(a, b) for a, b in zip(features, maps[1:]))
        for indices in (None, 2, (0, 4), (3,)):  # a features model's forward is forward_intermediates
            expected = a0.forward_intermediates(x, indices, intermediates_only=True, stop_early=True)
            got = AlphaNetFeatures(a0, indices)(x)
            assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected))
    with pytest.raises(InputError, match="intermediates_only"):
        a0.forward_intermediates(x, stop_early=True)
    with pytest.raises(InputError, match="NCHW"):
        a0.forward_intermediates(x, output_fmt="NHWC")


def test_prune_intermediate_layers_keeps_what_the_taps_need(x):
    model = AlphaNet("a0").eval()
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=(1, 2), intermediates_only=True)
        assert model.prune_intermediate_layers(indices=(1, 2)) == [1, 2]
        assert len(model.stages) == 3 and model.num_classes == 0
        maps = model.forward_intermediates(x, indices=(1, 2), intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(maps, expected))
        assert torch.equal(model.forward_features(x), maps[1])  # the last kept stage's output


def test_fx_symbolic_trace_and_create_feature_extractor(a0, x):
    traced = torch.fx.symbolic_trace(a0)
    extractor = create_feature_extractor(a0, return_nodes={"stages.1": "stride4", "stages.6": "stride32"})
    features = alphanet_zoo.load("a0", features_only=True)
    traced_features = torch.fx.symbolic_trace(features)
    with torch.no_grad():
        assert torch.equal(traced(x), a0(x))
        out = extractor(x)
        assert out["stride4"].shape[-1] == SIDE // 4 and out["stride32"].shape[-1] == SIDE // 32
        assert all(torch.equal(a, b) for a, b in zip(traced_features(x), features(x)))
    with pytest.raises(ValueError, match=r"expects a batch of RGB images shaped \(N, 3, H, W\)"):
        traced(torch.randn(1, 1, SIDE, SIDE))  # the check runs in the traced graph too


def test_features_script(x):
    features = alphanet_zoo.load("a0", features_only=True)
    scripted = torch.jit.script(features)
    with torch.no_grad():
        assert all(torch.allclose(a, b) for a, b in zip(scripted(x), features(x)))


def test_headless_and_unpooled(a0, x):
    model = AlphaNet("a0", num_classes=0, global_pool="").eval()
    with torch.no_grad():
        assert model(x).shape == (2, 1792, 3, 3)
        model.reset_classifier(0, "avg")
        assert model(x).shape == (2, 1792)
        model.reset_classifier(5)
        assert model(x).shape == (2, 5) and model.pretrained_cfg.num_classes == 5
    with pytest.raises(InputError, match="num_classes=0"):
        AlphaNet("a0", global_pool="")


def test_grad_checkpointing_gives_the_same_output_and_gradients(x, monkeypatch):
    torch.manual_seed(0)
    model = AlphaNet("a0").train()
    small = x[:, :, :64, :64]

    def run():
        model.zero_grad(set_to_none=True)
        logits = model(small)
        maps = model.forward_intermediates(small, intermediates_only=True)
        (logits.mean() + sum(m.mean() for m in maps)).backward()
        return [logits, *maps], {n: p.grad for n, p in model.named_parameters()}

    outputs, grads = run()  # the reference: no checkpointing
    calls = []
    monkeypatch.setattr(model_module, "checkpoint", lambda *a, **k: calls.append(1) or checkpoint(*a, **k))
    model.set_grad_checkpointing()
    checkpointed_outputs, checkpointed_grads = run()
    assert len(calls) == 2 * len(model.stages)  # every stage of both forwards recomputed in the backward
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(checkpointed_outputs, outputs))
    assert grads.keys() == checkpointed_grads.keys()
    assert all(torch.allclose(checkpointed_grads[n], g, rtol=1e-4, atol=1e-6) for n, g in grads.items())


def test_record_reads_as_timm_pretrained_cfg(a0, monkeypatch):
    cfg = a0.default_cfg
    assert cfg["hf_hub_id"] is None  # not published yet: no weights for timm to fetch
    assert cfg["input_size"] == (3, 192, 192) and cfg["pool_size"] == (6, 6)
    assert cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bicubic"
    assert cfg["first_conv"] == "stem.conv" and cfg["classifier"] == "classifier"
    monkeypatch.setitem(registry._PUBLISHED_WEIGHTS, "a0", {"revision": "0" * 40, "sha256": "1" * 64})
    assert a0.pretrained_cfg.timm_cfg()["hf_hub_id"] == alphanet_zoo.model_info("a0").weights.hub_repo
    assert a0.pretrained_cfg.get("mean") == cfg["mean"] and a0.pretrained_cfg["std"] == cfg["std"]


@pytest.mark.slow
def test_onnx_export_of_the_features_model_has_one_output_per_map(tmp_path):
    onnx = pytest.importorskip("onnx")
    from alphanet_zoo.export import to_onnx

    features = alphanet_zoo.load("a0", features_only=True, out_indices=(2, 4))
    result = to_onnx(features, tmp_path / "features.onnx")
    assert result.verification.max_abs_diff <= 1e-4
    graph = onnx.load(str(tmp_path / "features.onnx")).graph
    assert [o.name for o in graph.output] == ["stride8", "stride32"]
    with pytest.raises(InputError, match="exports at fp32 to onnx only"):
        to_onnx(features, tmp_path / "int8.onnx", precision="int8")
