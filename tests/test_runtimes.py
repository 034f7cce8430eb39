"""The table of runtimes (`alphanet_zoo.export.runtimes`): consistent with the format builders, the
runtime classes and setup.cfg's extras; every name accepted before it existed still accepted, by the
benchmark and by the latency search, as the one name of its runtime."""
from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from alphanet_zoo.commands import bench as bench_command
from alphanet_zoo.commands import search as search_command
from alphanet_zoo.errors import InputError, UsageError
from alphanet_zoo.export import BUILDERS, bench, runtimes
from alphanet_zoo.export.runtime import ExportedModel, TorchModel
from alphanet_zoo.search import latency_runtimes

REPO = Path(__file__).resolve().parents[1]
RUNTIMES = runtimes.RUNTIMES
# the names before the table: alphanet-bench's backends and alphanet-search's --backend values
OLD_BENCH = ("eager", "eager-cl", "torchscript", "pt2", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16",
             "openvino-int8", "openvino-onnx", "executorch", "executorch-int8", "litert", "litert-int8", "compile",
             "cuda")
OLD_SEARCH = ("onnxruntime", "openvino", "eager", "cuda", "executorch", "litert")
# other names runtimes went by (formats, ExportedModel.backend values) -> the one name now
ALIASES = {"tflite": "litert", "litert-xnnpack": "litert", "executorch-xnnpack": "executorch", "onnx": "onnxruntime",
           "torch.export": "pt2", "torch.compile": "compile", "pytorch": "eager"}


def _requirements() -> dict[str | None, set[str]]:
    """setup.cfg's distributions by extra (None: install_requires), lower case."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")

    def names(text: str) -> set[str]:
        return {re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0].lower()
                for line in text.splitlines() if line.strip() and not line.strip().startswith("#")}
    found: dict[str | None, set[str]] = {extra: names(text) for extra, text in cfg["options.extras_require"].items()}
    found[None] = names(cfg["options"]["install_requires"])
    return found


def test_every_runtime_format_has_a_builder_and_every_builder_a_runtime():
    for r in RUNTIMES.values():
        assert r.format is None or r.format in BUILDERS, r.name
        assert issubclass(r.model, ExportedModel)
        assert (r.format is None) == (r.model is TorchModel), r.name  # in memory: a TorchModel variant
        assert set(r.offered()) <= ({"fp32"} | set(BUILDERS[r.format].precisions) if r.format else {"fp32"})
        assert r.tables in (None, "module", "onnx", "file")
    for fmt in BUILDERS:
        runtime = runtimes.for_format(fmt)
        assert runtime.format == fmt and runtime.model.format == fmt
        assert runtime.model.backend == runtime.name  # the class reports its runtime by the table's name
    assert runtimes.for_format("onnx").name == "onnxruntime"  # openvino-onnx opens ONNX files too, second
    with pytest.raises(InputError, match="no runtime opens"):
        runtimes.for_format("tensorrt")


def test_converted_tables_have_a_builder_that_converts_any_module():
    for r in RUNTIMES.values():
        if r.tables == "file":
            assert type(BUILDERS[r.format]).module_bytes is not type(BUILDERS["onnx"]).module_bytes, r.name
    with pytest.raises(NotImplementedError):
        BUILDERS["onnx"].module_bytes(None, None)


def test_the_packages_and_extras_named_are_setup_cfgs():
    requirements = _requirements()
    for r in RUNTIMES.values():
        assert r.extra is None or r.extra in requirements, r.name
        for package in r.packages:
            assert package.replace("_", "-") in requirements[r.extra], (r.name, package)


def test_names_aliases_and_formats_resolve_to_one_runtime():
    assert list(RUNTIMES) == [r.name for r in RUNTIMES.values()]
    aliases = [a for r in RUNTIMES.values() for a in r.aliases]
    assert len(aliases) == len(set(aliases)) and not set(aliases) & set(RUNTIMES) and not set(aliases) & set(BUILDERS)
    for alias, name in ALIASES.items():
        assert runtimes.resolve(alias).name == name and runtimes.resolve(alias.upper()).name == name
    for name, r in RUNTIMES.items():
        assert runtimes.resolve(name).name == name
        row = next(line for line in runtimes.__doc__.splitlines() if line.startswith(f"| ``{name}`` |"))
        assert all(f"``{alias}``" in row for alias in r.aliases), row  # the module's table says the same
    with pytest.raises(InputError, match="unknown runtime 'tensorrt'; choose from eager, eager-cl"):
        runtimes.resolve("tensorrt")


def test_benchmark_names_are_the_old_ones_and_take_every_other_name():
    assert tuple(runtimes.variants()) == bench.BACKENDS == OLD_BENCH
    assert set(bench.OPT_IN) == {"compile", "executorch", "executorch-int8", "litert", "litert-int8"}
    for name in OLD_BENCH:
        runtime, precision = runtimes.variant(name)
        assert runtime.variant(precision) == name
    assert runtimes.variant("tflite-int8") == (RUNTIMES["litert"], "int8")
    assert runtimes.variant("onnx-int8") == (RUNTIMES["onnxruntime"], "int8")
    assert runtimes.variant("torch.export") == (RUNTIMES["pt2"], "fp32")
    for bad in ("pt2-int8", "openvino-onnx-int8", "eager-fp16"):  # precisions those runtimes do not run
        with pytest.raises(InputError, match="unknown runtime"):
            runtimes.variant(bad)


def test_alphanet_bench_takes_old_and_new_names_and_reports_the_one_name():
    parse = bench_command._parse_backends
    assert parse("onnxruntime,onnxruntime-int8,torchscript") == ["eager", "onnxruntime", "onnxruntime-int8",
                                                                 "torchscript"]
    assert parse("onnx, onnx-int8 ,torch.export,pytorch,pt2") == ["onnxruntime", "onnxruntime-int8", "pt2", "eager"]
    if not RUNTIMES["litert"].unavailable():
        assert parse("tflite-int8,litert") == ["eager", "litert-int8", "litert"]
    with pytest.raises(UsageError, match="unknown backend 'tensorrt'; valid backends: eager, eager-cl"):
        parse("eager,tensorrt")


def test_the_latency_search_takes_old_and_new_names():
    assert latency_runtimes.BACKENDS == tuple(r.name for r in RUNTIMES.values() if r.tables)
    assert set(latency_runtimes.BACKENDS) == set(OLD_SEARCH)
    for name in (*OLD_SEARCH, "tflite", "litert-xnnpack", "onnx", "pytorch"):
        args = search_command._parser().parse_args(["--out", "best.json", "--backend", name])
        assert args.backend == runtimes.resolve(name).name
        assert latency_runtimes.table_runtime(name).name == args.backend
    for name in ("pt2", "tensorrt"):
        with pytest.raises(UsageError, match=f"unknown latency backend '{name}'; choose from "):
            search_command._parser().parse_args(["--out", "best.json", "--backend", name])
    runtime = latency_runtimes.make_runtime("onnx", threads=1, batch_size=1)
    try:
        assert runtime.key()["runtime"] == "onnxruntime" and runtime.info is RUNTIMES["onnxruntime"]
    finally:
        runtime.close()
