"""Shared fixtures: the deterministic official-layout checkpoint and the official reference outputs.

Parity data lives in ``tests/parity`` (a copy of the workplace's ``shared/parity``; a test checks the
two agree when both exist). ``ALPHANET_PARITY_DIR`` points the suite at another parity folder; every
``reference_salt*.json`` in it is checked, each against the checkpoint built with its own salt.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one intra-op thread per pytest-xdist worker (and in the commands the tests start): the workers
    # already fill the cores, and OpenMP teams that wait for a busy core cost more than they give
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
VENDORED_PARITY = REPO / "tests" / "parity"
SHARED_PARITY = REPO.parent / "shared" / "parity"
PARITY_DIR = Path(os.environ.get("ALPHANET_PARITY_DIR", VENDORED_PARITY))
REFERENCE_FILES = sorted(PARITY_DIR.glob("reference_salt*.json"))
# the official name of each reference subnet -> our registry name
REFERENCE_NAMES = {"a5_1": "a5_base"}


def det(seed: int, shape) -> torch.Tensor:
    """The parity inputs: numpy RandomState(seed).standard_normal(shape) as float32."""
    return torch.from_numpy(np.random.RandomState(seed).standard_normal(shape).astype(np.float32))


def state_dict_sha256(state: dict, keys_file: Path) -> str:
    """sha256 over key bytes then tensor bytes, in the official key order (the reference's definition)."""
    keys = json.loads(keys_file.read_text())["keys"]
    h = hashlib.sha256()
    for key, _shape in keys:
        h.update(key.encode())
        h.update(state[key].contiguous().numpy().tobytes())
    return h.hexdigest()


def make_official_checkpoint(out: Path, salt: int) -> Path:
    """Build the deterministic checkpoint in the official release's layout with the workplace's script."""
    script = PARITY_DIR / "make_official_checkpoint.py"
    subprocess.run([sys.executable, str(script), str(out), "--salt", str(salt),
                    "--keys", str(PARITY_DIR / "official_supernet_keys.json")], check=True)
    return out


@pytest.fixture(scope="session", params=REFERENCE_FILES, ids=lambda p: p.stem)
def reference(request) -> dict:
    """One official reference file (``reference_salt0.json`` unless more are present)."""
    return json.loads(request.param.read_text())


_checkpoints: dict[int, Path] = {}


@pytest.fixture(scope="session")
def official_checkpoint_factory(tmp_path_factory):
    """salt -> path of the official-layout checkpoint, built once per session and salt."""

    def build(salt: int) -> Path:
        if salt not in _checkpoints:
            folder = tmp_path_factory.mktemp(f"official_salt{salt}")
            _checkpoints[salt] = make_official_checkpoint(folder / "alphanet_pretrained.pth.tar", salt)
        return _checkpoints[salt]

    return build


@pytest.fixture(scope="session")
def official_checkpoint(official_checkpoint_factory) -> Path:
    """The salt-0 official-layout checkpoint (about 96 MB), in a session temporary folder."""
    return official_checkpoint_factory(0)


@pytest.fixture(scope="session")
def supernet(official_checkpoint):
    """The supernet loaded from the salt-0 official checkpoint. Do not modify it in tests."""
    from alphanet_zoo import Supernet

    return Supernet.from_checkpoint(official_checkpoint).eval()


@pytest.fixture(scope="module")
def tiny_model():
    """A small random 1000-class AlphaNet (the smallest arch, first stages at width 24), named "tiny":
    cheap to export to every format."""
    from alphanet_zoo import SEARCH_SPACE, AlphaNet

    smallest = SEARCH_SPACE.smallest()
    arch = dataclasses.replace(smallest, width=(24, 24, *smallest.width[2:]))
    torch.manual_seed(0)
    model = AlphaNet(arch).eval()
    model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg, name="tiny")
    return model
