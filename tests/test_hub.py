"""load(), save_pretrained and the Hub, with the real huggingface_hub client against a loopback Hub."""
import ast
import dataclasses
import inspect
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import det
from fake_hub import FakeHub, serving

import alphanet_zoo
from alphanet_zoo import (AlphaNet, Calibration, CheckpointError, InputError, Measurement, WeightsIntegrityError,
                          WeightsUnavailableError, load, registry)
from alphanet_zoo import hub as hub_module
from alphanet_zoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD

REPO = Path(__file__).resolve().parents[1]
REPO_A0 = "alphanet-zoo/alphanet-a0"
CALIBRATION = Calibration(data="train", num_batches=3, batch_size=4, seed=0)


@pytest.fixture(scope="module")
def a0(supernet):
    model = supernet.extract("a0")
    model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg, source="test supernet", calibration=CALIBRATION)
    return model


@pytest.fixture(scope="module")
def a0_folder(a0, tmp_path_factory):
    return a0.save_pretrained(tmp_path_factory.mktemp("published") / "a0")


@pytest.fixture
def hub(a0_folder, tmp_path, monkeypatch):
    """A loopback Hub serving a0 under its registry repo; a fresh, empty cache for each test."""
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with serving(monkeypatch, tmp_path / "hf_home") as server:
        server.commit_a0 = server.add_folder(REPO_A0, a0_folder)
        yield server


X = det(42, (2, 3, 192, 192))


def logits(model, x=X):
    with torch.no_grad():
        return model(x)


def same(a, b):
    """Equal weights give equal logits, up to the kernels' summation order (oneDNN may pick its
    blocking by a tensor's memory alignment, so two copies of a model can differ by ~1e-7)."""
    return (a - b).abs().max().item() <= 1e-6


def cached_files(tmp_path):
    return sorted(p.name for p in (tmp_path / "hf_home" / "hub").rglob("blobs/*") if not p.name.endswith(".lock"))


def test_load_by_name_downloads_checks_and_caches(hub, a0, tmp_path):
    model = load("a0", pretrained=True)
    assert isinstance(model, AlphaNet) and not model.training
    assert same(logits(model), logits(a0))
    assert model.pretrained_cfg == a0.pretrained_cfg  # the record travels verbatim
    assert model.pretrained_cfg.calibration == CALIBRATION
    assert any("/resolve/main/model.safetensors" in path for _, path in hub.requests)
    assert len(cached_files(tmp_path)) == 2  # config.json and model.safetensors, in HF_HOME/hub
    assert same(logits(load("AlphaNet-A0", weights="pretrained")), logits(a0))


def test_load_by_hub_id_and_revision(hub, a0, supernet, tmp_path):
    other = supernet.extract("a0")
    with torch.no_grad():
        other.classifier.bias.add_(1.0)
    commit_b = hub.add_folder(REPO_A0, other.save_pretrained(tmp_path / "b"), branch="main")
    assert same(logits(load(f"hf-hub:{REPO_A0}")), logits(other))
    assert same(logits(load(f"hf-hub:{REPO_A0}@{hub.commit_a0}")), logits(a0))
    assert same(logits(load(f"hf-hub:{REPO_A0}", revision=hub.commit_a0)), logits(a0))
    assert same(logits(load("a0", weights=f"hf-hub:{REPO_A0}@{hub.commit_a0}")), logits(a0))
    assert same(logits(load("a0", pretrained=True, revision=commit_b)), logits(other))
    with pytest.raises(WeightsUnavailableError, match="no revision 'v9'"):
        load(f"hf-hub:{REPO_A0}@v9")
    with pytest.raises(InputError, match="two revisions"):
        load(f"hf-hub:{REPO_A0}@v1", revision="v2")


@pytest.mark.parametrize("bad", ["hf-hub:not-a-repo-id", "hf-hub:../../etc", "hf-hub:org/..", "hf-hub:org/repo@",
                                 "hf-hub:org/repo@../../../tmp/x", "hf-hub:org/repo@/abs", "hf-hub:a/b/c",
                                 "hf-hub:org/re po", "hf-hub:org/repo@refs/../../x"])
