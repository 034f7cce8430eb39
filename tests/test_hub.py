"""load(), save_pretrained and the Hub, with the real huggingface_hub client against a loopback Hub."""
import json
import os
import socket
import time

import pytest
import torch

import alphanet_zoo
from alphanet_zoo import AlphaNet, CheckpointError, WeightsIntegrityError, WeightsUnavailableError, load
from alphanet_zoo import registry
from conftest import det
from fake_hub import FakeHub
from alphanet_zoo.transforms import IMAGENET_MEAN, IMAGENET_STD

REPO_A0 = "alphanet-zoo/alphanet-a0"


@pytest.fixture(scope="module")
def a0(supernet):
    model = supernet.extract("a0")
    model.pretrained_cfg = {"name": "a0", "source": "test supernet",
                            "calibration": {"num_batches": 3, "batch_size": 4, "seed": 0}}
    return model


@pytest.fixture(scope="module")
def a0_folder(a0, tmp_path_factory):
    return a0.save_pretrained(tmp_path_factory.mktemp("published") / "a0")


@pytest.fixture
def hub(a0_folder, tmp_path, monkeypatch):
    """A loopback Hub serving a0 under its registry repo; a fresh, empty cache for each test."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with FakeHub() as server:
        server.commit_a0 = server.add_folder(REPO_A0, a0_folder)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


X = det(42, (2, 3, 192, 192))


def logits(model, x=X):
    with torch.no_grad():
        return model(x)


def same(a, b):
    """Equal weights give equal logits, up to the kernels' summation order (oneDNN may pick its
    blocking by a tensor's memory alignment, so two copies of a model can differ by ~1e-7)."""
    return (a - b).abs().max().item() <= 1e-6


def cached_blobs(tmp_path):
    return sorted(p.name for p in (tmp_path / "hf_home" / "hub").rglob("blobs/*"))


def test_load_by_name_downloads_checks_and_caches(hub, a0, tmp_path):
    model = load("a0", pretrained=True)
    assert isinstance(model, AlphaNet) and not model.training
    assert same(logits(model), logits(a0))
    assert model.pretrained_cfg["name"] == "a0"
    assert model.pretrained_cfg["calibration"] == {"num_batches": 3, "batch_size": 4, "seed": 0}
    assert any("/resolve/main/model.safetensors" in path for _, path in hub.requests)
    assert len(cached_blobs(tmp_path)) == 2  # config.json and model.safetensors, in HF_HOME/hub
    assert same(logits(load("AlphaNet-A0", pretrained=True)), logits(a0))


def test_load_by_hub_id_and_revision(hub, a0, supernet, tmp_path):
    other = supernet.extract("a0")
    with torch.no_grad():
        other.classifier.bias.add_(1.0)
    other.pretrained_cfg = {"name": "a0"}
    commit_b = hub.add_folder(REPO_A0, other.save_pretrained(tmp_path / "b"), branch="main")
    assert same(logits(load(f"hf-hub:{REPO_A0}")), logits(other))
    assert same(logits(load(f"hf-hub:{REPO_A0}@{hub.commit_a0}")), logits(a0))
    assert same(logits(load(f"hf-hub:{REPO_A0}", revision=hub.commit_a0)), logits(a0))
    assert same(logits(load("a0", pretrained=True, revision=commit_b)), logits(other))
    with pytest.raises(WeightsUnavailableError, match="no revision 'v9'"):
        load(f"hf-hub:{REPO_A0}@v9")
    with pytest.raises(ValueError, match="bad Hub id"):
        load("hf-hub:not-a-repo-id")


def test_registry_pin_selects_revision_and_checks_sha256(hub, a0, supernet, tmp_path, monkeypatch):
    weights = (tmp_path / "pinned.safetensors")
    sha = FakeHub.etag("model.safetensors", (hub.repos[REPO_A0].files[hub.commit_a0]["model.safetensors"]))
    newer = supernet.extract("a0")
    with torch.no_grad():
        newer.stem.bn.bias.add_(1.0)
    hub.add_folder(REPO_A0, newer.save_pretrained(tmp_path / "newer"))  # main moves on
    monkeypatch.setitem(registry._PUBLISHED_WEIGHTS, "a0", {"revision": hub.commit_a0, "sha256": sha})
    assert same(logits(load("a0", pretrained=True)), logits(a0))  # the pin, not main
    assert all("/resolve/main/" not in path for _, path in hub.requests)
    monkeypatch.setitem(registry._PUBLISHED_WEIGHTS, "a0", {"revision": hub.commit_a0, "sha256": "0" * 64})
    with pytest.raises(WeightsIntegrityError, match="pinned in the registry"):
        load("a0", pretrained=True)
    del weights


@pytest.mark.parametrize("mode", ["truncate", "flip"])
def test_corrupt_downloads_are_refused_and_not_kept(hub, a0, tmp_path, mode):
    hub.corrupt[(REPO_A0, "model.safetensors")] = mode
    with pytest.raises(WeightsIntegrityError):
        load("a0", pretrained=True)
    assert [b for b in cached_blobs(tmp_path) if not b.endswith(".lock")] == [
        FakeHub.etag("config.json", (hub.repos[REPO_A0].files[hub.commit_a0]["config.json"]))]
    del hub.corrupt[(REPO_A0, "model.safetensors")]
    assert same(logits(load("a0", pretrained=True)), logits(a0))  # the next try is clean


