"""Latency tables and the predictor: the layers a table times, each layer's graph against the
exporter's, the cache, the runtimes, the predictor's error on subnets measured end to end, and a
latency-budget ``alphanet-search``."""
from __future__ import annotations

import io
import json
import random
import statistics
import time
import warnings

import numpy as np
import pytest
import torch
from _search_helpers import one_thread  # noqa: F401 (autouse)

from alphanet_zoo import SEARCH_SPACE, count_flops
from alphanet_zoo.config import ArchConfig
from alphanet_zoo.registry import MODELS
from alphanet_zoo.search.latency import (LatencyPredictor, LatencyTable, cache_dir, fit_overhead,
                                         load_or_build, measure_layers, needed_layers, table_path)
from alphanet_zoo.search.latency_layers import Layer, arch_layers, input_shape, onnx_graph, space_layers, torch_module
from alphanet_zoo.search.latency_runtimes import Runtime, make_runtime




# -- the layers ------------------------------------------------------------------------------------

def test_space_layers_cover_every_subnet_once_per_context():
    layers = space_layers()
    keys = {layer.key for layer in layers}
    assert len(keys) == len(layers)
    kinds = [layer.kind for layer in layers]
    assert kinds.count("stem") == 2 * 4 and kinds.count("head") == 2 * 2 * 4  # widths x resolutions
    rng = random.Random(0)
    for arch in [SEARCH_SPACE.smallest(), SEARCH_SPACE.largest()] + [SEARCH_SPACE.sample(rng) for _ in range(300)]:
        own = arch_layers(arch)
        assert len(own) == 2 + sum(arch.depth) and set(own) <= set(layers)
    # a later block of mb6 at width 216 is the same context as mb7's first block at 216 -> 216: one entry
    arch = ArchConfig.from_dict({**MODELS["a0"].arch.to_dict(), "width": [16, 16, 24, 32, 64, 112, 216, 216, 1792],
                                 "depth": [1, 3, 3, 3, 3, 4, 1]})
    own = arch_layers(arch)
    assert own[-2] == own[-3] and own[-2].in_channels == own[-2].out_channels == 216
    # input sides follow the strides: 192 -> 96 after the stem, /2 at mb2, mb3, mb4, mb6
    sides = [layer.side for layer in arch_layers(MODELS["a0"].arch)]
    assert sides[0] == 192 and sides[1] == 96 and sides[-1] == 6
    assert len(needed_layers(max_mflops=260)) == len(space_layers(resolutions=[192]))  # 224 starts above 260


def _signature(model) -> list:
    """Each node's op, attributes and the shapes of its weights (constants by value), in order."""
    from onnx import helper, numpy_helper

    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    constants, out = {}, []
    for node in model.graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = tuple(numpy_helper.to_array(node.attribute[0].t).tolist())
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: round(v, 6) if isinstance(v, float) else v for k, v in attrs.items()}
        out.append((node.op_type, sorted(attrs.items()), [shapes.get(i, constants.get(i, "x")) for i in node.input]))
    return out


def test_each_layer_graph_is_what_the_exporter_writes_for_it():
    """Our hand-built graph against torch's ONNX exporter on the same PyTorch modules (BN folded)."""
    import onnx

    from alphanet_zoo.export.onnx_export import _strip_identities

    layers = space_layers()
    rng = random.Random(3)
    picked = [lay for lay in layers if lay.kind != "mb"][:3] + [
        next(lay for lay in layers if lay.kind == "mb" and lay.stride == 2 and lay.se_channels),
        next(lay for lay in layers if lay.kind == "mb" and lay.stride == 2 and not lay.shortcut_conv),
        next(lay for lay in layers if lay.kind == "mb" and not lay.has_expand and lay.shortcut_conv),
    ] + rng.sample([lay for lay in layers if lay.kind == "mb"], 4)
    for layer in picked:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(torch_module(layer), (torch.zeros(*input_shape(layer, 1)),), buffer, dynamo=False,
                              opset_version=18, do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL,
                              input_names=["input"], output_names=["output"])
        exported = onnx.load_from_string(buffer.getvalue())
        _strip_identities(exported.graph)
        ours = onnx_graph(layer, 1)
        onnx.checker.check_model(ours, full_check=True)
        assert _signature(ours) == _signature(exported), layer.key