def test_hub_ids_and_revisions_that_could_escape_are_refused(hub, bad):
    with pytest.raises(InputError, match="bad Hub"):
        load(bad)
    assert hub.requests == []  # refused before any request


def test_registry_pin_selects_revision_and_checks_sha256(hub, a0, supernet, tmp_path, monkeypatch):
    sha = FakeHub.etag("model.safetensors", hub.repos[REPO_A0].files[hub.commit_a0]["model.safetensors"])
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


@pytest.mark.parametrize("mode", ["truncate", "flip"])
def test_corrupt_downloads_are_refused_and_not_kept(hub, a0, tmp_path, mode):
    hub.corrupt[(REPO_A0, "model.safetensors")] = mode
    with pytest.raises(WeightsIntegrityError):
        load("a0", pretrained=True)
    config = hub.repos[REPO_A0].files[hub.commit_a0]["config.json"]
    assert cached_files(tmp_path) == [FakeHub.etag("config.json", config)]
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


def test_offline_with_a_partial_cache_names_the_missing_file(hub, tmp_path, monkeypatch):
    hub_module.download(REPO_A0, "main", "config.json", "a0")  # the config is cached, the weights are not
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match=r"model\.safetensors\) are not cached and offline"):
        load("a0", pretrained=True)


def test_the_clients_globals_are_never_written(hub, monkeypatch):
    from huggingface_hub import constants

    before = {k: v for k, v in vars(constants).items() if k.isupper()}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError):
        load("a0", pretrained=True)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    load("a0", pretrained=True)
    assert {k: v for k, v in vars(constants).items() if k.isupper()} == before


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
    # a hang guard, not a benchmark: the client's own retry loop would take a minute
    assert time.monotonic() - start < 15


@pytest.mark.parametrize("fault, message", [("error500", "HTTP 500"), ("redirect-loop", "unreachable")])
def test_server_errors_fail_fast_with_one_clear_error(hub, fault, message):
    hub.faults[(REPO_A0, "config.json")] = fault
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match=message):
        load("a0", pretrained=True)
    assert time.monotonic() - start < 15


@pytest.mark.slow  # seconds of subprocesses or compiles: CI runs it, the quick loop does not
@pytest.mark.parametrize("fault", ["stall", "trickle"])
def test_a_stalled_transfer_is_abandoned_in_bounded_time(hub, tmp_path, monkeypatch, fault):
    monkeypatch.setattr(hub_module, "STALL_TIMEOUT_S", 2.0)
    hub.faults[(REPO_A0, "model.safetensors")] = fault
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="stalled"):
        load("a0", pretrained=True)
    assert time.monotonic() - start < 2.0 + 10  # the stall limit plus the probe and the config's download
    assert not [name for name in cached_files(tmp_path) if name.endswith(".incomplete")]
    assert len(cached_files(tmp_path)) == 1  # the config only: no partial or unverified weights


