"""The evaluation transform: equal to the official pipeline's tensor, then the bicubic resize."""
import numpy as np
import pytest
import torch
from conftest import PARITY_DIR
from PIL import Image

import alphanet_zoo
from alphanet_zoo.preprocessing import EvalTransform, Preprocessing, resize_to_resolution


@pytest.fixture(scope="module")
def photo():
    return Image.open(PARITY_DIR / "photo.png")


@pytest.fixture(scope="module")
def official_tensor():
    return torch.from_numpy(np.load(PARITY_DIR / "photo_official_eval_tensor.npy"))


def test_official_eval_tensor(photo, official_tensor):
    tensor = alphanet_zoo.transforms("a1")(photo)  # a1 runs at 224: no final resize
    assert tensor.shape == (3, 224, 224)
    assert (tensor - official_tensor).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", ["a0", "a4", "a6"])
def test_then_bicubic_resize_to_the_model_resolution(photo, official_tensor, name):
    resolution = alphanet_zoo.get_arch(name).resolution
    tensor = alphanet_zoo.transforms(name)(photo)
    expected = torch.nn.functional.interpolate(official_tensor[None], size=resolution, mode="bicubic",
                                               align_corners=False)[0]
    assert tensor.shape == (3, resolution, resolution)
    assert (tensor - expected).abs().max().item() <= 1e-5


def test_modes_are_converted_to_rgb(photo):
    transform = alphanet_zoo.transforms(alphanet_zoo.AlphaNet("a0"))
    rgb = transform(photo)
    assert torch.equal(transform(photo.convert("RGBA")), rgb)
    assert transform(photo.convert("L")).shape == (3, 192, 192)
    assert transform(photo.convert("P")).shape == (3, 192, 192)
    with pytest.raises(TypeError, match="PIL image"):
        transform(torch.zeros(3, 8, 8))


def test_preprocessing_round_trip_and_resize_helper():
    p = Preprocessing(256)
    assert Preprocessing.from_dict(p.to_dict()) == p
    assert isinstance(alphanet_zoo.transforms("a4"), EvalTransform)
    x = torch.randn(2, 3, 224, 224)
    assert resize_to_resolution(x, 224) is x
    assert resize_to_resolution(x[0], 192).shape == (3, 192, 192)
