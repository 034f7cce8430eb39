"""Re-anchoring a cached latency table to today's machine (issue 33): the mapping, and
``alphanet-search --latency-ms`` with a runtime whose timings are a known table (deterministic: no clock)."""
from __future__ import annotations

import json

import pytest
from _search_helpers import one_thread  # noqa: F401 (autouse)

from alphanet_zoo import SEARCH_SPACE, count_flops
from alphanet_zoo.config import ArchConfig
from alphanet_zoo.export import timing
from alphanet_zoo.search import latency_search
from alphanet_zoo.search.latency import LatencyPredictor, LatencyTable
from alphanet_zoo.search.latency_anchor import Anchor, reference_subnets
from alphanet_zoo.search.latency_layers import arch_layers, space_layers
from alphanet_zoo.search.latency_runtimes import Runtime


def _anchor(points):
    return Anchor([{"name": str(i), "mflops": float(i), "predicted_ms": p, "measured_ms": m}
                   for i, (p, m) in enumerate(points)])


def test_the_anchor_is_exact_at_the_references_linear_between_and_proportional_beyond():
    anchor = _anchor([(5.0, 4.0), (10.0, 9.0), (20.0, 16.0)])
    assert [anchor.map(p) for p in (5.0, 10.0, 20.0)] == [4.0, 9.0, 16.0]
    assert anchor.map(7.5) == pytest.approx(6.5) and anchor.map(15.0) == pytest.approx(12.5)
    assert anchor.map(2.5) == pytest.approx(2.0) and anchor.map(40.0) == pytest.approx(32.0)
    assert anchor.scale == pytest.approx(0.8)
    # noise that inverts two references does not make the map decrease
    noisy = _anchor([(5.0, 4.0), (10.0, 3.9), (20.0, 16.0)])
    grid = [1 + 0.5 * i for i in range(60)]
    assert all(a <= b for a, b in zip(map(noisy.map, grid), map(noisy.map, grid[1:])))


def test_the_references_are_the_smallest_a_middle_one_and_the_largest_under_the_cap():
    refs = dict(reference_subnets())
    assert refs["smallest"] == SEARCH_SPACE.smallest() and refs["largest"] == SEARCH_SPACE.largest()
    capped = dict(reference_subnets(max_mflops=260))
    flops = [count_flops(capped[k]) for k in ("smallest", "middle", "largest")]
    assert flops == sorted(flops) and flops[-1] <= 260 and flops[-1] > 240
    assert dict(reference_subnets(max_mflops=260)) == capped  # the same subnets every run


# -- the command, on a runtime whose subnets take a known time -------------------------------------------

def _layer_ms(layer) -> float:
    return 0.02 + 0.002 * layer.out_channels * layer.side / 100


def true_ms(arch: ArchConfig) -> float:
    """What a subnet measures end to end on the fake machine today."""
    return 0.95 * sum(_layer_ms(lay) for lay in arch_layers(arch)) + 0.02


class TableRuntime(Runtime):
    """A runtime whose subnets 'take' `true_ms`; the timing function below reads it (no clock)."""

    name = "fake"
    timed: list = []
    load = 1.0  # how much slower than quiet the machine is after the first turn of each timing (1: a quiet machine)
    states: list | None = None  # per timing, in order: the machine's load through all its turns (overrides load)

    @property
    def version(self) -> str:
        return "1.0"

    def machine(self) -> str:
        return "fake machine"

    def model(self, arch, num_classes=1000):
        def run():
            pass
        run.ms = true_ms(arch)
        return run


def _time_in_turns(runs, *, rounds, **_):
    """Turns of 5 calls (seconds) of runs that 'take' ``run.ms`` times the machine's load of the turn, spread
    2 % either way: the first turn quiet and the others `TableRuntime.load`, or all turns at the next of
    `TableRuntime.states` (the machine's state of the moment)."""
    TableRuntime.timed.append(len(runs))
    if TableRuntime.states:
        loads = [TableRuntime.states[min(len(TableRuntime.timed), len(TableRuntime.states)) - 1]] * rounds
    else:
        loads = [1.0] + [TableRuntime.load] * (rounds - 1)

    def turns(ms):
        return [[ms * f * load / 1e3 for f in (0.98, 0.98, 1.0, 1.02, 1.02)] for load in loads]
    return [turns(r.ms) for r in runs]


@pytest.fixture
def fake_machine(monkeypatch):
    TableRuntime.timed, TableRuntime.load, TableRuntime.states = [], 1.0, None
    monkeypatch.setattr(latency_search, "make_runtime", lambda name, threads, batch: TableRuntime(threads, batch))
    monkeypatch.setattr(timing, "time_in_turns", _time_in_turns)