@pytest.mark.slow  # seconds of subprocesses or compiles: CI runs it, the quick loop does not
def test_two_processes_fill_an_empty_cache_at_once(hub, a0, tmp_path):
    script = ("import alphanet_zoo, torch\n"
              "m = alphanet_zoo.load('a0', pretrained=True)\n"
              "print(float(m.classifier.bias.sum()))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    expected = float(a0.classifier.bias.detach().sum())
    assert all(abs(float(out) - expected) < 1e-3 for out, _ in outs)
    assert len(cached_files(tmp_path)) == 2  # one verified copy of each file
    load("a0", pretrained=True)  # and it verifies


def test_unpublished_weights_say_how_to_get_them(hub):
    with pytest.raises(WeightsUnavailableError, match=r"no repository alphanet-zoo/alphanet-a6.*alphanet-extract"):
        load("a6", pretrained=True)
    with pytest.raises(WeightsUnavailableError, match="custom architecture"):
        load(alphanet_zoo.SEARCH_SPACE.sample(3), pretrained=True)


def test_timm_and_torch_hub_factories_load_once_through_load(hub, a0, monkeypatch):
    """timm.create_model and hubconf go through load() and build one model (one AlphaNet constructed) per call."""
    timm = pytest.importorskip("timm")
    built = []
    original = AlphaNet.__init__
    monkeypatch.setattr(AlphaNet, "__init__", lambda self, *a, **k: built.append(a) or original(self, *a, **k))

    model = timm.create_model("alphanet_a0", pretrained=True, drop_rate=0.25, drop_path_rate=0.1)
    assert len(built) == 1 and model.training  # timm's models come in train mode
    assert model.dropout.p == 0.25 and model.stages[-1][-1].drop_connect_rate > 0
    assert model.pretrained_cfg == a0.pretrained_cfg and same(logits(model.eval()), logits(a0))
    built.clear()
    headless = timm.create_model("alphanet_a0", pretrained=True, num_classes=0, global_pool="").eval()
    with torch.no_grad():  # no pooling, no classifier: the feature mix at every position
        unpooled = a0.mix_act(a0.feature_mix(a0.forward_features(X)))
    assert len(built) == 1 and same(logits(headless), unpooled)
    built.clear()
    torch_hub = torch.hub.load(str(REPO), "alphanet_a0", source="local", pretrained=True)
    assert len(built) == 1 and not torch_hub.training and same(logits(torch_hub), logits(a0))
    built.clear()
    maps = torch.hub.load(str(REPO), "alphanet_a0", source="local", pretrained=True, features_only=True,
                          out_indices=(4,))(X)
    assert len(built) == 1 and same(maps[0], a0.forward_intermediates(X, indices=(4,), intermediates_only=True)[0])
    with pytest.raises(WeightsUnavailableError, match="alphanet-a6"):
        timm.create_model("alphanet_a6", pretrained=True)  # no published weights: the error load() gives


@pytest.mark.slow
def test_round_trips_folder_file_and_supernet(a0, a0_folder, official_checkpoint, tmp_path, monkeypatch):
    assert sorted(p.name for p in a0_folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert same(logits(load("a0", weights=a0_folder)), logits(a0))
    assert same(logits(load(a0_folder)), logits(a0))  # a folder alone names its architecture
    assert same(logits(load("a0", weights=a0_folder.parent)), logits(a0))  # a folder of per-model folders
    assert same(logits(load("a0", weights=a0_folder / "model.safetensors")), logits(a0))
    assert same(logits(load("a0", weights=official_checkpoint)), logits(a0))
    torch.save(a0.state_dict(), tmp_path / "a0.pth")
    assert same(logits(load("a0", weights=tmp_path / "a0.pth")), logits(a0))
    with pytest.raises(InputError, match="holds architecture"):
        load("a5", weights=a0_folder)
    with pytest.raises(CheckpointError, match="does not match"):
        load("a5", weights=a0_folder / "model.safetensors")
    with pytest.raises(InputError, match="not both"):
        load("a0", pretrained=True, weights=a0_folder)
    random_record = load("a0", weights="random").pretrained_cfg
    assert random_record.origin == "random" and "random initialisation" in random_record.source


def test_a_name_that_is_also_a_folder_is_ambiguous(a0, a0_folder, monkeypatch):
    monkeypatch.chdir(a0_folder.parent)  # holds the folder a0/
    with pytest.raises(InputError, match=r"'a0' names both a published model and the path \./a0.*'\./a0'"):
        load("a0")
    assert same(logits(load("./a0")), logits(a0))
    assert load(alphanet_zoo.get_arch("a0")).pretrained_cfg.origin == "random"
    (a0_folder.parent / "random").mkdir(exist_ok=True)
    with pytest.raises(InputError, match="ambiguous"):
        load("a0", weights="random")


@pytest.mark.slow
def test_a_fine_tuned_head_travels_through_every_loader(a0, tmp_path):
    ten = alphanet_zoo.AlphaNet("a0", num_classes=10).eval()
    ten.load_state_dict({k: v for k, v in a0.state_dict().items() if not k.startswith("classifier.")}, strict=False)
    ten.reset_classifier(10, labels=[f"class{i}" for i in range(10)])
    folder = ten.save_pretrained(tmp_path / "ten")
    for model in (load(folder), load("a0", weights=folder), load(alphanet_zoo.get_arch("a0"), weights=folder),
                  load("a0", weights=folder, num_classes=10)):
        assert model.num_classes == 10 and same(logits(model), logits(ten))  # the head the weights have
        assert model.pretrained_cfg.labels == tuple(f"class{i}" for i in range(10))
    five = load(folder, num_classes=5)  # a different count gives a fresh head on the same backbone
    assert five.num_classes == 5 and five.pretrained_cfg.labels is None
    with torch.no_grad():
        assert same(five.forward_head(five.forward_features(X), pre_logits=True),
                    ten.forward_head(ten.forward_features(X), pre_logits=True))
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


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.__setitem__("stem.conv.weight", s["stem.conv.weight"].to(torch.int32)),
     "wrong type.*stem.conv.weight"),
    (lambda s: s["classifier.bias"].fill_(float("nan")), "NaN or infinity.*classifier.bias"),
    (lambda s: s["stages.0.0.dw.bn.weight"].__setitem__(0, float("inf")), "NaN or infinity"),
])
def test_weights_of_the_wrong_kind_or_not_finite_are_refused(a0, tmp_path, damage, message):
    state = {k: v.clone() for k, v in a0.state_dict().items()}
    damage(state)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=message):
        load("a0", weights=tmp_path / "bad.pth")


