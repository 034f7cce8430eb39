"""timm's own scripts run our models as they are: inference.py, validate.py and train.py of timm v1.0.28
(``tests/data/timm_scripts``, unmodified) with ``--model alphanet_a0`` and no wrapper, each in a fresh
interpreter outside the repository; the start-up hook (``alphanet_zoo_timm.pth``) is what registers
the models there. Also: the hook itself (no torch at start-up, the off switch, a broken install never
breaks start-up) and that a wheel and an editable install both ship it."""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

timm = pytest.importorskip("timm", reason="timm is not installed (pip install alphanet_zoo[timm])")

import alphanet_zoo  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tests" / "data" / "timm_scripts"
PTH = REPO / "alphanet_zoo_timm.pth"
HOOK_MODULE = "_alphanet_zoo_timm_hook"
OFF_SWITCH = "ALPHANET_ZOO_NO_TIMM_HOOK"
# three JPEGs and a PNG of the package's own test images; IMAGES[k] is class k of the `decisive` model
IMAGES = [REPO / "alphanet_zoo" / "resources" / "images" / name
          for name in ("00_gradient_circles.jpg", "01_radial.jpg", "02_checkerboard.jpg", "05_rectangles.png")]
NOT_INSTALLED = "the start-up hook is not installed here: reinstall the package (pip install -e .)"
# what a fresh interpreter reports about the hook, without importing it
PROBE = (f"import sys; print(any(type(f).__module__ == {HOOK_MODULE!r} for f in sys.meta_path), "
         "'torch' in sys.modules, 'alphanet_zoo' in sys.modules, 'timm' in sys.modules)")


def _python(args: list, cwd: Path, env: dict | None = None, flags: tuple = ()) -> subprocess.CompletedProcess:
    """A fresh interpreter as a user starts one: outside the repository, no off switch, one intra-op thread
    (the suite's workers fill the cores already)."""
    environment = {k: v for k, v in os.environ.items() if k != OFF_SWITCH}
    environment.update({"OMP_NUM_THREADS": "1", **(env or {})})
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, *flags, *map(str, args)], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=600)