def _table(path, factor: float) -> LatencyTable:
    """A table of every layer, its milliseconds ``factor`` times the quiet machine's (1.3: built under load)."""
    table = LatencyTable(TableRuntime(1, 1).key(), {lay.key: factor * _layer_ms(lay) for lay in space_layers()},
                         validation={"subnets": 8, "median_rel_error": 0.065, "worst_rel_error": 0.2})
    table.save(path)
    return table


def _search(tmp_path, table_file, budget, name="best.json", *extra) -> tuple[int, dict | None]:
    from alphanet_zoo.commands.search import main

    out = tmp_path / name
    code = main(["--evaluator", "surrogate", "--seed", "3", "--population", "8", "--generations", "2",
                 "--latency-ms", f"{budget:.4f}", "--backend", "onnxruntime", "--threads", "1", "--batch-size", "1",
                 "--latency-table", str(table_file), "--measure-top", "4", "--out", str(out), *extra])
    return code, json.loads(out.read_text()) if out.is_file() else None


def test_a_table_built_under_load_gives_the_quiet_tables_answer(tmp_path, fake_machine, capsys):
    """Milliseconds scaled by 1.3 (a table built on a busy machine): the search corrects them."""
    a0 = SEARCH_SPACE.smallest()
    budget = 1.25 * true_ms(a0)
    quiet, loaded = tmp_path / "quiet.json", tmp_path / "loaded.json"
    _table(quiet, 1.0)
    assert LatencyPredictor(_table(loaded, 1.3))(a0) > budget  # the stale table alone calls it infeasible
    code, first = _search(tmp_path, quiet, budget, "quiet_best.json")
    assert code == 0, capsys.readouterr().err
    code, second = _search(tmp_path, loaded, budget, "loaded_best.json")
    assert code == 0, capsys.readouterr().err
    assert second["architecture"] == first["architecture"] and second["top1"] == first["top1"]
    for best in (first, second):
        lat = best["latency"]
        assert lat["measured_ms"] == pytest.approx(true_ms(ArchConfig.from_dict(best["architecture"])), abs=1e-3)
        assert lat["measured_ms"] <= budget and lat["meets_budget"]
        assert lat["held_ms"] == pytest.approx(lat["measured_ms"], abs=1e-3)  # one state: held = measured
        assert lat["spread_ms"] > 0 and lat["prediction_error"] == pytest.approx(
            lat["predicted_ms"] / lat["held_ms"] - 1, abs=1e-3)
        anchor = lat["anchor"]
        assert [r["name"] for r in anchor["references"]] == ["smallest", "middle", "largest"]
        for ref in anchor["references"]:
            assert ref["measured_ms"] == pytest.approx(true_ms(ArchConfig.from_dict(ref["arch"])), abs=1e-3)
    factor = [r["predicted_ms"] / f["predicted_ms"] for r, f in zip(second["latency"]["anchor"]["references"],
                                                                   first["latency"]["anchor"]["references"])]
    assert factor == pytest.approx([1.3] * 3, rel=1e-3)
    assert second["latency"]["anchor"]["scale"] == pytest.approx(first["latency"]["anchor"]["scale"] / 1.3, rel=1e-3)
    assert "re-anchored" in capsys.readouterr().out


def test_a_budget_below_the_smallest_measured_is_refused_with_the_measured_figure(tmp_path, fake_machine, capsys):
    table = tmp_path / "table.json"
    _table(table, 0.7)  # the table says a0 is faster than it is today: the measurement decides
    smallest = true_ms(SEARCH_SPACE.smallest())
    code, best = _search(tmp_path, table, 0.97 * smallest)
    err = capsys.readouterr().err
    assert code == 2 and best is None
    assert f"the smallest measures {smallest:.2f} ms" in err and len(err.strip().splitlines()) == 1
    assert "would hold only while" not in err  # one speed: below a0 at its fastest


def test_a_budget_the_stale_table_calls_infeasible_is_searched_and_met(tmp_path, fake_machine, capsys):
    table = tmp_path / "table.json"
    stale = _table(table, 1.25)
    a0 = SEARCH_SPACE.smallest()
    budget = 1.1 * true_ms(a0)
    assert LatencyPredictor(stale)(a0) > budget
    code, best = _search(tmp_path, table, budget)
    assert code == 0, capsys.readouterr().err
    assert best["latency"]["measured_ms"] <= budget
    assert true_ms(ArchConfig.from_dict(best["architecture"])) <= budget