def test_config_record_and_model_card(a0_folder):
    config = json.loads((a0_folder / "config.json").read_text())
    assert config["format"] == "alphanet_zoo.model/3"
    assert config["architecture"] == alphanet_zoo.get_arch("a0").to_dict()
    assert config["num_classes"] == 1000 and config["name"] == "a0" and config["license"] == "cc-by-nc-4.0"
    assert config["label_set"] == "imagenet-1k" and config["labels"][0] == "tench" and len(config["labels"]) == 1000
    assert config["preprocessing"] == {"resolution": 192, "resize_size": 256, "crop_size": 224,
                                       "interpolation": "bicubic", "mean": list(IMAGENET_MEAN),
                                       "std": list(IMAGENET_STD)}
    assert config["published"]["top1"] == 77.87 and config["published"]["mflops"] == 203
    assert config["mflops"] == pytest.approx(203.39, abs=0.01) and config["params"] == 8_954_184
    assert config["calibrated"] is True and config["calibration"]["seed"] == 0 and config["measured"] == []
    card = (a0_folder / "README.md").read_text()
    yaml = pytest.importorskip("yaml")
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "cc-by-nc-4.0" and front["library_name"] == "alphanet_zoo"
    assert "imagenet-1k" in front["datasets"] and "image-classification" in front["tags"]
    assert "model-index" not in front  # nothing was measured on these weights: the paper's number is no result
    assert "| paper (published for this architecture, not measured on these weights) | 77.87" in card
    assert "CC-BY-NC 4.0" in card


def test_measured_numbers_go_to_the_hub_metadata_and_uncalibrated_weights_say_so(supernet, tmp_path):
    model = supernet.extract("a0")
    folder = model.save_pretrained(tmp_path / "raw")
    config = json.loads((folder / "config.json").read_text())
    assert config["calibrated"] is False and config["calibration"] is None
    assert "BatchNorm not calibrated" in (folder / "README.md").read_text()
    model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg, measured=(
        Measurement(top1=12.5, top5=30.0, images=800, data="imagenet val subset", calibrated=False),))
    folder = model.save_pretrained(tmp_path / "measured")
    yaml = pytest.importorskip("yaml")
    front = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    values = {m["name"]: m["value"] for r in front["model-index"][0]["results"] for m in r["metrics"]}
    assert values == {"top-1 accuracy (measured on these weights)": 12.5,
                      "top-5 accuracy (measured on these weights)": 30.0}
    assert alphanet_zoo.load(folder).pretrained_cfg.measured == model.pretrained_cfg.measured


