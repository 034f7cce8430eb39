"""The standalone AlphaNet model: pure forward, batch of one, no dead weights, heads, tracing."""
import warnings

import pytest
import torch

from alphanet_zoo import SEARCH_SPACE, AlphaNet, get_arch
from alphanet_zoo.model import drop_connect_rates


@pytest.fixture(scope="module")
def a0():
    torch.manual_seed(0)
    return AlphaNet("a0").eval()


def test_batch_of_one_and_shapes(a0):
    with torch.no_grad():
        assert a0(torch.randn(1, 3, 192, 192)).shape == (1, 1000)
        features = a0.forward_features(torch.randn(2, 3, 192, 192))
        assert features.shape == (2, 6 * 216, 6, 6)
        assert a0.forward_head(features, pre_logits=True).shape == (2, 1792)
        assert a0.forward_head(features).shape == (2, 1000)
    assert a0.arch == get_arch("a0") and a0.num_classes == 1000


def test_forward_is_pure_no_resize(a0):
    with torch.no_grad():
        assert a0(torch.randn(1, 3, 224, 224)).shape == (1, 1000)  # runs at the size given
        assert a0.forward_features(torch.randn(1, 3, 224, 224)).shape[-1] == 7


@pytest.mark.parametrize("shape", [(1, 4, 192, 192), (1, 1, 192, 192), (3, 192, 192)])
def test_wrong_input_channels_is_a_clear_error(a0, shape):
    with pytest.raises(ValueError, match=r"expects a batch of RGB images shaped \(N, 3, H, W\)"):
        a0(torch.randn(*shape))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_parameter_runs(seed):
    arch = SEARCH_SPACE.sample(seed)
    model = AlphaNet(arch).train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []


def test_shortcut_convs_exist_only_where_widths_change():
    model = AlphaNet("a0")  # first_conv 16 -> mb1 16: identity; every other stage changes width
    assert model.stages[0][0].shortcut.__class__.__name__ == "Identity"
    assert all(stage[0].shortcut.conv is not None for stage in model.stages[1:])
    assert all(b.shortcut.__class__.__name__ == "Identity" for stage in model.stages for b in list(stage)[1:])


def test_constructor_validates():
    with pytest.raises(ValueError, match="depth of stage mb2 is 9"):
        AlphaNet({**get_arch("a0").to_dict(), "depth": [1, 9, 3, 3, 3, 3, 1]})
    with pytest.raises(ValueError, match="num_classes"):
        AlphaNet("a0", num_classes=-1)  # 0 is valid: no classifier (timm)
    with pytest.raises(ValueError, match="drop_rate"):
        AlphaNet("a0", drop_rate=1.5)


def test_reset_classifier_keeps_the_backbone(a0):
    model = AlphaNet("a0")
    model.load_state_dict(a0.state_dict())
    model.reset_classifier(10)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10) and model.num_classes == 10
    assert torch.equal(model.stem.conv.weight, a0.stem.conv.weight)


def test_drop_connect_only_in_the_last_two_stages():
    rates = drop_connect_rates(get_arch("a6").depth, 0.2)
    assert all(r == 0 for stage in rates[:5] for r in stage)
    # supernet indices: mb6 starts at block 27 of 37, mb7 at 35
    assert rates[5] == pytest.approx([0.2 * (27 + j) / 37 for j in range(6)])
    assert rates[6] == pytest.approx([0.2 * 35 / 37])
    model = AlphaNet("a6", drop_connect_rate=0.2)
    assert model.stages[5][0].drop_connect_rate == pytest.approx(0.2 * 27 / 37)
    assert model.stages[0][0].drop_connect_rate == 0
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # off in eval mode


@pytest.mark.slow
def test_trace_and_script_agree_with_eager(a0):
    x = torch.randn(3, 3, 192, 192)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(a0, torch.randn(2, 3, 192, 192), check_trace=False)
        scripted = torch.jit.script(a0)
    with torch.no_grad():
        expected = a0(x)
        assert torch.allclose(traced(x), expected, atol=1e-5)
        assert torch.allclose(scripted(x), expected, atol=1e-5)
