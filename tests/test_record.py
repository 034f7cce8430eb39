"""The model record: typed origin, one schema (`alphanet_zoo.schema`), derived keys checked, format /2 read."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from alphanet_zoo import SEARCH_SPACE, AlphaNet, InputError, Measurement, ModelRecord
from alphanet_zoo.record import DERIVED_KEYS, RECORD_FORMAT, Origin
from alphanet_zoo.schema import from_dict

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def record() -> ModelRecord:
    return AlphaNet(SEARCH_SPACE.smallest(), 10).pretrained_cfg


def test_origin_is_set_where_records_are_made(record):
    assert record.origin is Origin.RANDOM and record.license is None and not record.needs_calibration
    assert record.source == "random initialisation (untrained)"
    assert ModelRecord.create(SEARCH_SPACE.smallest(), origin=Origin.EXTRACTED).needs_calibration
    assert ModelRecord.create(SEARCH_SPACE.smallest(), origin="file").origin is Origin.FILE
    assert ModelRecord.create(SEARCH_SPACE.smallest(), origin=Origin.FILE).license == "cc-by-nc-4.0"
    assert {o.value for o in Origin} == {"random", "extracted", "trained", "finetuned", "file"}
    with pytest.raises(InputError, match="origin must be one of random, extracted"):
        dataclasses.replace(record, origin="downloaded")


def test_the_record_round_trips_with_its_origin_and_marks_its_derived_keys(record):
    data = json.loads(json.dumps(record.to_dict()))
    assert data["format"] == RECORD_FORMAT and data["origin"] == "random" and data["license"] is None
    assert data["derived"] == list(DERIVED_KEYS)
    assert ModelRecord.from_dict(data) == record


@pytest.mark.parametrize("key, value", [("mflops", 1.0), ("params", 5), ("official_name", "alphanet_a0"),
                                        ("published", {"top1": 99.0, "top5": None, "mflops": 1, "source": "x"})])
def test_derived_keys_that_disagree_with_the_architecture_are_refused(record, key, value):
    data = record.to_dict()
    data[key] = value
    with pytest.raises(InputError, match=f"{key} is .* derived, not a fact to edit"):
        ModelRecord.from_dict(data)


@pytest.mark.parametrize("change, message", [
    ({"origin": "downloaded"}, "origin must be one of random, extracted, trained, finetuned, file"),
    ({"origin": None}, "origin must be one of"),
    ({"library": "timm"}, "not a record of this package"),
    ({"measured": [{"top1": 5, "images": 0, "data": "x"}]}, r"measured\[0\]\.images must be an integer from 1"),
    ({"calibration": {"data": "t", "num_batches": 1, "batch_size": 1, "seed": 0, "what": 1}},
     "calibration: unknown key 'what'"),
    ({"architecture": {"resolution": 192}}, "architecture: missing width"),
    ({"preprocessing": {"resolution": 192, "mean": [1, 2]}}, r"preprocessing\.mean must be a list of 3"),
    ({"labels": ["a"] * 9 + [3]}, r"labels\[9\] must be a string"),
])
def test_every_field_is_checked_by_the_one_schema(record, change, message):
    data = {**record.to_dict(), **change}
    with pytest.raises(InputError, match=message):
        ModelRecord.from_dict(data, "config.json")


def test_a_missing_top5_reads_as_none_and_missing_required_keys_are_named():
    measurement = from_dict(Measurement, {"top1": 1, "images": 2, "data": "v"}, "m")
    assert measurement.top5 is None and measurement.calibrated is False and measurement.top1 == 1.0
    with pytest.raises(InputError, match="m: missing images, data"):
        from_dict(Measurement, {"top1": 1}, "m")


@pytest.mark.parametrize("folder, origin, license", [("model_format2_extracted", Origin.EXTRACTED, "cc-by-nc-4.0"),
                                                     ("model_format2_random", Origin.RANDOM, None)])
def test_format_2_config_json_still_loads_with_its_origin_read_from_its_source(folder, origin, license):
    data = json.loads((DATA / folder / "config.json").read_text())
    assert data["format"] == "alphanet_zoo.model/2" and "origin" not in data  # written by the /2 code
    record = ModelRecord.from_dict(data)
    assert record.origin is origin and record.license == license
    assert record.source == data["source"] and record.labels == tuple(data["labels"])
    assert record.to_dict()["format"] == RECORD_FORMAT
    if origin is Origin.EXTRACTED:
        assert record.calibration.num_batches == 2 and record.measured[0].top1 == 12.5
        assert not record.needs_calibration
    assert ModelRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_a_model_of_another_resolution_says_it_in_one_place():
    model = AlphaNet("a0")
    record = model.pretrained_cfg
    assert record.published is not None
    model.set_resolution(64)
    moved = model.pretrained_cfg
    assert model.arch.resolution == moved.arch.resolution == moved.preprocessing.resolution == 64
    assert moved.published is None and moved.mflops < record.mflops / 5 and moved.params == record.params
    assert ModelRecord.from_dict(json.loads(json.dumps(moved.to_dict()))) == moved
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)
    with pytest.raises(InputError, match="resolution 7 is outside 32..1024"):
        model.set_resolution(7)
    with pytest.raises(InputError, match="ends at 192, not at resolution 96"):
        record.with_resolution(96, record.preprocessing)
    with pytest.raises(InputError, match=r"resolution 64 is not in the search space"):
        moved.arch.validate()  # a supernet samples only the space's resolutions
