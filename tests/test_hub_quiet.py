"""The Hub client stays quiet: its retry messages reach our logger at INFO, never stderr, and its
progress bars stay off; a download whose connection drops mid-body ends in one line."""
import importlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fake_hub import serving
from huggingface_hub.utils import are_progress_bars_disabled
from huggingface_hub.utils import tqdm as client_bar

import alphanet_zoo
from alphanet_zoo import AlphaNet, WeightsUnavailableError, load
from alphanet_zoo.hub_quiet import CLIENT_LOGGER, quiet_client

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "tests" / "parity" / "photo.png"
REPO_ID = "someone/tiny"
client_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")


@pytest.fixture
def bar_switch(monkeypatch):
    """The client's progress-bar switch, on and with one group's own setting, as a user may leave it."""
    monkeypatch.setattr(client_tqdm, "HF_HUB_DISABLE_PROGRESS_BARS", None)
    monkeypatch.setattr(client_tqdm, "progress_bar_states", {"_global": True, "someone.else": False})
    return client_tqdm.progress_bar_states


def client_state():
    client = logging.getLogger("huggingface_hub")
    return list(client.handlers), client.propagate


def test_within_the_block_the_clients_words_go_to_our_logger_and_its_bars_are_off(bar_switch, caplog, capfd):
    before = client_state()
    caplog.set_level(logging.DEBUG, logger="alphanet_zoo")
    client = logging.getLogger("huggingface_hub.file_download")
    with quiet_client():
        with quiet_client():  # blocks nest
            client.warning("Error while downloading\nTrying to resume download...")
        assert are_progress_bars_disabled() and client_bar(range(3), name="huggingface_hub.http_get").disable
        level = logging.getLogger("huggingface_hub").level
        logging.getLogger("huggingface_hub").setLevel(logging.DEBUG)  # HF_HUB_VERBOSITY=debug
        try:
            client.debug("a detail")
        finally:
            logging.getLogger("huggingface_hub").setLevel(level)
    ours = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert ours == [(CLIENT_LOGGER, logging.INFO, "Error while downloading\nTrying to resume download..."),
                    (CLIENT_LOGGER, logging.DEBUG, "a detail")]
    assert capfd.readouterr().err == ""
    assert client_state() == before  # the client's own handler and propagation, as they were
    assert bar_switch == {"_global": True, "someone.else": False} and not are_progress_bars_disabled()


def test_bars_the_user_asked_for_are_left_on(bar_switch, monkeypatch):
    monkeypatch.setattr(client_tqdm, "HF_HUB_DISABLE_PROGRESS_BARS", False)  # HF_HUB_DISABLE_PROGRESS_BARS=0
    with quiet_client():
        assert not are_progress_bars_disabled()
    assert bar_switch == {"_global": True, "someone.else": False}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    torch.manual_seed(0)
    return AlphaNet(alphanet_zoo.SEARCH_SPACE.smallest(), 10).eval().save_pretrained(
        tmp_path_factory.mktemp("published") / "tiny")


@pytest.fixture
def dropping_hub(tiny_folder, tmp_path, monkeypatch):
    """A loopback Hub whose connection closes halfway through the weights, on every try."""
    with serving(monkeypatch, tmp_path / "hf_home") as server:
        server.add_folder(REPO_ID, tiny_folder)
        server.faults[(REPO_ID, "model.safetensors")] = "drop"
        yield server


@pytest.mark.slow  # the client waits a second before each of its five resumes
def test_a_dropped_download_logs_the_clients_retries_at_info_and_nothing_on_stderr(dropping_hub, bar_switch,
                                                                                   caplog, capfd):
    before = client_state()
    caplog.set_level(logging.INFO, logger="alphanet_zoo")
    with pytest.raises(WeightsUnavailableError, match=r"downloading model\.safetensors from someone/tiny@main "
                                                      r"failed \(RemoteProtocolError"):
        load(f"hf-hub:{REPO_ID}", pretrained=True)
    retries = [r.getMessage() for r in caplog.records if r.name == CLIENT_LOGGER and r.levelno == logging.INFO]
    assert sum("Trying to resume download" in m for m in retries) >= 3 and "Max retries exceeded" in retries[-1]
    assert capfd.readouterr().err == ""
    assert client_state() == before and bar_switch == {"_global": True, "someone.else": False}


@pytest.mark.slow  # a subprocess, and the client waits a second before each of its five resumes
def test_the_command_says_one_line_when_the_connection_drops(dropping_hub):
    env = dict(os.environ, TQDM_POSITION="-1")  # the client's bars would show even without a terminal
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    env.pop("ALPHANET_DEBUG", None)
    done = subprocess.run([str(Path(sys.executable).with_name("alphanet-predict")), "--weights",
                           f"hf-hub:{REPO_ID}", str(PHOTO)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("alphanet-predict: error: downloading model.safetensors from someone/tiny@main failed")
    assert done.stdout == ""
