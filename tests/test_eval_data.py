"""alphanet_zoo.eval data plumbing: ground-truth files, the devkit class table (meta.mat), image
loading, and seeded BN-calibration batches."""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alphanet_zoo.calibration import calibrate
from alphanet_zoo.data import BadImageError, DatasetError, calibration_batches, is_image_file, load_image, open_dataset
from alphanet_zoo.data.ground_truth import GroundTruthError, read_devkit_mapping, read_ground_truth, read_loc_solution
from alphanet_zoo.data.matfile import MatFileError, load_mat
from alphanet_zoo.imagenet import synsets

SYNSETS = synsets()

# A devkit-like meta.mat written by scipy.io.savemat (scipy 1.17), uncompressed and compressed: struct
# array ``synsets`` (4x1) with fields ILSVRC2012_ID, WNID, words, num_children, children; entries
# (1, n02119789), (2, n02100735), (3, n01440764) and the inner node (1001, n00001740, children [1, 2]).
SCIPY_META_MAT = {
    "plain": (
        "TUFUTEFCIDUuMCBNQVQtZmlsZSBQbGF0Zm9ybTogcG9zaXgsIENyZWF0ZWQgb246IFdlZCBOb3YgMjUgMTI6NDM6MzUgMjAyNgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABSU0OAAAAwAUAAAYAAAAIAAAAAgAAAAAAAAAFAAAACAAAAAQAAAABAAAAAQAAAAcAAABzeW5zZXRzAAUABAAOAAAAAQAAAEYAAABJTFNWUkMyMDEyX0lEAFdOSUQAAAAAAAAAAAAAd29yZHMAAAAAAAAAAABudW1fY2hpbGRyZW4AAGNoaWxkcmVuAAAAAAAAAAAOAAAAOAAAAAYAAAAIAAAABgAAAAAAAAAFAAAACAAAAAEAAAABAAAAAQAAAAAAAAAJAAAACAAAAAAAAAAAAPA/DgAAAEAAAAAGAAAACAAAAAQAAAAAAAAABQAAAAgAAAABAAAACQAAAAEAAAAAAAAAEAAAAAkAAABuMDIxMTk3ODkAAAAAAAAADgAAAEgAAAAGAAAACAAAAAQAAAAAAAAABQAAAAgAAAABAAAAGAAAAAEAAAAAAAAAEAAAABgAAABraXQgZm94LCBWdWxwZXMgbWFjcm90aXMOAAAAOAAAAAYAAAAIAAAABgAAAAAAAAAFAAAACAAAAAEAAAABAAAAAQAAAAAAAAAJAAAACAAAAAAAAAAAAAAADgAAADAAAAAGAAAACAAAAAYAAAAAAAAABQAAAAgAAAABAAAAAAAAAAEAAAAAAAAACQAAAAAAAAAOAAAAOAAAAAYAAAAIAAAABgAAAAAAAAAFAAAACAAAAAEAAAABAAAAAQAAAAAAAAAJAAAACAAAAAAAAAAAAABADgAAAEAAAAAGAAAACAAAAAQAAAAAAAAABQAAAAgAAAABAAAACQAAAAEAAAAAAAAAEAAAAAkAAABuMDIxMDA3MzUAAAAAAAAADgAAAEAAAAAGAAAACAAAAAQAAAAAAAAABQAAAAgAAAABAAAADgAAAAEAAAAAAAAAEAAAAA4AAABFbmdsaXNoIHNldHRlcgAADgAAADgAAAAGAAAACAAAAAYAAAAAAAAABQAAAAgAAAABAAAAAQAAAAEAAAAAAAAACQAAAAgAAAAAAAAAAAAAAA4AAAAwAAAABgAAAAgAAAAGAAAAAAAAAAUAAAAIAAAAAQAAAAAAAAABAAAAAAAAAAkAAAAAAAAADgAAADgAAAAGAAAACAAAAAYAAAAAAAAABQAAAAgAAAABAAAAAQAAAAEAAAAAAAAACQAAAAgAAAAAAAAAAAAIQA4AAABAAAAABgAAAAgAAAAEAAAAAAAAAAUAAAAIAAAAAQAAAAkAAAABAAAAAAAAABAAAAAJAAAAbjAxNDQwNzY0AAAAAAAAAA4AAABIAAAABgAAAAgAAAAEAAAAAAAAAAUAAAAIAAAAAQAAABIAAAABAAAAAAAAABAAAAASAAAAdGVuY2gsIFRpbmNhIHRpbmNhAAAAAAAADgAAADgAAAAGAAAACAAAAAYAAAAAAAAABQAAAAgAAAABAAAAAQAAAAEAAAAAAAAACQAAAAgAAAAAAAAAAAAAAA4AAAAwAAAABgAAAAgAAAAGAAAAAAAAAAUAAAAIAAAAAQAAAAAAAAABAAAAAAAAAAkAAAAAAAAADgAAADgAAAAGAAAACAAAAAYAAAAAAAAABQAAAAgAAAABAAAAAQAAAAEAAAAAAAAACQAAAAgAAAAAAAAAAEiPQA4AAABAAAAABgAAAAgAAAAEAAAAAAAAAAUAAAAIAAAAAQAAAAkAAAABAAAAAAAAABAAAAAJAAAAbjAwMDAxNzQwAAAAAAAAAA4AAAA4AAAABgAAAAgAAAAEAAAAAAAAAAUAAAAIAAAAAQAAAAYAAAABAAAAAAAAABAAAAAGAAAAZW50aXR5AAAOAAAAOAAAAAYAAAAIAAAABgAAAAAAAAAFAAAACAAAAAEAAAABAAAAAQAAAAAAAAAJAAAACAAAAAAAAAAAAABADgAAAEAAAAAGAAAACAAAAAYAAAAAAAAABQAAAAgAAAABAAAAAgAAAAEAAAAAAAAACQAAABAAAAAAAAAAAADwPwAAAAAAAABA"),
    "compressed": (
        "TUFUTEFCIDUuMCBNQVQtZmlsZSBQbGF0Zm9ybTogcG9zaXgsIENyZWF0ZWQgb246IFdlZCBOb3YgMjUgMTI6NDM6MzUgMjAyNgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABSU0PAAAANQEAAHic42NgYDjAysDABqQ5gJiJAQJYoXwWIGaEYnYgLq7MK04tKQbKszDwQcXdgNjTJzgsyNnIwNAo3tOFIdwPSMBBeX5RSjGcl1eaG5+ckZmTUpSax8CAYEEAyEwLBoR72NDcw4iEQYATKg4BH+xB+h2Q9LNg0c+JpF8Ays8zMDI0tDS3sERyhwcBcyTQzAHxszNLFNLyK3QUwkpzClKLFXITk4vySzKLKfMXxD0GBPQzoOmnPDwZHCgJTwMDc2NTJHcQMocPzRwQ3zUvPSezOEMBmOhKUoso9s8AhSMHBeFoaGJiYG5mguQOQulSCM0cEL8kNS85Q0chJDMvOVGhBERSw18DFJ4e/RSEJxAYmpsY4HAHNnPY0MwB8VPzSjJLKqmfv7DpZ0LTLwDX/sEeZg4ANFxCLw=="),
}