def _script(name: str, args: list, cwd: Path) -> subprocess.CompletedProcess:
    done = _python([SCRIPTS / name, "--model", "alphanet_a0", "--device", "cpu", *args], cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _copy_images(folder: Path, images: list[Path]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        shutil.copy(image, folder / image.name)


@pytest.fixture(scope="module")
def decisive(tmp_path_factory) -> tuple[alphanet_zoo.AlphaNet, Path]:
    """alphanet_a0 with seeded random weights and a classifier that puts IMAGES[k] in class k by a wide
    margin, saved as a plain state dict (our weights are not published). Its rows are the images'
    pooled features, centred and scaled: random weights alone give near-uniform outputs whose top-1 a
    resampling difference can flip, and timm's preprocessing resamples differently from ours."""
    torch.manual_seed(0)
    model = alphanet_zoo.AlphaNet("a0").eval()
    transform = alphanet_zoo.transforms(model)
    with torch.no_grad():
        x = torch.stack([transform(Image.open(path)) for path in IMAGES])
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        centre = features.mean(0)
        rows = 10 * (features - centre) / (features - centre).norm(dim=1, keepdim=True)
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(-10.0)
        model.classifier.weight[:len(IMAGES)] = rows
        model.classifier.bias[:len(IMAGES)] = -(rows @ centre)
    path = tmp_path_factory.mktemp("decisive") / "alphanet_a0.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_the_scripts_are_timms_unmodified():
    table = dict(re.findall(r"^\| (\S+) \| ([0-9a-f]{64}) \|$", (SCRIPTS / "README.md").read_text(), re.M))
    assert sorted(table) == ["LICENSE", "inference.py", "train.py", "validate.py"]
    assert {name: hashlib.sha256((SCRIPTS / name).read_bytes()).hexdigest() for name in table} == table


def test_the_startup_hook_waits_for_timm_without_importing_torch_and_switches_off(tmp_path):
    done = _python(["-c", PROBE], tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.split() == ["True", "False", "False", "False"], NOT_INSTALLED
    off = _python(["-c", PROBE], tmp_path, env={OFF_SWITCH: "1"})
    assert off.stdout.split() == ["False", "False", "False", "False"] and off.stderr == ""


@pytest.mark.parametrize("module", ["real", "absent", "raises on import", "raises when called"])
def test_a_missing_or_broken_hook_never_breaks_interpreter_start(tmp_path, module):
    # the .pth as installed, in a site folder of its own, processed by `site` as at start-up (-S: not
    # the installed one); the real module must install the finder, a broken one must say nothing
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    shutil.copy(PTH, site_dir)
    text = {"real": (REPO / f"{HOOK_MODULE}.py").read_text(), "absent": None,
            "raises on import": "raise RuntimeError('broken install')\n",
            "raises when called": "def install_at_startup():\n    raise RuntimeError('broken install')\n"}[module]
    if text is not None:
        (site_dir / f"{HOOK_MODULE}.py").write_text(text)
    done = _python(["-c", f"import site, sys; site.addsitedir(sys.argv[1]); {PROBE}", site_dir], tmp_path / "cwd",
                   flags=("-S",))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.split() == [str(module == "real"), "False", "False", "False"]


def test_import_timm_alone_registers_the_models_and_leaves_timm_as_loaded(tmp_path):
    code = ("import sys; assert 'alphanet_zoo' not in sys.modules; import timm; "
            "print('alphanet_a0' in timm.list_models('alphanet*'), type(timm.__loader__).__name__, "
            "timm.__spec__.loader is timm.__loader__, type(timm.create_model('alphanet_a0')).__name__)")
    done = _python(["-c", code], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "SourceFileLoader", "True", "AlphaNet"], NOT_INSTALLED


@pytest.mark.slow
def test_a_broken_alphanet_zoo_leaves_timm_working_with_a_warning(tmp_path):
    # the hook alone (alphanet_zoo not imported by the user) must not make `import timm` fail
    code = ("import sys\n"
            "class Refuse:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'alphanet_zoo':\n"
            "            raise ImportError('alphanet_zoo is broken')\n"
            "sys.meta_path.insert(1, Refuse())\n"
            "import timm\n"
            "print(timm.__version__, timm.list_models('alphanet*'))\n")
    done = _python(["-c", code], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [timm.__version__, "[]"]
    assert "could not register the AlphaNet models with timm" in done.stderr
    assert "alphanet_zoo is broken" in done.stderr and f"{OFF_SWITCH}=1" in done.stderr


@pytest.mark.slow
def test_inference_py_names_every_image_with_our_top1(tmp_path, decisive):
    model, checkpoint = decisive
    _copy_images(tmp_path / "images", IMAGES)
    _script("inference.py", [tmp_path / "images", "--checkpoint", checkpoint, "--workers", "1", "--batch-size", "4",
                             "--topk", "1", "--include-index", "--output-type", "logit", "--label-type", "name",
                             "--results-dir", tmp_path / "out", "--results-file", "top1", "--results-format", "csv"],
            tmp_path)
    with open(tmp_path / "out" / "top1.csv", newline="") as f:
        rows = {row["filename"]: row for row in csv.DictReader(f)}
    assert sorted(rows) == sorted(path.name for path in IMAGES)

    # 1. what timm computed is our model on the input timm makes from model.pretrained_cfg (its eval
    # transform here; the script normalises uint8 in its prefetcher instead: float rounding, ~1e-6)
    config = timm.data.resolve_data_config(model=model)
    assert config["input_size"] == (3, 192, 192) and config["crop_pct"] == 0.875
    transform = timm.data.create_transform(**config)
    with torch.no_grad():
        logits = model(torch.stack([transform(Image.open(path).convert("RGB")) for path in IMAGES]))
    for path, top in zip(IMAGES, logits):
        assert int(rows[path.name]["index"]) == int(top.argmax())
        assert float(rows[path.name]["logit"]) == pytest.approx(float(top.max()), rel=1e-4, abs=1e-4)

    # 2. our own predict (our preprocessing: the same region and scale, resampled in two steps where timm
    # takes one, so logits differ by a few per cent) names the same class, by the decisive model's margin
    ours = [top[0] for top in alphanet_zoo.predict(model, IMAGES, topk=1)]
    assert [r["index"] for r in ours] == [int(rows[p.name]["index"]) for p in IMAGES] == list(range(len(IMAGES)))
    assert [r["synset"] for r in ours] == [rows[p.name]["label"] for p in IMAGES]


@pytest.mark.slow
def test_validate_py_reports_the_top1_our_predict_gives(tmp_path, decisive):
    model, checkpoint = decisive
    folders = {"c0": IMAGES[:1], "c1": IMAGES[1:2], "c2": IMAGES[2:]}  # IMAGES[3] (class 3) filed under c2
    for name, images in folders.items():
        _copy_images(tmp_path / "data" / name, images)
    _script("validate.py", [tmp_path / "data", "--checkpoint", checkpoint, "--workers", "1", "--batch-size", "4",
                            "--results-file", tmp_path / "result.json", "--results-format", "json"], tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    labels = [int(name[1:]) for name, images in folders.items() for _ in images]  # ImageFolder: sorted names
    predicted = [top[0]["index"] for top in alphanet_zoo.predict(model, IMAGES, topk=1)]
    expected = 100 * sum(p == t for p, t in zip(predicted, labels)) / len(labels)
    assert expected == 75.0  # three right, one wrong: a top-1 that cannot come out right by chance
    assert result["top1"] == pytest.approx(expected)
    assert (result["model"], result["img_size"], result["crop_pct"], result["interpolation"]) == \
        ("alphanet_a0", 192, 0.875, "bicubic")


@pytest.mark.slow
def test_train_py_trains_a_few_steps_and_writes_a_checkpoint_of_our_model(tmp_path):
    for split, per_class in (("train", 2), ("validation", 1)):
        for k, name in enumerate(("a", "b")):
            _copy_images(tmp_path / "data" / split / name, IMAGES[2 * k:2 * k + per_class])
    # --workers 1: timm's loader asks for persistent workers, which torch refuses with 0
    _script("train.py", ["--data-dir", tmp_path / "data", "--num-classes", "2", "--img-size", "64", "--epochs", "1",
                         "--batch-size", "2", "--validation-batch-size", "2", "--workers", "1",
                         "--output", tmp_path / "runs", "--experiment", "tiny"], tmp_path)
    run = tmp_path / "runs" / "tiny"
    with open(run / "summary.csv", newline="") as f:
        (summary,) = list(csv.DictReader(f))
    assert summary["epoch"] == "0" and math.isfinite(float(summary["train_loss"]))
    assert float(summary["eval_top1"]) in (0.0, 50.0, 100.0)  # two validation images
    checkpoint = torch.load(run / "last.pth.tar", map_location="cpu", weights_only=False)  # ours, trusted
    assert checkpoint["arch"] == "alphanet_a0" and checkpoint["epoch"] == 0
    trained = alphanet_zoo.AlphaNet("a0", num_classes=2)
    trained.load_state_dict(checkpoint["state_dict"])  # strict: every tensor of our model, nothing else


@pytest.mark.slow
def test_a_wheel_and_an_editable_install_both_ship_the_hook(tmp_path):
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 64:
        pytest.skip("editable wheels need setuptools >= 64 (pyproject.toml's build requirement)")
    sys.path.insert(0, str(REPO / "tools"))
    from package_dirs import package_dirs

    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the repository
    source.mkdir()
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", PTH.name, f"{HOOK_MODULE}.py"):
        shutil.copy(REPO / name, source / name)
    for folder in {path.relative_to(REPO).parts[0] for path in package_dirs(REPO).values()}:
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    built = {}
    for kind in ("wheel", "editable"):  # one process each: setuptools keeps state between the two builds
        code = f"import sys; from setuptools import build_meta; print('BUILT', build_meta.build_{kind}(sys.argv[1]))"
        done = _python(["-c", code, tmp_path / kind], source)
        assert done.returncode == 0, done.stderr[-3000:]
        (built[kind],) = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("BUILT ")]
    wheel_name, editable_name = built["wheel"], built["editable"]
    with zipfile.ZipFile(tmp_path / "wheel" / wheel_name) as wheel:
        assert wheel.read(PTH.name) == PTH.read_bytes()  # at the root: site-packages
        assert wheel.read(f"{HOOK_MODULE}.py") == (REPO / f"{HOOK_MODULE}.py").read_bytes()
        record = wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/RECORD"))).decode()
        assert f"\n{PTH.name}," in record  # so that pip uninstall removes it
    with zipfile.ZipFile(tmp_path / "editable" / editable_name) as editable:
        assert editable.read(PTH.name) == PTH.read_bytes()
        finder = next(n for n in editable.namelist() if n.endswith("_finder.py"))
        assert f"'{HOOK_MODULE}': " in editable.read(finder).decode()  # the module is served from the source tree
