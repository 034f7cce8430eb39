"""The spine's guarantees across commands: one calibration, one metadata record, one weights grammar,
one output convention. Each test runs the real commands end to end on tiny generated images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import alphanet_zoo
from _train_helpers import make_image_folder
from alphanet_zoo.commands import extract_main, models_main, predict_main

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "tests" / "parity" / "photo.png"
# synsets whose sorted order is not their ImageNet order everywhere: n04589890 is 904, n01440764 is 0
SYNSETS = ["n04589890", "n01440764", "n02086240"]
CALIB = ["--calib-batches", "2", "--calib-batch-size", "4", "--seed", "5"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("spine")
    make_image_folder(root / "train", SYNSETS, 3, size=60, seed=0)
    make_image_folder(root / "val", SYNSETS, 2, size=60, seed=1)
    return root


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_extract_then_eval_equals_eval_with_calibration(folders, official_checkpoint, tmp_path, capsys):
    from alphanet_zoo.commands.eval import main as eval_main

    train, val = folders / "train", folders / "val"
    assert extract_main(["--supernet", str(official_checkpoint), "--arch", "a0", "--out", str(tmp_path / "w"),
                         "--calib-data", str(train), "--workers", "0", *CALIB]) == 0
    assert eval_main(["--arch", "a0", "--weights", str(tmp_path / "w"), "--data", str(val), "--workers", "0",
                      "--batch-size", "4", "--out", str(tmp_path / "r1.json"),
                      "--save-predictions", str(tmp_path / "p1.jsonl")]) == 0
    assert eval_main(["--arch", "a0", "--weights", str(official_checkpoint), "--data", str(val), "--workers", "0",
                      "--batch-size", "4", "--calib-data", str(train), *CALIB, "--out", str(tmp_path / "r2.json"),
                      "--save-predictions", str(tmp_path / "p2.jsonl")]) == 0
    capsys.readouterr()
    assert _lines(tmp_path / "p1.jsonl") == _lines(tmp_path / "p2.jsonl")  # every image's top-5, in order
    r1, r2 = (json.loads((tmp_path / f"r{i}.json").read_text()) for i in (1, 2))
    assert (r1["correct1"], r1["correct5"], r1["images"]) == (r2["correct1"], r2["correct5"], r2["images"]) \
        and r1["images"] == len(SYNSETS) * 2
    # both say the weights were calibrated, with the same recipe, in the same record field
    assert r1["model"]["calibration"] == r2["model"]["calibration"] and r1["calibrated"] and r2["calibrated"]
    # the labels are the canonical ImageNet indices of the synset folders
    index = alphanet_zoo.imagenet.synset_to_index()
    assert {(Path(p["path"]).parent.name, p["target"]) for p in _lines(tmp_path / "p1.jsonl")} == \
        {(s, index[s]) for s in SYNSETS}


@pytest.mark.slow  # seconds of subprocesses or compiles: CI runs it, the quick loop does not
def test_a_search_candidate_is_reproduced_by_extract_and_eval(folders, official_checkpoint, tmp_path, capsys):
    from alphanet_zoo.commands.eval import main as eval_main
    from alphanet_zoo.commands.search import main as search_main

    train, val = folders / "train", folders / "val"
    history = tmp_path / "history.jsonl"
    assert search_main(["--supernet", str(official_checkpoint), "--flops", "260", "--flops-min", "230",
                        "--data", str(val), "--calib-data", str(train), *CALIB, "--batch-size", "4",
                        "--workers", "0", "--val-images", "0", "--population", "2", "--generations", "0",
                        "--out", str(tmp_path / "best.json"), "--history", str(history)]) == 0
    rows = _lines(history)
    assert len(rows) == 2
    for k, row in enumerate(rows):
        arch_file = tmp_path / f"cand{k}.json"
        arch_file.write_text(json.dumps(row.get("architecture", row.get("arch"))))
        assert extract_main(["--supernet", str(official_checkpoint), "--arch", str(arch_file), "--out",
                             str(tmp_path / "w"), "--calib-data", str(train), "--workers", "0", *CALIB]) == 0
        out = tmp_path / f"r{k}.json"
        assert eval_main(["--arch", str(arch_file), "--weights", str(tmp_path / "w"), "--data", str(val),
                          "--workers", "0", "--batch-size", "4", "--out", str(out)]) == 0
        assert json.loads(out.read_text())["top1"] == row["top1"]
    capsys.readouterr()


def test_a_fine_tuned_head_survives_export_and_its_metadata_is_the_folders_record(supernet, tmp_path, capsys):
    import onnxruntime

    from alphanet_zoo.commands.export import main as export_main

    model = supernet.extract("a0")
    model.reset_classifier(10, labels=[f"label{i}" for i in range(10)])
    folder = model.save_pretrained(tmp_path / "ten")
    out = tmp_path / "ten.onnx"
    assert export_main(["--arch", "a0", "--weights", str(folder), "--out", str(out)]) == 0
    capsys.readouterr()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": np.zeros((2, 3, 192, 192), np.float32)})[0]
    assert logits.shape == (2, 10)  # the 10-class head the folder holds, not a random 1000-class one
    config = json.loads(session.get_modelmeta().custom_metadata_map["config"])
    assert config == json.loads((folder / "config.json").read_text())  # the very same record


def test_json_puts_only_json_on_stdout(official_checkpoint, folders, tmp_path, capsys):
    from alphanet_zoo.commands.eval import main as eval_main
    from alphanet_zoo.commands.bench import main as bench_main

    assert models_main(["--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)
    assert predict_main([str(PHOTO), str(PHOTO), "--arch", "a0", "--weights", "random", "--json", "--topk", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(len(json.loads(line)["top"]) == 2 for line in lines)  # JSON lines per image
    assert bench_main(["--arch", "a0", "--weights", "random", "--backend", "eager", "--batch-size", "1",
                       "--threads", "1", "--warmup", "0", "--repeats", "1", "--no-gemm", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"]
    assert eval_main(["--arch", "a0", "--weights", str(official_checkpoint), "--data", str(folders / "val"),
                      "--workers", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == len(SYNSETS) * 2


@pytest.mark.slow  # seconds of subprocesses or compiles: CI runs it, the quick loop does not
def test_random_weights_work_on_export_bench_and_predict(tmp_path, capsys):
    from alphanet_zoo.commands.bench import main as bench_main
    from alphanet_zoo.commands.export import main as export_main

    assert export_main(["--arch", "a0", "--weights", "random", "--out", str(tmp_path / "r.onnx"), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["config"]["source"].startswith("random initialisation")
    assert exported["config"]["origin"] == "random" and exported["config"]["license"] is None
    assert bench_main(["--arch", "a0", "--weights", "random", "--backend", "eager", "--batch-size", "1",
                       "--threads", "1", "--warmup", "0", "--repeats", "1", "--no-gemm"]) == 0
    assert predict_main([str(PHOTO), "--arch", "a0", "--weights", "random"]) == 0
    assert "1." in capsys.readouterr().out


def test_the_calibration_record_says_what_was_done(official_checkpoint, folders, tmp_path, capsys):
    assert extract_main(["--supernet", str(official_checkpoint), "--arch", "a0", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "no --calib-data" in err and "uncalibrated" in err  # extracting without calibration says so
    config = json.loads((tmp_path / "a0" / "config.json").read_text())
    assert config["calibrated"] is False and config["measured"] == []
    assert "BatchNorm not calibrated" in (tmp_path / "a0" / "README.md").read_text()
    model = alphanet_zoo.load(tmp_path / "a0")
    assert model.pretrained_cfg.calibration is None and model.pretrained_cfg.published.top1 == 77.87


def test_files_are_written_with_the_usual_mode(official_checkpoint, folders, tmp_path, capsys):
    import os
    import stat

    from alphanet_zoo.commands.eval import main as eval_main

    old = os.umask(0o022)
    try:
        assert extract_main(["--supernet", str(official_checkpoint), "--arch", "a0", "--out", str(tmp_path / "w")]) == 0
        assert eval_main(["--arch", "a0", "--weights", str(tmp_path / "w"), "--data", str(folders / "val"),
                          "--workers", "0", "--out", str(tmp_path / "r.json"),
                          "--save-predictions", str(tmp_path / "p.jsonl")]) == 0
        torch.manual_seed(0)
        Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    finally:
        os.umask(old)
    capsys.readouterr()
    written = [*(tmp_path / "w" / "a0").iterdir(), tmp_path / "r.json", tmp_path / "p.jsonl"]
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} == {p.name: 0o644 for p in written}
    assert not [p for p in tmp_path.rglob(".*.tmp")]