# -- meta.mat -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["plain", "compressed"])
def test_matfile_reads_a_scipy_written_devkit_table(tmp_path, kind):
    path = tmp_path / "meta.mat"
    path.write_bytes(base64.b64decode(SCIPY_META_MAT[kind]))
    rows = load_mat(path)["synsets"]
    assert [(r["ILSVRC2012_ID"], r["WNID"]) for r in rows] == \
           [(1, "n02119789"), (2, "n02100735"), (3, "n01440764"), (1001, "n00001740")]
    assert rows[0]["words"] == "kit fox, Vulpes macrotis" and rows[3]["children"] == [1, 2]
    assert rows[0]["children"] == []
    # the class table: devkit id -> canonical index; the inner node (1001) is left out
    assert read_devkit_mapping(path) == {1: SYNSETS.index("n02119789"), 2: SYNSETS.index("n02100735"), 3: 0}


def test_matfile_rejects_what_it_cannot_read(tmp_path):
    (tmp_path / "short.mat").write_bytes(b"MATLAB")
    with pytest.raises(MatFileError, match="not a MAT file"):
        load_mat(tmp_path / "short.mat")
    (tmp_path / "text.mat").write_bytes(b"x" * 200)
    with pytest.raises(MatFileError, match="not a level-5"):
        load_mat(tmp_path / "text.mat")
    damaged = base64.b64decode(SCIPY_META_MAT["compressed"])
    (tmp_path / "cut.mat").write_bytes(damaged[:200])
    with pytest.raises(MatFileError, match="damaged"):
        load_mat(tmp_path / "cut.mat")
    (tmp_path / "other.mat").write_bytes(base64.b64decode(SCIPY_META_MAT["plain"]).replace(b"synsets", b"symbols"))
    with pytest.raises(GroundTruthError, match="no 'synsets' struct"):
        read_devkit_mapping(tmp_path / "other.mat")


