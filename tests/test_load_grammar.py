"""The names users type into load(): timm's hf-hub: spelling, and unknown names told apart from paths."""
import shutil

import pytest
import torch
from fake_hub import serving

import alphanet_zoo
from alphanet_zoo import AlphaNet, InputError, WeightsUnavailableError, load
from alphanet_zoo.record import Origin

REPO_ID = "someone/tiny"
KNOWN = "known: a0, a1, a2, a3, a4, a5, a5_base, a6 (aliases: a5_1, a5_small)"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small 10-class model and the save_pretrained folder of it."""
    torch.manual_seed(0)
    model = AlphaNet(alphanet_zoo.SEARCH_SPACE.smallest(), 10).eval()
    return model, model.save_pretrained(tmp_path_factory.mktemp("published") / "tiny")


@pytest.fixture
def hub(tiny, tmp_path, monkeypatch):
    """A loopback Hub serving the tiny model as REPO_ID; a fresh, empty cache for each test."""
    with serving(monkeypatch, tmp_path / "hf_home") as server:
        server.commit = server.add_folder(REPO_ID, tiny[1])
        yield server


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_hf_hub_with_pretrained_true_loads_the_repos_weights(hub, tiny):
    saved = tiny[0]
    model = load(f"hf-hub:{REPO_ID}", pretrained=True)  # timm's spelling
    assert same_weights(model, saved) and model.num_classes == 10 and not model.training
    assert model.pretrained_cfg == saved.pretrained_cfg
    assert any(path.endswith("/resolve/main/model.safetensors") for method, path in hub.requests if method == "GET")
    assert same_weights(load(f"hf-hub:{REPO_ID}"), saved)  # the flag is redundant: the same without it
    assert same_weights(load(f"hf-hub:{REPO_ID}", pretrained=True, revision=hub.commit), saved)
    with pytest.raises(InputError, match=f"hf-hub:{REPO_ID} names Hub weights; do not pass weights= with it"):
        load(f"hf-hub:{REPO_ID}", weights="random")


def test_hf_hub_with_pretrained_false_builds_the_repos_architecture_with_random_weights(hub, tiny, tmp_path,
                                                                                       monkeypatch):
    saved = tiny[0]
    model = load(f"hf-hub:{REPO_ID}", pretrained=False)
    assert model.arch == saved.arch and model.num_classes == 10 and not same_weights(model, saved)
    assert model.pretrained_cfg.origin == Origin.RANDOM
    assert not any("model.safetensors" in path for _, path in hub.requests)  # the config alone was read
    assert load(f"hf-hub:{REPO_ID}", pretrained=False, num_classes=3).num_classes == 3

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match=rf"pretrained=False with hf-hub:{REPO_ID} builds the "
                                                      r"architecture of its config\.json.*could not be had.*not "
                                                      r"cached and offline mode is on.*Pass the architecture"):
        load(f"hf-hub:{REPO_ID}", pretrained=False)


@pytest.mark.parametrize("kwargs", [{}, {"pretrained": True}, {"pretrained": False}, {"weights": "random"}])
def test_an_unknown_name_lists_the_known_ones(tmp_path, monkeypatch, kwargs):
    monkeypatch.chdir(tmp_path)  # no ./a9 here
    with pytest.raises(InputError) as caught:
        load("a9", **kwargs)
    assert str(caught.value) == f"unknown model 'a9'; {KNOWN}"  # not "weights not found", not "names weights on disk"


@pytest.mark.parametrize("typed, meant", [("a00", "a0"), ("a5base", "a5_base"), ("AlphaNet-A5-smal", "a5_small")])
def test_a_near_miss_is_suggested(tmp_path, monkeypatch, typed, meant):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        load(typed, pretrained=True)
    assert str(caught.value) == f"unknown model {typed!r}; {KNOWN}; did you mean {meant!r}?"


def test_paths_are_told_apart_from_names(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"^weights not found: weights/a9$"):
        load("weights/a9", pretrained=True)  # it looks like a path: no claim that it is on disk
    with pytest.raises(InputError, match=r"^weights not found: a9\.safetensors$"):
        load("a9.safetensors")
    shutil.copytree(tiny[1], tmp_path / "a9")  # now ./a9 exists: the path wins over the unknown name
    assert same_weights(load("a9"), tiny[0])
    with pytest.raises(InputError, match=r"^a9 names weights on disk; do not pass weights= or pretrained= with it"):
        load("a9", pretrained=True)