def test_a_front_in_milliseconds_is_searched_on_the_re_anchored_table(tmp_path, fake_machine, capsys):
    """The stale table (x1.3) puts a0 above the front's top; re-anchored, the front's bins hold subnets."""
    from alphanet_zoo.commands.search import main

    table = tmp_path / "table.json"
    stale = _table(table, 1.3)
    a0 = SEARCH_SPACE.smallest()
    low, high = true_ms(a0), 1.25 * true_ms(a0)
    assert LatencyPredictor(stale)(a0) > high
    out = tmp_path / "front.json"
    code = main(["--front", f"{low:.3f}:{high:.3f}:{(high - low) / 4:.3f}", "--evaluator", "surrogate",
                 "--max-evaluations", "24", "--latency-ms", f"{high:.3f}", "--backend", "onnxruntime",
                 "--threads", "1", "--batch-size", "1", "--latency-table", str(table), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    document = json.loads(out.read_text())
    anchor = document["latency"]["anchor"]
    assert anchor["scale"] == pytest.approx(1 / 1.3, rel=0.1)
    assert [r["name"] for r in anchor["references"]] == ["smallest", "middle", "largest"]


def test_on_a_machine_that_changes_speed_budgets_are_held_at_its_slower_state(tmp_path, fake_machine, capsys):
    """The machine runs 30 % slower in all turns but the first: a deployer times it at a moment of their
    own, so the anchor and the check take the slower state; a budget a0 meets only in the faster one is
    refused with both figures."""
    TableRuntime.load = 1.3
    table = tmp_path / "table.json"
    _table(table, 1.0)
    a0 = SEARCH_SPACE.smallest()
    code, best = _search(tmp_path, table, 1.6 * true_ms(a0))
    assert code == 0, capsys.readouterr().err
    assert "the machine changed speed while it was timed" in capsys.readouterr().out
    lat = best["latency"]
    smallest = lat["anchor"]["references"][0]
    assert smallest["measured_ms"] == pytest.approx(1.3 * true_ms(a0), abs=1e-3)
    assert smallest["fastest_ms"] == pytest.approx(true_ms(a0), abs=1e-3)
    assert lat["meets_budget"] and lat["held_ms"] <= 1.6 * true_ms(a0)
    assert 1.3 * true_ms(ArchConfig.from_dict(best["architecture"])) <= 1.6 * true_ms(a0) * 1.001
    code, _ = _search(tmp_path, table, 1.2 * true_ms(a0), "refused.json")
    err = capsys.readouterr().err
    assert code == 2 and f"measures {1.3 * true_ms(a0):.2f} ms" in err and f"{true_ms(a0):.2f} ms in its fastest" in err
    assert "would hold only while it is fast" in err and len(err.strip().splitlines()) == 1


def test_a_check_timed_in_the_faster_state_is_held_to_the_slower_state_the_anchor_saw(tmp_path, fake_machine,
                                                                                      capsys):
    """The machine is 50 % slower while the anchor is timed and quiet while the best candidates are: each
    candidate's ratio to a0 in its turns times a0's slower state still decides, so the answer holds when
    the machine is slow again (timed on the quiet machine alone, a subnet of up to the budget would pass)."""
    table = tmp_path / "table.json"
    _table(table, 1.0)
    a0 = SEARCH_SPACE.smallest()
    budget = 1.8 * true_ms(a0)
    TableRuntime.states = [1.5, 1.0]  # the anchor's timing, then every check's
    code, best = _search(tmp_path, table, budget)
    assert code == 0, capsys.readouterr().err
    lat, winner = best["latency"], true_ms(ArchConfig.from_dict(best["architecture"]))
    assert lat["measured_ms"] == pytest.approx(winner, abs=1e-3)  # timed quiet
    assert lat["held_ms"] == pytest.approx(1.5 * winner, rel=1e-3) and lat["held_ms"] <= budget
    assert lat["reference"]["held_ms"] == pytest.approx(1.5 * true_ms(a0), rel=1e-3)
    assert all(t["held_ms"] == pytest.approx(1.5 * t["measured_ms"], rel=1e-3) for t in lat["tried"])
    assert lat["prediction_error"] == pytest.approx(lat["predicted_ms"] / lat["held_ms"] - 1, abs=1e-3)


def test_the_slower_state_must_last_two_turns_and_ratios_cancel_the_state():
    from alphanet_zoo.search.latency_anchor import ratio_to, slower_state_ms

    assert slower_state_ms([4.0, 4.1, 9.0, 4.0]) == 4.1  # one slow turn is a blip
    assert slower_state_ms([4.0, 6.0, 6.1, 4.0]) == 6.0
    assert slower_state_ms([5.0]) == 5.0
    assert ratio_to([6.0, 9.0, 6.3], [4.0, 6.0, 4.0]) == pytest.approx(1.5)