# -- ground-truth files ---------------------------------------------------------------------------

def test_loc_solution_csv(tmp_path):
    path = tmp_path / "LOC_val_solution.csv"
    path.write_text("ImageId,PredictionString\n"
                    "ILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295 \n"
                    "ILSVRC2012_val_00000001,n15075141 1 2 3 4\n\n")
    assert read_loc_solution(path) == {"ILSVRC2012_val_00008726": SYNSETS.index("n02119789"),
                                       "ILSVRC2012_val_00000001": 999}
    path.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n99999999 1 2 3 4\n")
    with pytest.raises(GroundTruthError, match="n99999999.*not one of the 1000"):
        read_loc_solution(path)
    path.write_text("id,label\nx,n01440764\n")
    with pytest.raises(GroundTruthError, match="header"):
        read_loc_solution(path)
    path.write_text("ImageId,PredictionString\na,n01440764 1 2 3 4\na,n01440764 1 2 3 4\n")
    with pytest.raises(GroundTruthError, match="listed twice"):
        read_loc_solution(path)


def test_devkit_txt_maps_ids_through_the_devkit_table(tmp_path):
    (tmp_path / "map_clsloc.txt").write_text("n02119789 1 kit_fox\nn02100735 2 English_setter\nn01440764 3 tench\n")
    gt = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    gt.write_text("2\n1\n3\n2\n")
    labels = read_ground_truth(gt)  # the table is found beside the ground truth
    assert labels == {"ILSVRC2012_val_00000001": SYNSETS.index("n02100735"),
                      "ILSVRC2012_val_00000002": SYNSETS.index("n02119789"),
                      "ILSVRC2012_val_00000003": 0, "ILSVRC2012_val_00000004": SYNSETS.index("n02100735")}
    gt.write_text("1\n4\n")
    with pytest.raises(GroundTruthError, match="line 2: class id 4 is not in the class mapping"):
        read_ground_truth(gt)
    gt.write_text("1\nkit fox\n")
    with pytest.raises(GroundTruthError, match="line 2"):
        read_ground_truth(gt)
    (tmp_path / "map_clsloc.txt").write_text("n02119789 1 kit_fox\nn02100735 1 English_setter\n")
    with pytest.raises(GroundTruthError, match="appears twice"):
        read_ground_truth(gt)


# -- images and folders ---------------------------------------------------------------------------