def test_offline_uses_the_cache_and_fails_clearly_without_it(hub, a0, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match=r"not cached and offline mode is on.*alphanet-extract"):
        load("a0", pretrained=True)
    assert hub.requests == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    load("a0", pretrained=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.requests.clear()
    assert same(logits(load("a0", pretrained=True)), logits(a0))
    assert hub.requests == []


def _closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_unreachable_hub_fails_at_once_or_serves_the_cache(hub, a0, monkeypatch):
    load("a0", pretrained=True)
    monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())
    assert same(logits(load("a0", pretrained=True)), logits(a0))  # cached: works without the Hub
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match=r"a5 .*not cached and the Hub .* is unreachable"):
        load("a5", pretrained=True)
    # a hang guard, not a benchmark: the client's own retry loop would take about half a minute
    assert time.monotonic() - start < 15


def test_unpublished_weights_say_how_to_get_them(hub):
    with pytest.raises(WeightsUnavailableError, match=r"no repository alphanet-zoo/alphanet-a6.*alphanet-extract"):
        load("a6", pretrained=True)
    with pytest.raises(WeightsUnavailableError, match="custom architecture"):
        load(alphanet_zoo.SEARCH_SPACE.sample(3), pretrained=True)


def test_round_trips_folder_file_and_supernet(a0, a0_folder, official_checkpoint, tmp_path):
    assert sorted(p.name for p in a0_folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert same(logits(load("a0", weights=a0_folder)), logits(a0))
    assert same(logits(load(a0_folder)), logits(a0))  # a folder alone names its architecture
    assert same(logits(load("a0", weights=a0_folder / "model.safetensors")), logits(a0))
    assert same(logits(load("a0", weights=official_checkpoint)), logits(a0))
    torch.save(a0.state_dict(), tmp_path / "a0.pth")
    assert same(logits(load("a0", weights=tmp_path / "a0.pth")), logits(a0))
    with pytest.raises(ValueError, match="holds architecture"):
        load("a5", weights=a0_folder)
    with pytest.raises(CheckpointError, match="does not match"):
        load("a5", weights=a0_folder / "model.safetensors")
    with pytest.raises(ValueError, match="not both"):
        load("a0", pretrained=True, weights=a0_folder)


def test_num_classes_keeps_the_backbone(a0, a0_folder):
    model = load("a0", weights=a0_folder, num_classes=10)
    assert model.classifier.out_features == 10 and model.num_classes == 10
    with torch.no_grad():
        assert same(model.forward_head(model.forward_features(X), pre_logits=True),
                    a0.forward_head(a0.forward_features(X), pre_logits=True))
    folder = model.save_pretrained(a0_folder.parent / "ten")
    assert same(logits(load(folder, num_classes=10)), logits(model))  # the 10-class head travels along
    assert json.loads((folder / "config.json").read_text())["num_classes"] == 10


def test_pickles_are_never_run(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Exploit()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load("a0", weights=tmp_path / "evil.pth")
    assert not marker.exists()


def test_config_and_model_card(a0_folder):
    config = json.loads((a0_folder / "config.json").read_text())
    assert config["architecture"] == alphanet_zoo.get_arch("a0").to_dict()
    assert config["num_classes"] == 1000 and config["name"] == "a0" and config["license"] == "cc-by-nc-4.0"
    assert config["preprocessing"] == {"resolution": 192, "resize_size": 256, "crop_size": 224,
                                       "interpolation": "bicubic", "mean": list(IMAGENET_MEAN),
                                       "std": list(IMAGENET_STD)}
    assert config["metrics"]["published"] == {"top1": 77.87, "top5": None, "mflops": 203}
    assert config["metrics"]["mflops"] == pytest.approx(203.39, abs=0.01)
    assert config["metrics"]["params"] == 8_954_184
    assert config["calibration"]["seed"] == 0
    card = (a0_folder / "README.md").read_text()
    yaml = pytest.importorskip("yaml")
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "cc-by-nc-4.0" and front["library_name"] == "alphanet_zoo"
    assert "imagenet-1k" in front["datasets"] and "image-classification" in front["tags"]
    result = front["model-index"][0]["results"][0]
    assert result["metrics"][0]["value"] == 77.87 and result["dataset"]["type"] == "imagenet-1k"
    assert "CC-BY-NC 4.0" in card


def test_push_to_hub_then_load_it_back(hub, a0):
    url = a0.push_to_hub("someone/my-a0", token="hf_test_token")
    assert url.startswith(f"{hub.url}/someone/my-a0/commit/")
    assert set(hub.repos["someone/my-a0"].files[url.rsplit("/", 1)[1]]) == {"README.md", "config.json",
                                                                           "model.safetensors"}
    assert same(logits(load("hf-hub:someone/my-a0")), logits(a0))


def test_extract_command_writes_hub_ready_folders_and_pushes(hub, official_checkpoint, a0, tmp_path, capsys):
    from alphanet_zoo.commands import extract_main

    out = tmp_path / "out"
    assert extract_main(["--supernet", str(official_checkpoint), "--arch", "a0", "--out", str(out),
                         "--push", "myorg"]) == 0
    assert same(logits(load("a0", weights=out / "a0")), logits(a0))
    assert same(logits(load("hf-hub:myorg/alphanet-a0")), logits(a0))
    assert "a0: pushed" in capsys.readouterr().out