# -- the table: cache, reuse, the fit ----------------------------------------------------------------

class FakeRuntime(Runtime):
    """Calls that take a known time: 2 us per layer MFLOP plus 20 us per call (busy-waiting)."""

    name = "fake"
    calls = 0

    @property
    def version(self) -> str:
        return "1.0"

    @staticmethod
    def _busy(seconds: float):
        def run():
            FakeRuntime.calls += 1
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass
        return run

    def layer(self, layer: Layer):
        return self._busy(20e-6 + 2e-6 * layer.out_channels * layer.side / 100)

    def model(self, arch, num_classes=1000):
        return self._busy(sum(20e-6 * 0.5 + 2e-6 * lay.out_channels * lay.side / 100 for lay in arch_layers(arch)))


@pytest.mark.slow
def test_a_table_is_built_once_cached_per_key_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHANET_ZOO_CACHE", str(tmp_path / "cache"))
    runtime = FakeRuntime(threads=1, batch_size=1)
    assert cache_dir() == tmp_path / "cache"
    table, path, built = load_or_build(runtime, max_mflops=260)
    assert built and path == table_path(runtime.key()) and path.parent == tmp_path / "cache" / "latency"
    assert "fake" in path.name and "-t1-b1-" in path.name
    assert set(table.entries) == {lay.key for lay in needed_layers(max_mflops=260)}
    v = table.validation
    assert v["subnets"] == 8 and v["worst_rel_error"] >= v["median_rel_error"] >= 0
    assert all(p["mflops"] <= 260 for p in v["points"])
    calls = FakeRuntime.calls
    again, _, built = load_or_build(FakeRuntime(threads=1, batch_size=1), max_mflops=260)
    assert not built and FakeRuntime.calls == calls and again.entries == table.entries  # read back, not measured
    # another thread count is another table; a table file of other settings is refused
    other, other_path, built = load_or_build(FakeRuntime(threads=2, batch_size=1), max_mflops=260, validate=False)
    assert built and other_path != path
    with pytest.raises(ValueError, match="threads 1"):
        load_or_build(FakeRuntime(threads=2, batch_size=1), path, max_mflops=260)
    # the file can be kept and named: it is reused from there
    kept = tmp_path / "kept.json"
    kept.write_text(path.read_text())
    reused, _, built = load_or_build(FakeRuntime(threads=1, batch_size=1), kept, max_mflops=260)
    assert not built and reused.to_dict() == table.to_dict()
    # more resolutions than the file holds, measured on another machine: an error, not a guess
    data = json.loads(kept.read_text())
    data["key"]["machine_id"] = "elsewhere"
    kept.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="another machine"):
        load_or_build(FakeRuntime(threads=1, batch_size=1), kept, max_mflops=400)
    with pytest.raises(ValueError, match="not a latency table"):
        LatencyTable.from_dict({"entries": {}})


def test_the_overhead_fit_recovers_a_known_line():
    sums = [1.0, 2.0, 4.0, 8.0]
    assert fit_overhead(sums, [0.5 * s + 3 for s in sums]) == pytest.approx((0.5, 3.0))
    assert fit_overhead([2.0, 2.0], [3.0, 5.0]) == pytest.approx((1.0, 2.0))  # degenerate: the median gap
    # one subnet timed while the machine was busy does not pull the line
    assert fit_overhead([1.0, 2.0, 3.0, 4.0, 5.0], [1.5, 2.5, 3.5, 40.0, 5.5]) == pytest.approx((1.0, 0.5))