def _image_in_mode(mode: str) -> tuple[Image.Image, np.ndarray]:
    """An image built directly in ``mode`` from known values, and the RGB pixels it stands for."""
    rng = np.random.RandomState(0)
    rgb = rng.randint(0, 256, (20, 30, 3)).astype(np.uint8)
    gray = rng.randint(0, 256, (20, 30)).astype(np.uint8)
    if mode == "RGB":
        return Image.fromarray(rgb), rgb
    if mode in ("L", "LA"):
        image = Image.fromarray(gray)
        if mode == "LA":
            image.putalpha(Image.fromarray(rng.randint(0, 256, (20, 30)).astype(np.uint8)))
        return image, np.repeat(gray[..., None], 3, axis=2)
    if mode == "RGBA":
        alpha = rng.randint(0, 256, (20, 30, 1)).astype(np.uint8)
        return Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA"), rgb  # alpha is dropped, not blended
    if mode == "P":
        palette = rng.randint(0, 256, (256, 3)).astype(np.uint8)
        indices = rng.randint(0, 256, (20, 30)).astype(np.uint8)
        image = Image.fromarray(indices, "P")
        image.putpalette(palette.tobytes())
        return image, palette[indices]
    if mode == "1":
        bits = rng.rand(20, 30) > 0.5
        return Image.fromarray(bits), np.repeat((bits * 255).astype(np.uint8)[..., None], 3, axis=2)
    if mode == "CMYK":  # with no black ink, red = 255 - cyan, green = 255 - magenta, blue = 255 - yellow
        cmy = rng.randint(0, 256, (20, 30, 3)).astype(np.uint8)
        cmyk = np.concatenate([cmy, np.zeros((20, 30, 1), np.uint8)], axis=2)
        return Image.fromarray(cmyk, "CMYK"), 255 - cmy
    if mode == "I;16":  # 16-bit grey: values above 255 saturate to white
        values = rng.randint(0, 700, (20, 30)).astype(np.uint16)
        image = Image.frombytes("I;16", (30, 20), values.tobytes())
        return image, np.repeat(np.minimum(values, 255).astype(np.uint8)[..., None], 3, axis=2)
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK", "I;16", "1", "LA"])
def test_load_image_gives_the_right_rgb_pixels_for_every_mode(tmp_path, mode):
    from torchvision.datasets.folder import pil_loader  # the loader of the official pipeline

    image, expected = _image_in_mode(mode)
    path = tmp_path / ("x.tiff" if mode in ("CMYK", "I;16") else "x.png")
    image.save(path)
    assert Image.open(path).mode == mode
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (30, 20)
    assert np.array_equal(np.asarray(loaded), expected)
    assert np.array_equal(np.asarray(loaded), np.asarray(pil_loader(str(path))))


def test_image_extensions_are_case_insensitive():
    assert all(is_image_file(f"a{ext}") for ext in (".JPEG", ".jpg", ".Jpeg", ".PNG", ".webp", ".BMP", ".TIF"))
    assert not any(is_image_file(f"a{ext}") for ext in (".txt", ".csv", ".JPEG.tmp", ""))


def test_open_dataset_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="nowhere"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="is a file"):
        open_dataset(tmp_path / "file.txt")
    names = ["dogs", "cats", "n01440764", "birds", "fish", "frogs", "owls", "bees"]
    for name in names:
        (tmp_path / "data" / name).mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"bees, birds, cats, dogs, fish and 2 more are not an ImageNet-1k synset"):
        open_dataset(tmp_path / "data")


# -- BN calibration batches -------------------------------------------------------------------------

def _train_folder(root: Path, n_per_class: int = 3) -> Path:
    rng = np.random.RandomState(0)
    for synset in ("n01440764", "n01443537", "n15075141"):
        (root / synset).mkdir(parents=True)
        for i in range(n_per_class):
            h, w = int(rng.randint(60, 300)), int(rng.randint(60, 300))
            Image.fromarray((rng.rand(h, w, 3) * 255).astype(np.uint8)).save(root / synset / f"{i}.JPEG")
    return root


def test_calibration_batches_are_seeded_and_independent_of_workers(tmp_path):
    train = _train_folder(tmp_path / "train")
    batches = calibration_batches(train, num_batches=3, batch_size=4, seed=7, workers=0, crop_size=96)
    first = list(batches)
    assert len(batches) == 3 and [b.shape for b in first] == [(4, 3, 96, 96)] * 3
    assert all(b.dtype == torch.uint8 for b in first)
    assert all(torch.equal(a, b) for a, b in zip(first, batches))  # iterating again gives the same tensors
    with_workers = list(calibration_batches(train, num_batches=3, batch_size=4, seed=7, workers=2, crop_size=96))
    assert all(torch.equal(a, b) for a, b in zip(first, with_workers))
    other = list(calibration_batches(train, num_batches=3, batch_size=4, seed=8, workers=0, crop_size=96))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    # 12 draws from 9 images: every image once before any repeats (a new permutation per pass)
    draws = batches.draws()
    assert sorted(draws[:9, 0].tolist()) == list(range(9)) and len(set(draws[:, 1].tolist())) == 12
    # the main process's RNG is left alone
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    list(calibration_batches(train, num_batches=1, batch_size=2, seed=1, crop_size=96))
    assert torch.equal(torch.rand(3), expected)


