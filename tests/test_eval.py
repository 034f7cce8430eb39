"""alphanet-eval end to end: both folder layouts, exact accuracy on generated images, the official
preprocessing, ONNX Runtime against PyTorch, bad inputs, Ctrl-C, --arch all and the plot.

Images are generated (PNG and JPEG, several sizes, RGB, grayscale, RGBA and palette) and labelled
from the official evaluation pipeline's own predictions (written out below with torchvision, not
with the package's transform): some with the top-1 class, some with the third class, some with a
class far down the ranking, so top-1 and top-5 are known exactly.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from alphanet_zoo.commands import eval as cli
from conftest import PARITY_DIR
from PIL import Image, ImageDraw

import alphanet_zoo
from alphanet_zoo.calibration import calibrate
from alphanet_zoo.data import (GROUND_TRUTH_FILE, SYNSET_FOLDERS, LabelledImages, Sample, TorchClassifier,
                               calibration_batches, evaluate, labelled_batches, open_dataset)
from alphanet_zoo.imagenet import synsets
from alphanet_zoo.preprocessing import EvalCrop, Preprocessing, model_input

ARCH = "a0"
SYNSETS = synsets()
OFFICIAL_MEAN = [v / 255 for v in (123.675, 116.28, 103.53)]
OFFICIAL_STD = [v / 255 for v in (58.395, 57.12, 57.375)]
RESULT_KEYS = {"model", "name", "backend", "weights", "calibrated", "partial", "top1", "top5", "correct1",
               "correct5", "images", "bad_images", "bad_image_files", "top1_vs_paper", "mflops_fvcore",
               "images_per_s", "eval_s", "wall_s"}


# -- the official evaluation pipeline, written out independently ---------------------------------

def official_logits(model, path: Path) -> torch.Tensor:
    """PIL RGB, bicubic Resize(256), CenterCrop(224), ToTensor, Normalize, bicubic resize to R; one image."""
    from torchvision import transforms as T

    with open(path, "rb") as f:
        image = Image.open(f).convert("RGB")
    x = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                   T.Normalize(OFFICIAL_MEAN, OFFICIAL_STD)])(image).unsqueeze(0)
    r = model.arch.resolution
    x = F.interpolate(x, size=(r, r), mode="bicubic", align_corners=False)
    with torch.no_grad():
        return model.eval()(x)[0]


# -- generated images -----------------------------------------------------------------------------

def _picture(rng: np.random.RandomState, w: int, h: int, kind: int) -> Image.Image:
    if kind == 0:
        return Image.fromarray((rng.rand(h, w, 3) * 255).astype(np.uint8))
    if kind == 1:
        yy, xx = np.mgrid[0:h, 0:w]
        return Image.fromarray(np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 3 % 256], -1).astype(np.uint8))
    if kind == 2:
        image = Image.new("RGB", (w, h), tuple(int(v) for v in rng.randint(0, 255, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            draw.ellipse([int(rng.randint(0, w // 2)), int(rng.randint(0, h // 2)), int(rng.randint(w // 2, w)),
                          int(rng.randint(h // 2, h))], fill=tuple(int(v) for v in rng.randint(0, 255, 3)))
        return image
    blocks = rng.randint(0, 255, (8, 8, 3))
    return Image.fromarray(np.kron(blocks, np.ones((h // 8 + 1, w // 8 + 1, 1)))[:h, :w].astype(np.uint8))


# (mode, extension) per image: JPEG and PNG, RGB, grayscale, RGBA, palette; extensions in any case
FORMATS = [("RGB", ".JPEG"), ("RGB", ".png"), ("L", ".jpg"), ("RGBA", ".png"), ("P", ".PNG"), ("L", ".png"),
           ("RGB", ".jpeg"), ("P", ".png"), ("RGBA", ".PNG"), ("RGB", ".JPG"), ("L", ".JPEG"), ("RGB", ".png")]
SIZES = [(500, 375), (375, 500), (96, 80), (256, 256), (300, 224), (224, 300), (640, 200), (150, 420)]


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    paths = []
    for i in range(n):
        mode, ext = FORMATS[i % len(FORMATS)]
        w, h = SIZES[i % len(SIZES)]
        image = _picture(rng, w, h, i % 4)
        if mode == "RGBA":
            image = image.convert("RGBA")
            image.putalpha(Image.fromarray((rng.rand(h, w) * 255).astype(np.uint8)))
        elif mode == "P":
            image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        else:
            image = image.convert(mode)
        path = folder / f"image_{i:02d}{ext}"
        image.save(path, quality=90) if ext.lower() in (".jpg", ".jpeg") else image.save(path)
        paths.append(path)
    return paths


N_IMAGES = 12


@pytest.fixture(scope="module")
def model(supernet):
    return supernet.extract(ARCH)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, model):
    """Generated images with labels of known outcome: [(path, label, outcome)], the expected top-1 and
    top-5, and {path: the official pipeline's top-1 class}.

    outcome 1: the official top-1 class; 5: the class ranked fifth (top-5 only, at its very edge);
    0: the class ranked sixth (just outside the top 5), or, every other time, one ranked 500th.
    """
    paths = make_images(tmp_path_factory.mktemp("pool"), N_IMAGES)
    items, official_top1 = [], {}
    for i, path in enumerate(paths):
        ranking = official_logits(model, path).argsort(descending=True).tolist()
        outcome = (1, 5, 0)[i % 3]
        label = {1: ranking[0], 5: ranking[4], 0: ranking[5] if i % 2 else ranking[500]}[outcome]
        items.append((path, label, outcome))
        official_top1[path] = ranking[0]
    top1 = 100 * sum(o == 1 for *_, o in items) / len(items)
    top5 = 100 * sum(o in (1, 5) for *_, o in items) / len(items)
    return items, top1, top5, official_top1


def synset_layout(root: Path, items) -> Path:
    """Images copied into folders named by their label's synset, plus an empty class folder."""
    for path, label, _ in items:
        (root / SYNSETS[label]).mkdir(parents=True, exist_ok=True)
        (root / SYNSETS[label] / path.name).write_bytes(path.read_bytes())
    empty = next(s for s in ("n15075141", "n01440764", "n01443537") if not (root / s).exists())
    (root / empty).mkdir()
    return root


def val_name(k: int, path: Path) -> str:
    return f"ILSVRC2012_val_{k:08d}{path.suffix}"


def flat_layout(root: Path, items, missing: int = 3) -> list[tuple[int, int]]:
    """Images as ILSVRC2012_val_%08d files, every third number left out (a subset of the ground truth);
    returns [(image number, label)] for every number the ground truth lists."""
    root.mkdir(parents=True)
    rows, k = [], 0
    for path, label, _ in items:
        k += 1
        if k % missing == 0:  # listed in the ground truth, absent from the folder
            rows.append((k, (label + 7) % 1000))
            k += 1
        (root / val_name(k, path)).write_bytes(path.read_bytes())
        rows.append((k, label))
    return rows


def run_cli(args, capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def read_results(path: Path) -> dict:
    return json.loads(path.read_text())


# -- preprocessing --------------------------------------------------------------------------------

def test_official_preprocessing_parity():
    """photo.png through the dataset and the loader equals the official eval tensor (224 model: no resize)."""
    expected = torch.from_numpy(np.load(PARITY_DIR / "photo_official_eval_tensor.npy"))
    samples = [Sample(str(PARITY_DIR / "photo.png"), 0)] * 3
    crop = EvalCrop(Preprocessing(resolution=224))
    dataset = LabelledImages(samples, crop, (3, 224, 224))
    image, target, index, error = dataset[0]
    assert error == "" and (target, index) == (0, 0) and image.dtype == torch.uint8
    assert (model_input(image, 224) - expected).abs().max().item() <= 1e-5
    assert (alphanet_zoo.transforms("a1")(Image.open(PARITY_DIR / "photo.png")) - expected).abs().max().item() <= 1e-5
    images, *_ = next(iter(labelled_batches(samples, crop, 224, batch_size=3, workers=2)))
    assert images.shape == (3, 3, 224, 224)
    assert (model_input(images, 224) - expected).abs().max().item() <= 1e-5
    # a 192 model gets that tensor resized bicubically, as the official forward does
    resized = F.interpolate(expected[None], size=(192, 192), mode="bicubic", align_corners=False)
    assert (model_input(images[:1], 192) - resized).abs().max().item() <= 1e-5


def test_loader_matches_official_pipeline_on_every_image_mode(labelled, model):
    items, top1, top5, official_top1 = labelled
    samples = [Sample(str(p), label) for p, label, _ in items]
    batches = labelled_batches(samples, EvalCrop(Preprocessing(resolution=192)), 224, batch_size=5, workers=0)
    result = evaluate(TorchClassifier(model), batches, resolution=192, keep_predictions=True)
    assert [p.index for p in result.predictions] == list(range(len(items)))
    assert [p.top5[0] for p in result.predictions] == [official_top1[Path(s.path)] for s in samples]
    assert (result.top1, result.top5, result.images) == (pytest.approx(top1), pytest.approx(top5), len(items))


# -- the synset-folder layout ---------------------------------------------------------------------

@pytest.mark.slow
def test_synset_layout_exact_accuracy_json_and_predictions(tmp_path, labelled, official_checkpoint, capsys):
    items, top1, top5, _ = labelled
    data = synset_layout(tmp_path / "val", items)
    out, preds = tmp_path / "results.json", tmp_path / "preds.jsonl"
    code, stdout, _ = run_cli(["--arch", ARCH, "--supernet", official_checkpoint, "--data", data, "--workers", 2,
                               "--batch-size", 5, "--output", out, "--save-predictions", preds], capsys)
    assert code == 0
    res = read_results(out)
    assert res["format"] == "alphanet_zoo.eval/2" and res["partial"] is False and res["world_size"] == 1
    assert res["layout"] == SYNSET_FOLDERS and res["calibration"] is None
    assert RESULT_KEYS <= res.keys() and len(res["models"]) == 1 and RESULT_KEYS == res["models"][0].keys()
    assert res["images"] == N_IMAGES
    assert res["top1"] == pytest.approx(top1) and res["top5"] == pytest.approx(top5)
    assert res["correct1"] == round(top1 * N_IMAGES / 100)
    info = alphanet_zoo.model_info(ARCH)
    record = res["model"]  # the model's record, as its config.json holds it
    assert record["mflops"] == pytest.approx(alphanet_zoo.count_flops(ARCH), abs=0.01) and record["name"] == ARCH
    assert record["published"]["top1"] == info.published_top1 and record["published"]["mflops"] == info.published_mflops
    assert record["published"]["top5"] is None and record["calibrated"] is False
    assert res["top1_vs_paper"] == pytest.approx(top1 - info.published_top1, abs=1e-3)
    assert record["params"] == sum(p.numel() for p in alphanet_zoo.AlphaNet(ARCH).parameters())
    assert res["mflops_fvcore"] > record["mflops"]  # fvcore also counts BN, pooling, the SE multiply
    assert res["images_per_s"] > 0 and res["backend"] == "pytorch"
    assert "a0" in stdout and "77.87" in stdout and f"{top1:.2f}" in stdout
    # predictions: one line per image, in the fixed order, with the folder's canonical class index
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(lines) == N_IMAGES and all(set(line) == {"model", "path", "target", "top5"} for line in lines)
    by_name = {p.name: (label, outcome) for p, label, outcome in items}
    expected_order = sorted(lines, key=lambda line: (line["target"], line["path"]))
    assert lines == expected_order
    for line in lines:
        synset, name = line["path"].split("/")
        label, outcome = by_name[name]
        assert line["target"] == label == SYNSETS.index(synset)
        assert len(line["top5"]) == 5
        assert (line["top5"][0] == label) == (outcome == 1)
        assert (label in line["top5"]) == (outcome in (1, 5))


@pytest.mark.parametrize("k", [1, 5])
def test_top_k_counts_a_label_at_rank_k_and_not_at_rank_k_plus_1(k):
    from alphanet_zoo.data import EvalResult

    logits = torch.tensor([[10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0]] * 2)  # class j is ranked j + 1
    result = EvalResult()
    result.update(logits, torch.tensor([k - 1, k]), torch.tensor([0, 1]), keep_predictions=True)
    hits = result.correct1 if k == 1 else result.correct5
    assert hits == 1 and result.images == 2  # rank k counts, rank k + 1 does not
    assert result.predictions[0].top5 == [0, 1, 2, 3, 4]


def test_subset_and_empty_class_folders_use_canonical_indices(tmp_path):
    for synset, n in (("n15075141", 2), ("n01443537", 1), ("n04589890", 0), ("n01440764", 0)):
        make_images(tmp_path / synset, n, seed=n)
    (tmp_path / ".cache").mkdir()  # hidden folders are not classes
    (tmp_path / "README.txt").write_text("not an image")
    samples, layout = open_dataset(tmp_path)
    assert layout == SYNSET_FOLDERS
    assert [s.target for s in samples] == [1, 999, 999]
    assert [Path(s.path).parent.name for s in samples] == ["n01443537", "n15075141", "n15075141"]


def test_non_synset_folder_is_an_error(tmp_path, official_checkpoint, capsys):
    make_images(tmp_path / "n01440764", 1)
    make_images(tmp_path / "cats", 1)
    code, _, err = run_cli(["--arch", ARCH, "--supernet", official_checkpoint, "--data", tmp_path], capsys)
    assert code == 2 and "cats" in err and "not an ImageNet-1k synset" in err


@pytest.mark.parametrize("layout", ["nothing", "empty class folders", "no images beside ground truth"])
def test_empty_dataset_is_an_error(tmp_path, official_checkpoint, capsys, layout):
    if layout == "empty class folders":
        (tmp_path / "n01440764").mkdir()
        (tmp_path / "n01443537").mkdir()
    elif layout == "no images beside ground truth":
        (tmp_path / "n01440764").mkdir()
        (tmp_path / "notes.txt").write_text("x")
    code, _, err = run_cli(["--arch", ARCH, "--supernet", official_checkpoint, "--data", tmp_path], capsys)
    assert code == 2 and "no images found" in err


@pytest.mark.slow
def test_corrupt_image_stops_the_run_unless_skipped(tmp_path, labelled, official_checkpoint, capsys):
    items, *_ = labelled
    data = synset_layout(tmp_path / "val", items[:6])
    good = items[0][0].read_bytes() if items[0][0].suffix.lower() in (".jpg", ".jpeg") else None
    assert good is not None
    folder = data / SYNSETS[items[0][1]]
    (folder / "truncated.JPEG").write_bytes(good[: len(good) // 3])
    (folder / "text.jpg").write_text("this is not a JPEG")
    args = ["--arch", ARCH, "--supernet", official_checkpoint, "--data", data, "--workers", 0, "--batch-size", 4]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "cannot read image" in err and ("text.jpg" in err or "truncated.JPEG" in err)
    out = tmp_path / "r.json"
    code, stdout, _ = run_cli(args + ["--skip-bad-images", "--output", out], capsys)
    assert code == 0
    res = read_results(out)
    assert res["images"] == 6 and res["bad_images"] == 2
    assert sorted(Path(b["path"]).name for b in res["bad_image_files"]) == ["text.jpg", "truncated.JPEG"]
    assert "skipped unreadable images" in stdout
    # the good images score as they would alone
    assert res["correct1"] == sum(o == 1 for *_, o in items[:6])
    assert res["correct5"] == sum(o in (1, 5) for *_, o in items[:6])


# -- the flat layout with a ground-truth file -----------------------------------------------------

def test_loc_solution_csv_layout(tmp_path, labelled, official_checkpoint, capsys):
    items, top1, top5, _ = labelled
    data = tmp_path / "val"
    rows = flat_layout(data, items)
    lines = ["ImageId,PredictionString"]
    for k, label in rows:  # every box repeats the synset, as the Kaggle file does
        s = SYNSETS[label]
        lines.append(f"ILSVRC2012_val_{k:08d},{s} 10 20 200 300 {s} 5 5 50 60 ")
    (data / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.json"
    code, _, _ = run_cli(["--arch", ARCH, "--supernet", official_checkpoint, "--data", data, "--workers", 0,
                          "--output", out], capsys)
    assert code == 0
    res = read_results(out)
    assert res["layout"] == GROUND_TRUTH_FILE and res["images"] == N_IMAGES
    assert res["top1"] == pytest.approx(top1) and res["top5"] == pytest.approx(top5)


def devkit_permutation(seed: int = 3) -> list[str]:
    """A made-up devkit class order: ILSVRC2012_ID k is synset perm[k - 1] (the real one comes from meta.mat)."""
    order = list(SYNSETS)
    np.random.RandomState(seed).shuffle(order)
    return order


def write_map_clsloc(path: Path, order: list[str]) -> None:
    path.write_text("".join(f"{s} {k} class_{k}\n" for k, s in enumerate(order, start=1)))


def write_meta_mat(path: Path, order: list[str], compress: bool = True) -> None:
    """A devkit-like meta.mat (MAT level 5): struct array ``synsets`` with ILSVRC2012_ID and WNID,
    plus an inner node (id 1001) as the real one has."""
    import struct
    import zlib

    def element(dtype: int, payload: bytes) -> bytes:
        return struct.pack("<II", dtype, len(payload)) + payload + b"\0" * (-len(payload) % 8)

    def matrix(array_class: int, dims, name: str, body: bytes) -> bytes:
        return element(14, element(6, struct.pack("<II", array_class, 0))
                       + element(5, struct.pack(f"<{len(dims)}i", *dims)) + element(1, name.encode()) + body)

    def double(v: float) -> bytes:
        return matrix(6, [1, 1], "", element(9, struct.pack("<d", v)))

    def chars(s: str) -> bytes:
        return matrix(4, [1, len(s)], "", element(4, s.encode("utf-16-le")))

    entries = [(k, s) for k, s in enumerate(order, start=1)] + [(1001, "n00001740")]
    names = b"".join(f.encode().ljust(32, b"\0") for f in ("ILSVRC2012_ID", "WNID"))
    body = struct.pack("<HHi", 5, 4, 32) + element(1, names)  # field-name length as a small element
    body += b"".join(double(k) + chars(s) for k, s in entries)
    variable = matrix(2, [len(entries), 1], "synsets", body)
    if compress:
        payload = zlib.compress(variable)
        variable = struct.pack("<II", 15, len(payload)) + payload
    header = b"MATLAB 5.0 MAT-file, written by alphanet_zoo tests".ljust(116, b" ") + b"\0" * 8
    path.write_bytes(header + struct.pack("<H", 0x0100) + b"IM" + variable)


@pytest.mark.parametrize("mapping", ["meta.mat", "map_clsloc.txt", "--label-map"])
def test_devkit_ground_truth_txt_layout(tmp_path, labelled, official_checkpoint, capsys, mapping):
    items, top1, top5, _ = labelled
    data = tmp_path / "val"
    rows = flat_layout(data, items)
    order = devkit_permutation()
    devkit_id = {s: k for k, s in enumerate(order, start=1)}
    devkit = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    gt = devkit / "ILSVRC2012_validation_ground_truth.txt"
    gt.write_text("".join(f"{devkit_id[SYNSETS[label]]}\n" for _, label in rows))
    args = ["--arch", ARCH, "--supernet", official_checkpoint, "--data", data, "--ground-truth", gt,
            "--workers", 0, "--output", tmp_path / "r.json"]
    if mapping == "meta.mat":
        write_meta_mat(devkit / "meta.mat", order)
    elif mapping == "map_clsloc.txt":
        write_map_clsloc(devkit / "map_clsloc.txt", order)
    else:
        write_map_clsloc(tmp_path / "classes.txt", order)
        args += ["--label-map", tmp_path / "classes.txt"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    res = read_results(tmp_path / "r.json")
    assert res["layout"] == GROUND_TRUTH_FILE and res["images"] == N_IMAGES
    assert res["top1"] == pytest.approx(top1) and res["top5"] == pytest.approx(top5)


def test_devkit_ground_truth_without_mapping_is_a_clear_error(tmp_path, labelled, official_checkpoint, capsys):
    items, *_ = labelled
    data = tmp_path / "val"
    rows = flat_layout(data, items[:2])
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{k}\n" for k, _ in rows))
    code, _, err = run_cli(["--arch", ARCH, "--supernet", official_checkpoint, "--data", data], capsys)
    assert code == 2 and "ILSVRC2012_ID" in err and "meta.mat" in err and "LOC_val_solution.csv" in err


def test_flat_images_without_ground_truth_or_unlisted_are_errors(tmp_path, labelled, official_checkpoint, capsys):
    items, *_ = labelled
    data = tmp_path / "val"
    flat_layout(data, items[:2])
    code, _, err = run_cli(["--arch", ARCH, "--supernet", official_checkpoint, "--data", data], capsys)
    assert code == 2 and "no ground-truth file" in err
    (data / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 2 3 4\n")
    code, _, err = run_cli(["--arch", ARCH, "--supernet", official_checkpoint, "--data", data], capsys)
    assert code == 2 and "ILSVRC2012_val_00000002" in err and "not listed" in err


# -- ONNX Runtime -----------------------------------------------------------------------------------

def export_onnx(model, path: Path, with_metadata: bool, dynamic_size: bool = False) -> Path:
    """The export helper's file (with metadata), or torch's exporter's (no metadata; with
    ``dynamic_size`` the input's height and width are dynamic too, so the file cannot tell its resolution)."""
    if with_metadata:
        try:
            from alphanet_zoo.export import to_onnx
        except ImportError:
            pytest.skip("alphanet_zoo.export.to_onnx is not available in this tree")
        to_onnx(model, path, verify=False)
        return path
    import inspect

    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        pytest.skip("this torch has no TorchScript-based ONNX exporter (dynamo=False)")
    r = model.arch.resolution
    axes = {"input": {0: "n", 2: "h", 3: "w"} if dynamic_size else {0: "n"}, "logits": {0: "n"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter, chosen on purpose
        torch.onnx.export(model.eval(), (torch.zeros(1, 3, r, r),), str(path), dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes=axes)
    return path


@pytest.fixture(scope="module")
def pytorch_run(tmp_path_factory, labelled, official_checkpoint):
    items, *_ = labelled
    root = tmp_path_factory.mktemp("onnx_cmp")
    data = synset_layout(root / "val", items)
    out, preds = root / "torch.json", root / "torch.jsonl"
    assert cli.main([str(a) for a in ["--arch", ARCH, "--supernet", official_checkpoint, "--data", data,
                                      "--workers", 0, "--batch-size", 4, "--output", out,
                                      "--save-predictions", preds]]) == 0
    return data, read_results(out), [json.loads(line) for line in preds.read_text().splitlines()]


@pytest.mark.parametrize("with_metadata", [True, False], ids=["export-helper", "torch.onnx"])
def test_onnx_path_agrees_with_pytorch(tmp_path, model, pytorch_run, capsys, with_metadata):
    data, torch_res, torch_preds = pytorch_run
    onnx_file = export_onnx(model, tmp_path / "a0.onnx", with_metadata, dynamic_size=not with_metadata)
    args = ["--model", onnx_file, "--data", data, "--workers", 2, "--batch-size", 5,
            "--out", tmp_path / "r.json", "--save-predictions", tmp_path / "p.jsonl"]
    if not with_metadata:  # dynamic input size and no metadata: the resolution must come from --arch
        code, _, err = run_cli(args, capsys)
        assert code == 2 and "give --arch" in err
        args += ["--arch", ARCH]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    res = read_results(tmp_path / "r.json")
    assert res["backend"] == "onnxruntime" and res["name"] == ARCH
    for key in ("images", "top1", "top5", "correct1", "correct5"):
        assert res[key] == torch_res[key], key
    for key in ("name", "architecture", "mflops", "params", "published", "preprocessing"):
        assert res["model"][key] == torch_res["model"][key], key
    preds = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [(p["path"], p["target"], p["top5"][0]) for p in preds] == \
           [(p["path"], p["target"], p["top5"][0]) for p in torch_preds]


def test_onnx_file_with_another_arch_is_refused(tmp_path, model, pytorch_run, capsys):
    data, _, _ = pytorch_run
    onnx_file = export_onnx(model, tmp_path / "a0.onnx", with_metadata=False)
    code, _, err = run_cli(["--onnx", onnx_file, "--arch", "a1", "--data", data], capsys)  # the old spelling
    assert code == 2  # the graph runs at 192; a1 at 224: the ONNX file says so or ORT refuses the input
    assert "a1" in err or "192" in err or "224" in err


# -- weights, calibration, --arch all, interruption ----------------------------------------------

@pytest.mark.parametrize("source", ["supernet checkpoint", "alphanet-extract folder"])
def test_weights_option_matches_supernet_option(tmp_path, pytorch_run, supernet, official_checkpoint, capsys,
                                                source):
    data, torch_res, _ = pytorch_run
    weights = official_checkpoint
    if source == "alphanet-extract folder":  # OUT/<name>/ folders, as alphanet-extract --out writes them
        weights = tmp_path / "weights"
        supernet.extract(ARCH).save_pretrained(weights / ARCH)
    out = tmp_path / "r.json"
    code, _, err = run_cli(["--arch", ARCH, "--weights", weights, "--data", data, "--workers", 0,
                            "--output", out], capsys)
    assert code == 0, err
    res = read_results(out)
    assert (res["top1"], res["top5"], res["images"]) == (torch_res["top1"], torch_res["top5"], torch_res["images"])


@pytest.mark.slow
def test_calibrated_evaluation_equals_the_library_path(tmp_path, labelled, supernet, official_checkpoint, capsys):
    items, *_ = labelled
    train = synset_layout(tmp_path / "train", items)
    val = synset_layout(tmp_path / "val", items[:6])
    out, preds = tmp_path / "r.json", tmp_path / "p.jsonl"
    code, _, err = run_cli(["--arch", ARCH, "--supernet", official_checkpoint, "--data", val, "--workers", 2,
                            "--calib-data", train, "--calib-batches", 2, "--calib-batch-size", 4, "--seed", 5,
                            "--output", out, "--save-predictions", preds], capsys)
    assert code == 0, err
    res = read_results(out)
    assert res["calibrated"] is True and res["model"]["calibrated"] is True
    assert {k: res["calibration"][k] for k in ("data", "num_batches", "batch_size", "seed")} == \
        {"data": "train", "num_batches": 2, "batch_size": 4, "seed": 5}
    assert res["model"]["calibration"] == res["calibration"]

    calibrated = calibrate(supernet.extract(ARCH), calibration_batches(train, 2, 4, seed=5), 192)
    samples, _ = open_dataset(val)
    expected = evaluate(TorchClassifier(calibrated), labelled_batches(
        samples, EvalCrop(Preprocessing(resolution=192)), 224, batch_size=256), resolution=192, keep_predictions=True)
    got = [json.loads(line)["top5"] for line in preds.read_text().splitlines()]
    assert got == [p.top5 for p in expected.predictions]
    assert res["top1"] == pytest.approx(expected.top1)


def test_calibration_options_need_calib_data(tmp_path, official_checkpoint, capsys):
    code, _, err = run_cli(["--arch", ARCH, "--supernet", official_checkpoint, "--data", tmp_path,
                            "--calib-batches", 3], capsys)
    assert code == 2 and "--calib-data" in err


@pytest.mark.slow  # seconds of subprocesses or compiles: CI runs it, the quick loop does not
def test_arch_all_with_plot_and_limit(tmp_path, pytorch_run, official_checkpoint, capsys):
    pytest.importorskip("matplotlib")
    data, _, _ = pytorch_run
    out, plot = tmp_path / "all.json", tmp_path / "pareto.png"
    code, stdout, err = run_cli(["--arch", "all", "--supernet", official_checkpoint, "--data", data, "--limit", 1,
                                 "--workers", 0, "--output", out, "--plot", plot], capsys)
    assert code == 0, err
    res = read_results(out)
    assert [m["name"] for m in res["models"]] == alphanet_zoo.list_models()
    assert "top1" not in res  # several models: the per-model keys live in "models"
    for m in res["models"]:
        assert RESULT_KEYS == m.keys() and m["images"] == 1 and res["limit"] == 1
        info = alphanet_zoo.model_info(m["name"])
        assert m["model"]["mflops"] == pytest.approx(alphanet_zoo.count_flops(info.arch), abs=0.01)
        assert m["model"]["published"]["mflops"] == info.published_mflops
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(name in stdout for name in alphanet_zoo.list_models())


def test_the_plot_draws_the_measured_points_beside_the_papers(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.axes
    from alphanet_zoo.eval.report import plot_pareto

    drawn = []
    original = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda self, x, y, *a, **k: drawn.append((list(x), list(y), k.get("label")))
                        or original(self, x, y, *a, **k))
    results = [{"name": "mine", "top1": 61.25, "model": {"mflops": 350.5}},
               {"name": "small", "top1": 40.0, "model": {"mflops": 210.0}},
               {"name": "failed", "top1": None, "model": {"mflops": 500.0}}]
    plot_pareto(results, tmp_path / "p.png")
    by_label = {label: (x, y) for x, y, label in drawn}
    assert by_label["measured (alphanet-eval)"] == ([210.0, 350.5], [40.0, 61.25])  # sorted by MFLOPs
    paper = sorted((m.published_mflops, m.published_top1) for m in alphanet_zoo.MODELS.values())
    assert by_label["paper (AlphaNet)"] == ([p[0] for p in paper], [p[1] for p in paper])


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, official_checkpoint, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    code, _, err = run_cli(["--arch", ARCH, "--supernet", official_checkpoint, "--data", tmp_path,
                            "--plot", tmp_path / "p.png"], capsys)
    assert code == 2 and "matplotlib" in err and "alphanet_zoo[plot]" in err


def test_ctrl_c_reports_and_writes_partial_results(tmp_path, pytorch_run, official_checkpoint, capsys, monkeypatch):
    data, _, _ = pytorch_run

    class InterruptedClassifier(TorchClassifier):
        calls = 0

        def __call__(self, images):
            InterruptedClassifier.calls += 1
            if InterruptedClassifier.calls == 2:
                raise KeyboardInterrupt
            return super().__call__(images)

    import alphanet_zoo.eval.loop as loop
    monkeypatch.setattr(loop, "TorchClassifier", InterruptedClassifier)
    out, preds = tmp_path / "r.json", tmp_path / "p.jsonl"
    code, stdout, err = run_cli(["--arch", "all", "--supernet", official_checkpoint, "--data", data,
                                 "--batch-size", 4, "--workers", 0, "--output", out, "--save-predictions", preds],
                                capsys)
    assert code == 130 and "interrupted" in err
    res = read_results(out)
    assert res["partial"] is True and res["models"][0]["partial"] is True and len(res["models"]) == 1
    assert res["images"] == 4 and res["top1"] is not None
    assert len(preds.read_text().splitlines()) == 4
    assert "a0*" in stdout and "interrupted" in stdout and "Traceback" not in err


def test_bad_arguments_are_clear_errors(tmp_path, official_checkpoint, capsys, monkeypatch):
    base = ["--data", tmp_path]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, _, err = run_cli(["--arch", ARCH] + base, capsys)  # the default weights: pretrained, not to be had here
    assert code == 1 and "not cached and offline mode is on" in err
    code, _, err = run_cli(["--arch", ARCH, "--supernet", official_checkpoint, "--batch-size", 0] + base, capsys)
    assert code == 2 and "--batch-size" in err
    code, _, err = run_cli(["--arch", ARCH, "--supernet", official_checkpoint, "--data", tmp_path / "nope"], capsys)
    assert code == 2 and "nope" in err
    code, _, err = run_cli(["--arch", ARCH, "--supernet", official_checkpoint, "--output",
                            tmp_path / "missing" / "r.json"] + base, capsys)
    assert code == 2 and "missing" in err
    if not torch.cuda.is_available():
        code, _, err = run_cli(["--arch", ARCH, "--supernet", official_checkpoint, "--device", "cuda"] + base, capsys)
        assert code == 2 and "cuda" in err.lower()


def test_evaluate_normalises_with_the_given_statistics_and_names_bad_images():
    """The model sees (x / 255 - mean) / std with the statistics given (written out here); an undecodable
    image raises naming its file, or is skipped and listed, and only the others are counted."""
    from alphanet_zoo.data import BadImageError, evaluate

    mean, std = (0.2, 0.4, 0.6), (0.1, 0.2, 0.3)
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4).remainder(256).to(torch.uint8)
    seen = []

    def classifier(x):
        seen.append(x.clone())
        logits = torch.zeros(len(x), 10)
        logits[:, 7] = 1.0
        return logits

    by_hand = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    batch = (images, torch.tensor([7, 3]), torch.tensor([0, 1]), [None, None])
    result = evaluate(classifier, [batch], resolution=None, mean=mean, std=std)
    assert torch.allclose(seen[0], by_hand, atol=1e-6) and (result.images, result.top1) == (2, 50.0)

    broken = (images, torch.tensor([7, 3]), torch.tensor([4, 5]), ["truncated file", None])
    paths = {4: "a/broken.jpg", 5: "a/fine.jpg"}.__getitem__
    with pytest.raises(BadImageError, match="cannot read image a/broken.jpg: truncated file"):
        evaluate(classifier, [broken], resolution=None, paths=paths)
    seen.clear()
    result = evaluate(classifier, [broken], resolution=None, paths=paths, skip_bad_images=True)
    assert result.bad_images == [("a/broken.jpg", "truncated file")]
    assert (result.images, result.top1) == (1, 0.0) and len(seen[0]) == 1  # only the fine image, labelled 3
