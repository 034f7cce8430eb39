"""Every published model, one by one, through the checks timm's ``tests/test_models.py`` runs on each of its
models (written here for ours): forward (and with gradient checkpointing), backward, the record against the
model (timm's default-cfg test), features and intermediates (shapes, channels and strides), and, marked
slow, TorchScript and FX forward and backward.

References come from the architecture, not from the code under test: the tapped widths are the widths of
mb1, mb2, mb3, mb5 and mb7 at strides 2 to 32 (docs/design.md), a map's side is ``ceil(side / stride)``,
``forward_features`` has ``6 * width[7]`` channels and the pre-logits embedding ``width[8]``. Small inputs
keep it cheap (the forward is pure: any side runs); the record's own input size is run once per model."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import alphanet_zoo
from alphanet_zoo import AlphaNetFeatures, count_flops, count_params, list_models, model_info
from alphanet_zoo.record import Origin

SIDE = 64  # forward and backward
ODD_SIDE = 72  # features: 72 / 16 and 72 / 32 are not whole, so the maps' sides are rounded up
TAPPED_STAGES = (1, 2, 3, 5, 7)  # the widths tapped, indices into ArchConfig.width
STRIDES = (2, 4, 8, 16, 32)
DEFAULT_FEATURES = (1, 2, 3, 4)  # features_only leaves out the stride-2 map (feature_info.DEFAULT_OUT_INDICES)


def batch(n: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def expected_maps(arch, n: int, side: int, indices=range(5)) -> list[tuple[int, ...]]:
    return [(n, arch.width[TAPPED_STAGES[i]], math.ceil(side / STRIDES[i]), math.ceil(side / STRIDES[i]))
            for i in indices]


@pytest.fixture(scope="module", params=list_models())
def model(request):
    torch.manual_seed(0)
    return alphanet_zoo.load(request.param)  # random weights, eval mode


def test_the_record_is_the_models(model):
    record, info = model.pretrained_cfg, model_info(model.pretrained_cfg.name)
    assert record.arch == model.arch == info.arch
    assert record.num_classes == model.classifier.out_features == 1000
    assert record.mflops == pytest.approx(count_flops(model.arch), abs=1e-4) and record.mflops == \
        pytest.approx(info.mflops, abs=1e-4)
    assert record.params == sum(p.numel() for p in model.parameters()) == count_params(model.arch) == info.params
    assert record.preprocessing.resolution == model.arch.resolution
    assert record.labels is not None and len(record.labels) == record.num_classes
    assert record.origin is Origin.RANDOM and record.license is None and not record.calibrated
    assert record.published is not None and record.published.mflops == info.published_mflops \
        and record.published.top1 == info.published_top1
    assert type(record).from_dict(record.to_dict()) == record
    assert alphanet_zoo.ModelRecord.from_dict(record.to_dict()).to_dict() == record.to_dict()


def test_default_cfg_describes_the_model_at_its_input_size(model):
    """timm's default-cfg test: the cfg's input size, pool size, widths and layer names are the model's."""
    cfg, width = model.default_cfg, model.arch.width
    side = model.arch.resolution
    assert cfg["input_size"] == (3, side, side) and cfg["num_classes"] == model.num_classes == 1000
    assert (model.num_features, model.head_hidden_size) == (6 * width[7], width[8])
    state = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state and f"{cfg['classifier']}.weight" in state
    assert state[f"{cfg['first_conv']}.weight"].shape[1] == 3
    x = batch(1, side)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (1, model.num_features, *cfg["pool_size"])
        assert cfg["pool_size"] == (math.ceil(side / 32),) * 2
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (1, model.head_hidden_size)
        logits = model(x)
        assert logits.shape == (1, 1000) and torch.equal(logits, model.forward_head(features))
        headless = copy.deepcopy(model)
        headless.reset_classifier(0)
        assert headless.num_classes == 0 and torch.equal(headless(x), pre_logits)
        headless.reset_classifier(0, "")
        assert headless(x).shape == (1, model.head_hidden_size, *cfg["pool_size"])
    unpooled = alphanet_zoo.load(model.arch, num_classes=0, global_pool="")
    with torch.no_grad():
        assert unpooled(x).shape == (1, model.head_hidden_size, *cfg["pool_size"])


def test_forward_and_with_grad_checkpointing(model):
    x = batch(2, SIDE)
    out = model(x)  # autograd on, as in timm's test, so checkpointing runs
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    checkpointed = copy.deepcopy(model)
    checkpointed.set_grad_checkpointing()
    assert torch.allclose(checkpointed(x), out, rtol=1e-4, atol=1e-5)


def test_backward_reaches_every_parameter(model):
    trained = copy.deepcopy(model).train()
    trained.reset_classifier(42)
    out = trained(batch(2, SIDE))
    out.mean().backward()
    missing = [n for n, p in trained.named_parameters() if p.grad is None]
    assert not missing and out.shape == (2, 42) and torch.isfinite(out).all()
    assert sum(p.grad.numel() for p in trained.parameters()) == sum(p.numel() for p in trained.parameters())


def test_features_and_intermediates_shapes_and_strides(model):
    x = batch(1, ODD_SIDE)
    info = model.feature_info
    assert [d["num_chs"] for d in info] == [model.arch.width[s] for s in TAPPED_STAGES]
    assert [d["reduction"] for d in info] == list(STRIDES)
    final, maps = model.forward_intermediates(x)  # autograd on: the checkpointed run below differs
    assert [m.shape for m in maps] == expected_maps(model.arch, 1, ODD_SIDE)
    with torch.no_grad():
        assert torch.equal(final, model.forward_features(x))
    features = AlphaNetFeatures(model)
    assert features.out_indices == DEFAULT_FEATURES
    assert features.feature_info.channels() == [m.shape[1] for m in maps[1:]]
    assert features.feature_info.reduction() == list(STRIDES[1:])
    with torch.no_grad():
        feature_maps = features(x)
    assert [m.shape for m in feature_maps] == expected_maps(model.arch, 1, ODD_SIDE, DEFAULT_FEATURES)
    assert all(torch.equal(a, b) for a, b in zip(feature_maps, maps[1:]))
    assert features.default_cfg == model.default_cfg
    with torch.no_grad():
        every = AlphaNetFeatures(model, None)(x)  # all five taps, as forward_intermediates' default
    assert len(every) == 5 and all(torch.equal(a, b) for a, b in zip(every, maps))
    checkpointed = copy.deepcopy(model)
    checkpointed.set_grad_checkpointing()
    final2, maps2 = checkpointed.forward_intermediates(x)
    assert torch.allclose(final2, final, rtol=1e-4, atol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(maps2, maps))


# ---- TorchScript and FX: a compile or trace of each model takes 1-3 s -----------------------------------

@pytest.mark.slow
def test_torchscript_forward(model):
    scripted = torch.jit.script(model)
    x = batch(1, SIDE)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_fx_forward_and_backward(model):
    """timm's FX tests: torchvision's feature extractor on the last node gives the model's output (eval), and
    trains every parameter (train)."""
    x = batch(2, SIDE)
    train_nodes, eval_nodes = get_graph_node_names(model)
    with torch.no_grad():
        extracted = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])(x)
        assert torch.equal(next(iter(extracted.values())), model(x))
    trained = copy.deepcopy(model).train()
    trained.reset_classifier(42)
    fx = create_feature_extractor(trained, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]])
    out = next(iter(fx(x).values()))
    out.mean().backward()
    assert out.shape == (2, 42) and all(p.grad is not None for p in fx.parameters())
    assert sum(p.grad.numel() for p in fx.parameters()) == sum(p.numel() for p in trained.parameters())
