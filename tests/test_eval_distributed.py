"""``alphanet-eval`` under ``torchrun`` (gloo on loopback, one thread per process): the images are
split across processes in whole batches, every process calibrates alike, and rank 0 writes the very
results and predictions one process writes — which are still the official pipeline's predictions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _search_helpers import lines, torchrun
from _train_helpers import make_image_folder

from alphanet_zoo.imagenet import synsets

pytestmark = pytest.mark.slow

SYNSETS = ["n01440764", "n01443537", "n04589890"]  # classes 0, 1 and 904


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_dist")
    make_image_folder(root / "train", SYNSETS, 3, size=48, seed=0)
    make_image_folder(root / "val", SYNSETS, 5, size=48, seed=1)  # 15 images: batches of 4, 4, 4, 3
    return root


def _run(data: Path, checkpoint: Path, nproc: int, folder: Path, calibrate: bool) -> tuple[dict, list[dict]]:
    folder.mkdir()
    args = ["--arch", "a0", "--supernet", checkpoint, "--data", data / "val", "--batch-size", "4", "--workers", "0",
            "--out", folder / "r.json", "--save-predictions", folder / "p.jsonl"]
    if calibrate:
        args += ["--calib-data", data / "train", "--calib-batches", "2", "--calib-batch-size", "4", "--seed", "7"]
    done = torchrun("alphanet-eval", args, nproc, folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((folder / "r.json").read_text()), lines(folder / "p.jsonl")


@pytest.mark.parametrize("calibrate", [False, True], ids=["uncalibrated", "calibrated"])
def test_one_and_two_processes_write_the_same_results(data, official_checkpoint, tmp_path, calibrate):
    (one, p1), (two, p2) = (_run(data, official_checkpoint, n, tmp_path / str(n), calibrate) for n in (1, 2))
    assert p1 == p2 and len(p1) == 15  # every image once (no padding counted twice), in the same order
    for key in ("images", "correct1", "correct5", "top1", "top5", "bad_images", "calibrated", "model", "calibration"):
        assert one[key] == two[key], key
    assert (one["world_size"], two["world_size"]) == (1, 2)
    # the counts are the predictions' own
    assert two["correct1"] == sum(p["top5"][0] == p["target"] for p in p2)
    assert two["correct5"] == sum(p["target"] in p["top5"] for p in p2)
    if not calibrate:
        _official_predictions_agree(p2, data / "val", official_checkpoint)


def _official_predictions_agree(predictions: list[dict], root: Path, checkpoint: Path) -> None:
    """Each image's top-1 is what the official evaluation pipeline (written out in test_eval) gives."""
    from test_eval import official_logits

    from alphanet_zoo import Supernet

    model = Supernet.from_checkpoint(checkpoint).extract("a0")
    index = {s: i for i, s in enumerate(synsets())}
    for p in predictions:
        path = root / p["path"]
        assert p["target"] == index[path.parent.name]
        with torch.no_grad():
            assert p["top5"][0] == int(official_logits(model, path).argmax())
