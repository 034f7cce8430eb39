"""The zoo's own commands: alphanet-models, alphanet-predict, alphanet-extract errors, torch.hub entry points."""
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

import alphanet_zoo
from alphanet_zoo.commands import extract_main, models_main, predict_main

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "tests" / "parity" / "photo.png"


def test_models_table_and_json(capsys):
    assert models_main([]) == 0
    out = capsys.readouterr().out
    assert "a5_base" in out and "594.79" in out and "80.78" in out
    assert models_main(["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == alphanet_zoo.list_models()
    assert rows[0]["mflops"] == 203.39 and rows[0]["params"] == 8_954_184


def test_console_script_is_installed():
    run = subprocess.run(["alphanet-models", "--json"], capture_output=True, text=True)
    assert run.returncode == 0 and json.loads(run.stdout)[-1]["name"] == "a6"


def test_predict_matches_the_library(official_checkpoint, supernet, capsys):
    assert predict_main([str(PHOTO), "--arch", "a0", "--supernet", str(official_checkpoint), "--topk", "3",
                         "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    expected = alphanet_zoo.predict(supernet.extract("a0"), [Image.open(PHOTO)], topk=3)[0]
    assert line["top"] == expected
    assert [r["index"] for r in expected] == torch.topk(_logits(supernet, PHOTO), 3).indices.tolist()
    assert expected[0]["name"] == alphanet_zoo.imagenet.class_names()[expected[0]["index"]]


def _logits(supernet, path):
    model = supernet.extract("a0")
    with torch.no_grad():
        return model(alphanet_zoo.transforms(model)(Image.open(path)).unsqueeze(0))[0]


@pytest.mark.parametrize("argv, message", [
    (["nope.png", "--arch", "a0", "--random"], None),
    (["missing.png", "--arch", "a0"], "image not found: missing.png"),
    ([str(PHOTO), "--arch", "a9"], "unknown AlphaNet model 'a9'"),
    ([str(PHOTO), "--arch", "a0", "--weights", "absent_folder"], "not found"),
])
def test_predict_errors_are_one_line(argv, message, capsys):
    if message is None:
        with pytest.raises(SystemExit):
            predict_main(argv)
        return
    assert predict_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alphanet-predict: error:") and message in err and "\n" not in err


def test_predict_without_weights_points_to_the_alternatives(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert predict_main([str(PHOTO), "--arch", "a0"]) == 2
    err = capsys.readouterr().err
    assert "not cached" in err and "alphanet-extract" in err


def test_extract_errors(tmp_path, capsys):
    assert extract_main(["--supernet", str(tmp_path / "none.pth"), "--arch", "a0", "--out", str(tmp_path)]) == 2
    assert "supernet checkpoint not found" in capsys.readouterr().err
    bad = tmp_path / "arch.json"
    bad.write_text(json.dumps({**alphanet_zoo.get_arch("a0").to_dict(), "depth": [1, 3, 3]}))
    assert extract_main(["--supernet", str(bad), "--arch", str(bad), "--out", str(tmp_path)]) == 2
    assert "depth needs 7 entries" in capsys.readouterr().err


def test_torch_hub_entry_points(official_checkpoint, supernet):
    model = torch.hub.load(str(REPO), "alphanet_a0", source="local", weights=str(official_checkpoint))
    x = torch.randn(1, 3, 192, 192)
    with torch.no_grad():
        assert torch.allclose(model(x), supernet.extract("a0")(x), rtol=0, atol=1e-6)
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = {n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")}
    assert {f"alphanet_{m}" for m in alphanet_zoo.list_models()} | {"supernet"} <= entries
    assert hubconf.alphanet_a5().arch == alphanet_zoo.get_arch("a5")


def test_extract_calibrates_reproducibly(official_checkpoint, supernet, tmp_path):
    import numpy as np
    from safetensors.torch import load_file

    train = tmp_path / "train"
    rng = np.random.RandomState(0)
    for synset in ("n01440764", "n01443537"):
        (train / synset).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.randint(0, 255, (40 + 7 * i, 56, 3), dtype=np.uint8)).save(train / synset / f"{i}.png")
    outs = []
    for run in ("first", "second"):
        out = tmp_path / run
        assert extract_main(["--supernet", str(official_checkpoint), "--arch", "a0", "--out", str(out),
                             "--calib-data", str(train), "--calib-batches", "2", "--calib-batch-size", "4",
                             "--seed", "3", "--workers", "0"]) == 0
        outs.append(load_file(out / "a0" / "model.safetensors"))
    # same seed, same statistics (to the kernels' summation order)
    assert all(torch.allclose(outs[0][k], outs[1][k], rtol=1e-6, atol=1e-7) for k in outs[0])
    uncalibrated = supernet.extract("a0").state_dict()
    assert not torch.equal(outs[0]["stem.bn.running_mean"], uncalibrated["stem.bn.running_mean"])
    assert torch.equal(outs[0]["stem.conv.weight"], uncalibrated["stem.conv.weight"])
    config = json.loads((tmp_path / "first" / "a0" / "config.json").read_text())
    assert config["calibration"]["seed"] == 3 and config["calibration"]["num_batches"] == 2
