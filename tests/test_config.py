"""ArchConfig, the search space and the registry of published models."""
import dataclasses
import json
import random

import pytest

import alphanet_zoo
from alphanet_zoo import SEARCH_SPACE, ArchConfig, get_arch, list_models, model_info


def test_arch_config_is_frozen_typed_and_round_trips():
    arch = ArchConfig(192, [16, 16, 24, 32, 64, 112, 192, 216, 1792], [1, 3, 3, 3, 3, 3, 1],
                      [3] * 7, [1, 4, 4, 4, 4, 6, 6])
    assert isinstance(arch.width, tuple) and isinstance(arch.depth, tuple)
    assert arch == get_arch("a0") and hash(arch) == hash(get_arch("a0"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.resolution = 224
    assert ArchConfig.from_dict(arch.to_dict()) == arch
    assert ArchConfig.from_json(json.dumps(arch.to_dict())) == arch
    assert json.loads(arch.to_json())["width"] == list(arch.width)


@pytest.mark.parametrize("field, value, message", [
    ("width", [16] * 8, "width needs 9 entries"),
    ("depth", [1, 3, 3], "depth needs 7 entries"),
    ("kernel_size", [3] * 8, "kernel_size needs 7 entries"),
    ("expand_ratio", [], "expand_ratio needs 7 entries"),
])
def test_wrong_lengths_raise_on_construction(field, value, message):
    data = get_arch("a0").to_dict()
    data[field] = value
    with pytest.raises(ValueError, match=message):
        ArchConfig.from_dict(data)


def test_non_integer_entries_are_rejected():
    data = get_arch("a0").to_dict()
    data["depth"] = [1, 3, 3, 3, 3, 3, "1"]
    with pytest.raises(TypeError, match="depth"):
        ArchConfig.from_dict(data)
    data = get_arch("a0").to_dict()
    data["resolution"] = True
    with pytest.raises(TypeError, match="resolution"):
        ArchConfig.from_dict(data)


def test_from_dict_names_missing_and_unknown_keys():
    data = get_arch("a0").to_dict()
    del data["depth"]
    data["widths"] = [1]
    with pytest.raises(ValueError, match=r"missing depth.*unknown widths"):
        ArchConfig.from_dict(data)


@pytest.mark.parametrize("field, index, value, expected", [
    ("width", 0, 20, r"width of stage first_conv is 20; allowed: \[16, 24\]"),
    ("width", 6, 224, r"width of stage mb6 is 224; allowed: \[192, 200, 208, 216\]"),
    ("width", 8, 2048, r"width of stage last_conv is 2048; allowed: \[1792, 1984\]"),
    ("depth", 4, 9, r"depth of stage mb5 is 9; allowed: \[3, 4, 5, 6, 7, 8\]"),
    ("kernel_size", 2, 7, r"kernel_size of stage mb3 is 7; allowed: \[3, 5\]"),
    ("expand_ratio", 0, 4, r"expand_ratio of stage mb1 is 4; allowed: \[1\]"),
    ("expand_ratio", 5, 4, r"expand_ratio of stage mb6 is 4; allowed: \[6\]"),
])
def test_validate_names_field_stage_and_allowed_values(field, index, value, expected):
    data = get_arch("a3").to_dict()
    data[field][index] = value
    arch = ArchConfig.from_dict(data)  # constructing is fine: only the lengths are fixed
    with pytest.raises(ValueError, match=expected):
        arch.validate()
    assert not SEARCH_SPACE.contains(arch)


def test_validate_resolution():
    data = get_arch("a3").to_dict()
    data["resolution"] = 300
    with pytest.raises(ValueError, match=r"resolution 300 .*allowed: \[192, 224, 256, 288\]"):
        ArchConfig.from_dict(data).validate()


def test_space_extremes_match_the_official_min_and_max(reference):
    subnets = reference["supernet_train_mode"]["subnets"]
    assert SEARCH_SPACE.smallest() == ArchConfig.from_dict(subnets["min"]["config"])
    assert SEARCH_SPACE.largest() == ArchConfig.from_dict(subnets["max"]["config"])


def test_sampling_is_seeded_and_inside_the_space():
    first = [SEARCH_SPACE.sample(seed) for seed in range(50)]
    assert first == [SEARCH_SPACE.sample(seed) for seed in range(50)]
    assert len(set(first)) == 50
    assert all(SEARCH_SPACE.contains(a) for a in first)
    rng = random.Random(3)
    assert SEARCH_SPACE.sample(rng) != SEARCH_SPACE.sample(rng)


def test_registry_names_and_aliases(reference):
    assert list_models() == ["a0", "a1", "a2", "a3", "a4", "a5", "a5_base", "a6"]
    assert alphanet_zoo.list_models is list_models
    for alias in ("a5_small", "A5", "AlphaNet-A5", "alphanet_a5_small", " a5 "):
        assert get_arch(alias) == get_arch("a5")
    for alias in ("a5_1", "A5_BASE", "AlphaNet-A5-Base", "alphanet_a5_base"):
        assert get_arch(alias) == get_arch("a5_base")
    for key, sub in reference["subnets"].items():
        info = model_info(key)
        assert info.arch == ArchConfig.from_dict(sub["config"])
        assert info.official_key == key and info.official_name == sub["official_name"]
        assert info.arch.validate() is info.arch


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match=r"^unknown model 'a7'; known: a0, a1, a2, a3, a4, a5, a5_base, a6 "
                                         r"\(aliases: a5_1, a5_small\)$"):
        get_arch("a7")


def test_published_table_matches_design():
    table = {m: (model_info(m).published_mflops, model_info(m).published_top1) for m in list_models()}
    assert table == {"a0": (203, 77.87), "a1": (279, 78.94), "a2": (317, 79.20), "a3": (357, 79.41),
                     "a4": (444, 80.01), "a5": (491, 80.29), "a5_base": (596, 80.62), "a6": (709, 80.78)}
    assert all(model_info(m).published_top5 is None for m in list_models())  # never invented