def test_the_predictor_is_the_table_sum_scaled_plus_the_offset():
    arch = MODELS["a0"].arch
    table = LatencyTable({"runtime": "x", "version": "1", "machine": "m", "machine_id": "0", "threads": 1,
                          "batch_size": 1}, {lay.key: 0.25 for lay in arch_layers(arch)}, scale=2.0, offset_ms=1.0)
    assert LatencyPredictor(table)(arch) == pytest.approx(2.0 * 0.25 * len(arch_layers(arch)) + 1.0)
    with pytest.raises(ValueError, match="no entry"):
        LatencyPredictor(table)(SEARCH_SPACE.largest())


# -- the real runtimes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "eager"])
def test_each_runtime_runs_layers_and_whole_subnets(backend):
    pytest.importorskip(backend if backend != "eager" else "torch")
    runtime = make_runtime(backend, threads=1, batch_size=2)
    try:
        table = LatencyTable(runtime.key())
        layers = arch_layers(MODELS["a0"].arch)
        measure_layers(runtime, table, [layers[0], layers[5], layers[-1]])
        assert len(table.entries) == 3 and all(v > 0 for v in table.entries.values())
        run = runtime.model(MODELS["a0"].arch)
        with runtime.active():
            run()
        assert not list(runtime.workdir.glob("model_*.onnx"))  # exported files are not kept once opened
        assert runtime.key()["batch_size"] == 2 and runtime.key()["runtime"] == backend
    finally:
        runtime.close()
    for name in ("tensorrt", "pt2"):  # unknown; a runtime latency tables are not built on
        with pytest.raises(ValueError, match="unknown latency backend"):
            make_runtime(name, 1, 1)


@pytest.fixture(scope="module")
def small_table(tmp_path_factory):
    """An ONNX Runtime table (one thread, batch 1) for resolution 192 (subnets up to 260 MFLOPs), fitted
    and validated on 3 + 3 subnets, in a file; and how long building it took."""
    path = tmp_path_factory.mktemp("table") / "table.json"
    runtime = make_runtime("onnxruntime", threads=1, batch_size=1)
    start = time.perf_counter()
    try:
        table, _, built = load_or_build(runtime, path, max_mflops=260, fit_subnets=3, validation_subnets=3)
    finally:
        runtime.close()
    assert built
    return table, path, time.perf_counter() - start


@pytest.mark.slow
def test_the_predictor_error_on_random_subnets_is_bounded(small_table):
    """A hang and sanity guard (generous bounds), on subnets the fit did not see."""
    from alphanet_zoo.search.latency import measure_models, spread_subnets

    table, _, seconds = small_table
    assert seconds < 600 and len(table.entries) == len(needed_layers(max_mflops=260))
    v = table.validation
    assert v["subnets"] == 3 and v["median_rel_error"] < 0.5 and v["worst_rel_error"] < 1.0
    predict = LatencyPredictor(table)
    archs = spread_subnets(2, seed=7, max_mflops=260)
    runtime = make_runtime("onnxruntime", threads=1, batch_size=1)
    try:
        measured = [m["ms"] for m in measure_models(runtime, archs)]
    finally:
        runtime.close()
    for arch, ms in zip(archs, measured):
        assert 0.5 < predict(arch) / ms < 2.0, (count_flops(arch), predict(arch), ms)