@pytest.mark.parametrize("junk, message", [
    ({"name": 5}, "name must be a string"),
    ({"measured": [{"top1": "high", "images": 5, "data": "x"}]}, r"measured\[0\]\.top1 must be a number"),
    ({"num_classes": "many"}, "num_classes must be an integer"),
    ({"labels": ["a"]}, "labels must be a list of 1000"),
    ({"calibrated": False}, "calibrated is False but calibration is set"),
    ({"license": ["x"]}, "license must be a string"),
    ({"surprise": 1}, "unknown key 'surprise'"),
    ({"format": "alphanet_zoo.model/9"}, "written by another version"),
    ({"preprocessing": {"resolution": 192, "std": [0, 1, 1]}}, "std must be 3 finite numbers above 0"),
])
def test_junk_in_config_json_is_refused_at_load(a0_folder, tmp_path, junk, message):
    import shutil

    folder = tmp_path / "junk"
    shutil.copytree(a0_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(junk)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=message):
        load(folder)


def test_save_pretrained_writes_usual_modes_and_nothing_half_written(a0, tmp_path, monkeypatch):
    folder = a0.save_pretrained(tmp_path / "modes")
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {
        "README.md": "0o644", "config.json": "0o644", "model.safetensors": "0o644"}
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    import safetensors.torch

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(alphanet_zoo.OutputError, match="No space left"):
        a0.save_pretrained(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # as it was, and no temporary litter


def _small_model(seed: int) -> AlphaNet:
    torch.manual_seed(seed)
    return AlphaNet(alphanet_zoo.SEARCH_SPACE.smallest(), 10).eval()


def _interrupt_rename(monkeypatch, call: int) -> None:
    """Make the ``call``-th rename of `atomic_path` raise KeyboardInterrupt (Ctrl-C between writes)."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == call:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(alphanet_zoo._io.os, "replace", replace)


def _state_of(folder: Path, old=None, new=None) -> str:
    """'absent', 'old' or 'new'; anything else (a mix, a temporary left) fails the test."""
    if not folder.exists() or not (folder / "model.safetensors").exists():
        if folder.exists():
            with pytest.raises(InputError, match="not a save_pretrained folder.*no model.safetensors"):
                load(folder)
        litter = [p.name for p in folder.parent.iterdir() if p.name.endswith(".tmp")]
        litter += [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] if folder.exists() else []
        assert litter == []
        return "absent"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = load(folder)
    for name, model in (("old", old), ("new", new)):
        if model is not None and loaded.pretrained_cfg == model.pretrained_cfg and same(logits(loaded), logits(model)):
            return name
    raise AssertionError(f"{folder} holds a mix of two saves")


@pytest.mark.parametrize("call", [1, 2, 3])
def test_an_interrupted_save_pretrained_leaves_the_folder_whole_or_absent(tmp_path, monkeypatch, call):
    old, new = _small_model(0), _small_model(1)
    new.pretrained_cfg = dataclasses.replace(new.pretrained_cfg, source="the second save")
    _interrupt_rename(monkeypatch, call)
    try:
        new.save_pretrained(tmp_path / "fresh")
    except KeyboardInterrupt:
        pass
    assert _state_of(tmp_path / "fresh", new=new) == ("absent" if call == 1 else "new")  # one rename only

    monkeypatch.undo()
    old.save_pretrained(tmp_path / "existing")
    _interrupt_rename(monkeypatch, call)
    try:
        new.save_pretrained(tmp_path / "existing")
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    assert _state_of(tmp_path / "existing", old, new) in ("old", "absent")  # three renames: never all done
    assert _state_of(new.save_pretrained(tmp_path / "existing"), old, new) == "new"  # saving again mends it


def test_push_to_hub_then_load_it_back(hub, a0):
    url = a0.push_to_hub("someone/my-a0", token="hf_test_token")
    assert url.startswith(f"{hub.url}/someone/my-a0/commit/")
    assert set(hub.repos["someone/my-a0"].files[url.rsplit("/", 1)[1]]) == {"README.md", "config.json",
                                                                           "model.safetensors"}
    assert same(logits(load("hf-hub:someone/my-a0")), logits(a0))


def test_push_to_an_unreachable_hub_is_one_clear_error(a0, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())
    with pytest.raises(WeightsUnavailableError, match="pushing to the Hub repository someone/x failed"):
        a0.push_to_hub("someone/x", token="hf_test_token")


def test_extract_command_writes_hub_ready_folders_and_pushes(hub, official_checkpoint, a0, tmp_path, capsys):
    from alphanet_zoo.commands import extract_main

    out = tmp_path / "out"
    assert extract_main(["--supernet", str(official_checkpoint), "--arch", "a0", "--out", str(out),
                         "--push", "myorg"]) == 0
    raw = load("a0", weights=out / "a0")
    assert same(logits(raw), logits(a0)) and not raw.pretrained_cfg.calibrated
    assert same(logits(load("hf-hub:myorg/alphanet-a0")), logits(a0))
    assert "a0: pushed" in capsys.readouterr().out


def test_extract_push_to_an_unreachable_hub_is_one_line(official_checkpoint, tmp_path, capsys, monkeypatch):
    from alphanet_zoo.commands import extract_main

    monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())
    assert extract_main(["--supernet", str(official_checkpoint), "--arch", "a0", "--out", str(tmp_path / "o"),
                         "--push", "myorg"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("alphanet-extract: error: pushing to the Hub repository myorg/alphanet-a0 failed")
    assert not any("Traceback" in line for line in err)


# ---- the client's API as this package calls it ------------------------------------------------------

HUB_CALLS = {"hf_hub_download", "get_hf_file_metadata", "hf_hub_url", "try_to_load_from_cache", "HfApi",
             "create_repo", "upload_folder", "ModelCardData", "EvalResult", "ModelCard"}


def _calls_into_the_client():
    """(callable name, keyword) for every keyword this package passes to a huggingface_hub callable."""
    found = set()
    for path in (REPO / "alphanet_zoo").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in HUB_CALLS:
                    found |= {(name, kw.arg) for kw in node.keywords if kw.arg}
    return found


def test_every_keyword_passed_to_huggingface_hub_exists_in_the_installed_client():
    """Run with PYTHONPATH at an unpacked older huggingface_hub wheel to check the declared minimum."""
    import huggingface_hub
    import huggingface_hub.errors

    calls = _calls_into_the_client()
    assert {name for name, _ in calls} >= {"hf_hub_download", "get_hf_file_metadata", "EvalResult"}
    for name, keyword in calls:
        target = getattr(huggingface_hub, name)
        params = inspect.signature(target).parameters
        assert keyword in params, f"huggingface_hub {huggingface_hub.__version__}: {name}() has no {keyword}="
    for error in ("EntryNotFoundError", "HfHubHTTPError", "LocalEntryNotFoundError", "OfflineModeIsEnabled",
                  "RepositoryNotFoundError", "RevisionNotFoundError"):
        assert hasattr(huggingface_hub.errors, error)
    declared = next(line for line in (REPO / "setup.cfg").read_text().splitlines() if "huggingface-hub>=" in line)
    assert declared.strip() == "huggingface-hub>=0.25"


def test_unpublished_weights_say_how_to_build_them_not_to_retry(monkeypatch):
    """The package's models have no published weights yet: the error says to build them, not to reconnect."""
    monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())
    with pytest.raises(WeightsUnavailableError) as raised:
        load("a0", pretrained=True)
    message = str(raised.value)
    assert "not published on the Hub yet" in message and "alphanet-extract --supernet" in message
    assert "and retry" not in message
