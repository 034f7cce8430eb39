"""Every published model, one by one (as timm's default-cfg test does for its models): the record that
travels with the weights describes the model it is attached to, and the model runs at the record's
input size to the record's classes."""
from __future__ import annotations

import pytest
import torch

import alphanet_zoo
from alphanet_zoo import AlphaNet, count_flops, count_params, list_models, model_info
from alphanet_zoo.record import Origin


@pytest.fixture(scope="module", params=list_models())
def model(request):
    torch.manual_seed(0)
    return AlphaNet(request.param).eval()


def test_the_record_is_the_models(model):
    record, info = model.pretrained_cfg, model_info(model.pretrained_cfg.name)
    assert record.arch == model.arch == info.arch
    assert record.num_classes == model.classifier.out_features == 1000
    assert record.mflops == pytest.approx(count_flops(model.arch), abs=1e-4) and record.mflops == \
        pytest.approx(info.mflops, abs=1e-4)
    assert record.params == sum(p.numel() for p in model.parameters()) == count_params(model.arch) == info.params
    assert record.preprocessing.resolution == model.arch.resolution
    assert record.labels is not None and len(record.labels) == record.num_classes
    assert record.origin is Origin.RANDOM and record.license is None and not record.calibrated
    assert record.published is not None and record.published.mflops == info.published_mflops \
        and record.published.top1 == info.published_top1


def test_the_model_runs_at_its_input_size_to_its_classes(model):
    side = model.pretrained_cfg.preprocessing.resolution
    with torch.no_grad():
        out = model(torch.randn(2, 3, side, side))
    assert out.shape == (2, model.pretrained_cfg.num_classes) and torch.isfinite(out).all()


def test_the_record_survives_its_dict(model):
    record = model.pretrained_cfg
    assert type(record).from_dict(record.to_dict()) == record
    assert alphanet_zoo.ModelRecord.from_dict(record.to_dict()).to_dict() == record.to_dict()