def _export_and_time(arch: ArchConfig, path, threads: int = 1) -> float:
    """What a user does: export the architecture and time the file with ONNX Runtime (median of calls)."""
    import onnxruntime as ort

    from alphanet_zoo import AlphaNet
    from alphanet_zoo.export import to_onnx

    to_onnx(AlphaNet(arch).eval(), path, verify=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.zeros((1, 3, arch.resolution, arch.resolution), np.float32)
    for _ in range(5):
        session.run(None, {"input": x})
    times = []
    for _ in range(30):
        t = time.perf_counter()
        session.run(None, {"input": x})
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


@pytest.mark.slow
def test_a_latency_budget_search_end_to_end(small_table, tmp_path, official_checkpoint, capsys):
    pytest.importorskip("matplotlib")
    from _search_helpers import make_search_data

    from alphanet_zoo.commands.search import main

    table, table_file, _ = small_table
    train, heldout = make_search_data(tmp_path / "data", official_checkpoint)
    # held in the machine's slower state, which a parallel test run's load is part of: room enough for that
    budget = round(LatencyPredictor(table)(MODELS["a0"].arch) * 2.5, 3)
    out, history, plot = tmp_path / "best.json", tmp_path / "h.jsonl", tmp_path / "p.png"
    assert main(["--supernet", str(official_checkpoint), "--flops", "260", "--data", str(heldout), "--calib-data",
                 str(train), "--calib-batches", "2", "--calib-batch-size", "4", "--workers", "0", "--crop-size", "64",
                 "--population", "4", "--generations", "1", "--backend", "onnxruntime", "--threads", "1",
                 "--batch-size", "1", "--latency-table", str(table_file), "--measure-top", "2",
                 "--latency-ms", str(budget), "--out", str(out), "--history", str(history), "--plot", str(plot)]) == 0
    printed = capsys.readouterr().out
    assert "latency table loaded" in printed and "<- best" in printed
    best = json.loads(out.read_text())
    rows = [json.loads(line) for line in history.read_text().splitlines()]
    lat = best["latency"]
    assert best["budget"]["latency_ms"] == budget and lat["budget_ms"] == budget
    assert all(r["latency_ms"] <= budget for r in rows)  # every candidate inside the budget (predicted)
    assert lat["backend"] == "onnxruntime" and lat["threads"] == 1 and lat["batch_size"] == 1
    assert lat["predicted_ms"] <= budget and lat["measured_ms"] > 0 and lat["reference"]["name"] == "a0"
    assert lat["predictor"]["median_rel_error"] is not None and lat["tried"]
    # measured in order of merit (most accurate first), the first to meet the budget is the one reported
    ranked = [r["arch"] for r in sorted(rows, key=lambda r: (r["top1"], -r["latency_ms"], -r["mflops"]),
                                        reverse=True)]
    positions = [ranked.index(t["arch"]) for t in lat["tried"] if t["order"] == "merit"]
    assert positions[0] == 0 and positions == sorted(positions)
    fallback = [t["predicted_ms"] for t in lat["tried"] if t["order"] == "fastest"]  # after the misses, if any
    assert fallback == sorted(fallback) and [t["order"] for t in lat["tried"]] == \
        ["merit"] * len(positions) + ["fastest"] * len(fallback)
    meeting = [t for t in lat["tried"] if t["held_ms"] <= budget]  # in the machine's slower state
    assert meeting == lat["tried"][-1:] or not meeting  # measuring stops at the first that meets it
    assert all(t["held_ms"] >= t["measured_ms"] for t in lat["tried"])
    if meeting:
        assert best["architecture"] == meeting[0]["arch"] and lat["meets_budget"]
    else:
        assert lat["held_ms"] == min(t["held_ms"] for t in lat["tried"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # what a user measures on the exported best: near what the search measured (a sanity bound)
    mine = _export_and_time(ArchConfig.from_dict(best["architecture"]), tmp_path / "best.onnx")
    assert 0.4 < mine / lat["measured_ms"] < 2.5


def test_after_misses_by_merit_the_fastest_predicted_are_measured():
    """The end-to-end check: most accurate first; once the misses rule out the rest by merit, the fastest
    predicted. Each fake subnet's call sleeps its 'true' time, so what is measured is known here."""
    import contextlib
    import random
    import time
    from types import SimpleNamespace

    from alphanet_zoo.search.evolution import Candidate, SearchResult
    from alphanet_zoo.search.latency_search import LatencySetup

    archs = [SEARCH_SPACE.sample(random.Random(i)) for i in range(4)]
    true_ms = {archs[0]: 9.0, archs[1]: 8.5, archs[2]: 3.0, archs[3]: 1.0, MODELS["a0"].arch: 2.0}
    runtime = SimpleNamespace(active=contextlib.nullcontext,
                              model=lambda arch, n=1000: (lambda: time.sleep(true_ms[arch] / 1e3)))
    table = SimpleNamespace(key={"runtime": "fake", "version": "0", "threads": 1, "batch_size": 1, "machine": "m"},
                            validation={}, scale=1.0, offset_ms=0.0)
    setup = LatencySetup(runtime, table, lambda arch: 1.0, "table.json", 1000)
    # predicted: the two most accurate near the 6 ms budget (they miss by 50 %), then two under-predicted ones
    history = [Candidate(archs[0], 300, 80.0, 5.9), Candidate(archs[1], 290, 79.0, 5.8),
               Candidate(archs[2], 250, 70.0, 5.0), Candidate(archs[3], 210, 60.0, 4.0)]
    chosen, checked = setup._measure(SearchResult(history[0], history), 6.0, 4, None)
    orders = [(t["order"], t["top1"]) for t in checked["tried"]]
    # after the first miss every other prediction * (9 / 5.9) is over 6 ms: none is left by merit; then the
    # fastest predicted first: 4.0 ms (true 1 ms) meets it
    assert orders == [("merit", 80.0), ("fastest", 60.0)]
    assert chosen == archs[3] and checked["meets_budget"] and checked["measured_ms"] < 6.0


# -- the timing layer (alphanet_zoo.export.timing) ------------------------------------------------------

def test_time_calls_counts_warmup_timed_calls_and_syncs():
    from alphanet_zoo.export import timing

    log = []
    times = timing.time_calls(lambda: log.append("run"), warmup=3, calls=4, sync=lambda: log.append("sync"))
    assert len(times) == 4 and all(t >= 0 for t in times)
    assert log == ["run"] * 3 + ["sync"] + ["run", "sync"] * 4  # synced before the clock starts, then per call
    slow = timing.time_calls(lambda: time.sleep(0.002), calls=2, min_seconds=0.03, max_calls=100)
    assert 2 < len(slow) < 30 and min(slow) >= 0.002
    settled = []
    timing.time_calls(lambda: settled.append(time.sleep(0.001)), warmup=0, calls=0, settle_s=0.02)
    assert len(settled) >= 5  # untimed calls for at least settle_s


def test_time_in_turns_interleaves_runs_with_a_pause_before_each_turn():
    from alphanet_zoo.export import timing

    order = []
    runs = [lambda: order.append("a"), lambda: order.append("b")]
    start = time.perf_counter()
    turns = timing.time_in_turns(runs, rounds=3, calls=[2, 2, 1], warmup=1, first_warmup=0, pause_s=0.01)
    assert time.perf_counter() - start >= 6 * 0.01  # one pause per turn
    assert [[len(t) for t in run] for run in turns] == [[2, 2, 1], [2, 2, 1]]
    # turns alternate: a's first turn (no warm-up), b's, then each later turn one untimed call first
    assert "".join(order) == "aabb" + "aaabbb" + "aabb"
    assert timing.flat(turns[0]) == turns[0][0] + turns[0][1] + turns[0][2]


def test_time_in_turns_times_each_run_alike():
    """Two runs of known, different lengths: each one's median is its own, taken in turns."""
    from alphanet_zoo.export import timing

    def busy(seconds):
        def run():
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass
        return run

    turns = timing.time_in_turns([busy(0.001), busy(0.003)], rounds=3, calls=3, pause_s=0)
    fast, slow = (statistics.median(timing.flat(t)) for t in turns)
    assert 0.001 <= fast < 0.003 <= slow


def test_cpu_name_threads_and_a_timed_statement():
    from alphanet_zoo.export import timing

    assert isinstance(timing.cpu_name(), str) and timing.cpu_name()
    before = torch.get_num_threads()
    with timing.torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with timing.torch_threads(None):
        assert torch.get_num_threads() == before
    seconds = timing.mean_seconds(lambda: time.sleep(0.002), calls=5, threads=1)
    assert 0.002 <= seconds < 0.05