def test_calibration_bn_statistics_reproducible(tmp_path, supernet):

    train = _train_folder(tmp_path / "train", 2)
    stats = []
    for workers in (0, 2):
        model = supernet.extract("a0")
        calibrate(model, calibration_batches(train, 2, 3, seed=0, workers=workers), 192)
        stats.append([b.clone() for name, b in model.named_buffers() if "running" in name])
    assert all(torch.equal(a, b) for a, b in zip(*stats))
    assert not torch.equal(stats[0][0], supernet.extract("a0").stem.bn.running_mean)


def test_calibration_stops_on_a_bad_image(tmp_path):
    train = _train_folder(tmp_path / "train", 1)
    (train / "n01440764" / "broken.JPEG").write_bytes(b"\xff\xd8\xff not really")
    with pytest.raises(BadImageError, match="broken.JPEG"):
        list(calibration_batches(train, num_batches=1, batch_size=4, seed=0, crop_size=64))
    with pytest.raises(DatasetError, match="not found"):
        calibration_batches(tmp_path / "missing")


# -- calibrate: the one calibration path, checked against the recipe written out by hand -----------------

def test_calibrate_feeds_normalised_bicubic_resized_crops(supernet):
    import torch.nn.functional as F

    from alphanet_zoo import calibrate_bn

    crops = [torch.randint(0, 256, (3, 3, 224, 224), generator=torch.Generator().manual_seed(s), dtype=torch.uint8)
             for s in range(2)]
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1) / 255
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1) / 255
    by_hand = [F.interpolate((c.float() / 255 - mean) / std, size=(192, 192), mode="bicubic", align_corners=False)
               for c in crops]
    expected = calibrate_bn(supernet.extract("a0"), by_hand)
    got = calibrate(supernet.extract("a0"), crops, 192)
    for name, buffer in expected.named_buffers():
        assert torch.allclose(dict(got.named_buffers())[name].float(), buffer.float(), rtol=1e-5, atol=1e-6), name
    unresized = calibrate(supernet.extract("a0"), crops, None)  # None: the crops as they are, not resized
    assert not torch.allclose(unresized.stem.bn.running_var, got.stem.bn.running_var)


def test_calibrate_bn_uses_exactly_the_batches_asked_for_and_names_bad_input(supernet):
    from torch import nn

    from alphanet_zoo import InputError, calibrate_bn

    batches = [torch.randn(2, 3, 192, 192, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    one = calibrate_bn(supernet.extract("a0"), batches, num_batches=1)
    first_only = calibrate_bn(supernet.extract("a0"), batches[:1])
    all_three = calibrate_bn(supernet.extract("a0"), batches)
    assert torch.equal(one.stem.bn.running_mean, first_only.stem.bn.running_mean)
    assert not torch.equal(one.stem.bn.running_mean, all_three.stem.bn.running_mean)
    # momentum None: a cumulative average over every batch seen
    assert all_three.stem.bn.num_batches_tracked.item() == 3
    with pytest.raises(InputError, match="no BatchNorm layers"):
        calibrate_bn(nn.Linear(2, 2), batches)
    with pytest.raises(InputError, match="no batches were given"):
        calibrate_bn(supernet.extract("a0"), [])
    with pytest.raises(InputError, match="num_batches must be positive, got 0"):
        calibrate_bn(supernet.extract("a0"), batches, num_batches=0)
    with pytest.raises(InputError, match="a batch must be a tensor or \\(images, labels\\), got str"):
        calibrate_bn(supernet.extract("a0"), ["nope"])
