"""Helpers for the search and distributed-evaluation tests: held-out images whose top-1 differs from
subnet to subnet, and ``torchrun`` runs of the commands on loopback gloo."""
from __future__ import annotations

import collections
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _train_helpers import make_image_folder

BIN = Path(sys.executable).parent
TRAIN_SYNSETS = ["n01440764", "n01443537"]


def make_search_data(root: Path, checkpoint: Path, heldout: int = 10, crop_size: int = 64) -> tuple[Path, Path]:
    """A training folder, and held-out images each filed under the class most of a few calibrated
    random subnets predict for it: with the (untrained) test supernet, candidates then score
    differently (a labelling only; no expected value comes from it). ``crop_size``: the search's."""
    import torch

    from alphanet_zoo.calibration import calibrate
    from alphanet_zoo.data import TorchClassifier, calibration_batches, evaluate, labelled_samples
    from alphanet_zoo.imagenet import synsets
    from alphanet_zoo.search import sample_in_range
    from alphanet_zoo.search.evaluate import load_calibration_images, load_heldout_images
    from alphanet_zoo.supernet import Supernet

    train = make_image_folder(root / "train", TRAIN_SYNSETS, 4, size=40, seed=0)
    pool = make_image_folder(root / "pool", ["n01440764"], heldout, size=40, seed=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        supernet = Supernet.from_checkpoint(checkpoint).eval()
        calibration = load_calibration_images(calibration_batches(train, 2, 4, 0, 0, crop_size))
        samples, _ = labelled_samples(pool, 1000)
        images = load_heldout_images(samples, 4, crop_size, 0)
        rng = random.Random(0)
        votes = [collections.Counter() for _ in samples]
        for _ in range(6):
            arch = sample_in_range(230, 300, rng)
            model = calibrate(supernet.extract(arch), calibration.calibration(), arch.resolution)
            result = evaluate(TorchClassifier(model), images, resolution=arch.resolution, keep_predictions=True)
            for p in result.predictions:
                votes[p.index][p.top5[0]] += 1
    finally:
        torch.set_num_threads(threads)
    heldout_dir = root / "heldout"
    for sample, vote in zip(samples, votes):
        folder = heldout_dir / synsets()[vote.most_common(1)[0][0]]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample.path, folder / Path(sample.path).name)
    shutil.rmtree(pool)
    return train, heldout_dir


def torchrun(command: str, args: list, nproc: int, cwd: Path, timeout: float = 300,
             env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node N --no-python COMMAND ARGS``,
    one thread per process."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    environment.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), "--no-python", str(BIN / command), *map(str, args)],
                          cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread for a test module (import it there): the test machine's 2 cores are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
