"""The published models through timm: registration, pretrained_cfg, features_only, intermediates, FX, heads."""
import math

import pytest
import torch

timm = pytest.importorskip("timm", reason="timm is not installed (pip install alphanet_zoo[timm])")

import alphanet_zoo  # noqa: E402  (registers the models with timm)
from alphanet_zoo import AlphaNet, AlphaNetFeatures, InputError  # noqa: E402

NAMES = [f"alphanet_{name}" for name in alphanet_zoo.list_models()]
SIDE = 64


def test_every_published_model_is_registered():
    assert sorted(timm.list_models("alphanet_*")) == sorted(NAMES)
    assert set(NAMES) == {f"alphanet_a{i}" for i in range(7)} | {"alphanet_a5_base"}


@pytest.mark.parametrize("timm_name", NAMES)
def test_create_model_and_pretrained_cfg(timm_name):
    name = timm_name.removeprefix("alphanet_")
    info = alphanet_zoo.model_info(name)
    cfg = timm.models.get_pretrained_cfg(timm_name)
    side = info.arch.resolution
    assert cfg.input_size == (3, side, side) and cfg.pool_size == (math.ceil(side / 32),) * 2
    assert cfg.crop_pct == 0.875 and cfg.interpolation == "bicubic"
    assert cfg.mean == alphanet_zoo.Preprocessing(side).mean and cfg.std == alphanet_zoo.Preprocessing(side).std
    assert (cfg.first_conv, cfg.classifier, cfg.num_classes) == ("stem.conv", "classifier", 1000)
    # no weights are published yet: timm must not list these models as pretrained (its pretrained tests
    # would try the Hub); the Hub repo is named once the registry pins a revision
    assert cfg.hf_hub_id is None and not cfg.has_weights and cfg.license == info.weights.license
    assert timm_name not in timm.list_models("alphanet_*", pretrained=True)
    model = timm.create_model(timm_name, pretrained=False)
    assert isinstance(model, AlphaNet) and model.arch == info.arch
    state = model.state_dict()
    assert f"{cfg.first_conv}.weight" in state and f"{cfg.classifier}.weight" in state
    assert model.default_cfg["input_size"] == cfg.input_size
    assert timm.data.resolve_model_data_config(model)["input_size"] == cfg.input_size
    copied = dict(getattr(model, "pretrained_cfg", {}))  # what timm's inference.py does with it
    assert copied["input_size"] == cfg.input_size and copied == model.pretrained_cfg.timm_cfg()
    assert "mean" in model.pretrained_cfg and sorted(model.pretrained_cfg) == sorted(copied)


def test_features_only_shapes_strides_and_feature_info():
    model = timm.create_model("alphanet_a0", pretrained=False, num_classes=10, features_only=True).eval()
    assert isinstance(model, AlphaNetFeatures)
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info.channels() == [24, 32, 112, 216]
    with torch.no_grad():
        maps = model(torch.randn(1, 3, SIDE, SIDE))
    assert [tuple(m.shape[1:]) for m in maps] == [(c, SIDE // r, SIDE // r) for c, r in
                                                  zip(model.feature_info.channels(), model.feature_info.reduction())]
    picked = timm.create_model("alphanet_a0", features_only=True, out_indices=(0, 4))
    assert picked.feature_info.reduction() == [2, 32] and picked.feature_info.module_name() == ["stages.0", "stages.6"]


def test_forward_intermediates_and_timm_feature_info():
    model = timm.create_model("alphanet_a1").eval()
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    x = torch.randn(1, 3, SIDE, SIDE)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
    assert [m.shape[1] for m in maps] == info.channels()
    assert [SIDE // m.shape[-1] for m in maps] == info.reduction() == [2, 4, 8, 16, 32]


def test_fx_trace_and_create_feature_extractor():
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    model = timm.create_model("alphanet_a0").eval()
    x = torch.randn(1, 3, SIDE, SIDE)
    _, eval_nodes = get_graph_node_names(model)
    extractor = create_feature_extractor(model, return_nodes=[eval_nodes[-1], "stages.2"])
    with torch.no_grad():
        out = extractor(x)
        assert torch.equal(out[eval_nodes[-1]], model(x))
        assert out["stages.2"].shape[-1] == SIDE // 8
        assert torch.equal(torch.fx.symbolic_trace(model)(x), model(x))


def test_num_classes_and_reset_classifier():
    model = timm.create_model("alphanet_a0", num_classes=10).eval()
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        assert model(x).shape == (2, 10) and model.get_classifier().out_features == 10
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == (2, model.head_hidden_size)
        model.reset_classifier(0, "")
        assert model(x).shape == (2, model.head_hidden_size, SIDE // 32, SIDE // 32)
        headless = timm.create_model("alphanet_a0", num_classes=0, global_pool="").eval()
        assert headless(x).shape[1] == 1792 and headless.forward_features(x).shape[1] == headless.num_features
    with pytest.raises(InputError, match="in_chans"):
        timm.create_model("alphanet_a0", in_chans=1)


def test_importing_the_package_does_not_load_timm_yet_registers_when_timm_loads():
    import os
    import subprocess
    import sys

    code = ("import sys, alphanet_zoo; assert 'timm' not in sys.modules; import timm; "
            "m = timm.create_model('alphanet_a0', num_classes=10); "
            "assert type(m).__name__ == 'AlphaNet' and m.num_classes == 10; "
            "assert set(timm.list_models('alphanet_*')) >= {'alphanet_a0', 'alphanet_a5_base', 'alphanet_a6'}")
    # the start-up hook off: this is the package's own path (tests/test_timm_scripts.py tests the hook)
    env = {**os.environ, "ALPHANET_ZOO_NO_TIMM_HOOK": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
