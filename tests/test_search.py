"""Search under a budget: random draws, evolution (against random search), budgets with a latency
predictor, the split of a generation across processes, resume, and ``alphanet-search`` end to end."""
from __future__ import annotations

import json
import random

import pytest
import torch
from _search_helpers import lines, make_search_data
from _train_helpers import make_image_folder

from alphanet_zoo import SEARCH_SPACE, ArchConfig, count_flops
from alphanet_zoo.commands.flags import parse_arch
from alphanet_zoo.search import (Candidate, EvolutionSearch, crossover, flops_range, mutate, pareto_front,
                                 sample_at_flops)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine's 2 cores are shared: avoid OpenMP spinning
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("target", [205, 250, 300, 444, 700, 1200, 1930])
def test_sample_at_flops_hits_the_target(target):
    for seed in range(3):
        arch = sample_at_flops(target, tolerance=5, seed=seed)
        assert SEARCH_SPACE.contains(arch)
        assert abs(count_flops(arch) - target) <= 5
    assert sample_at_flops(target, 5, seed=11) == sample_at_flops(target, 5, seed=11)


def test_sample_at_flops_is_importable_from_the_package_and_varied():
    import alphanet_zoo.search

    draws = {alphanet_zoo.search.sample_at_flops(600, tolerance=20, seed=s) for s in range(8)}
    assert len(draws) == 8


def test_sample_at_flops_rejects_impossible_budgets():
    smallest, largest = flops_range()
    assert smallest == pytest.approx(203.39, abs=0.01) and largest > 1900
    with pytest.raises(ValueError, match="203.39"):
        sample_at_flops(150, tolerance=10, seed=0)
    with pytest.raises(ValueError, match="largest"):
        sample_at_flops(2500, tolerance=10, seed=0)
    with pytest.raises(ValueError, match="tolerance"):
        sample_at_flops(300, tolerance=-1)


def test_mutation_and_crossover_stay_in_the_space():
    rng = random.Random(0)
    a, b = SEARCH_SPACE.sample(rng), SEARCH_SPACE.sample(rng)
    for _ in range(50):
        assert SEARCH_SPACE.contains(mutate(a, rng, 0.5))
        child = crossover(a, b, rng)
        assert SEARCH_SPACE.contains(child)
        for field in ("width", "depth", "kernel_size", "expand_ratio"):
            assert all(c in (x, y) for c, x, y in zip(getattr(child, field), getattr(a, field), getattr(b, field)))
    assert mutate(a, rng, 0.0) == a and mutate(a, rng, 1.0) != a


def test_pareto_front():
    archs = [SEARCH_SPACE.sample(random.Random(i)) for i in range(5)]
    cands = [Candidate(archs[0], 200, 70.0), Candidate(archs[1], 250, 69.0), Candidate(archs[2], 260, 72.0),
             Candidate(archs[3], 300, 72.0), Candidate(archs[4], 320, 75.0)]
    assert pareto_front(cands) == [cands[0], cands[2], cands[4]]


def test_evolution_improves_inside_the_range():
    # a synthetic accuracy that rewards depth and width: evolution must climb it within the budget
    def score(arch: ArchConfig) -> float:
        return float(sum(arch.depth) + sum(arch.width) / 100)

    search = EvolutionSearch(score, max_mflops=400, min_mflops=350, population=16, generations=6, seed=0)
    initial = []
    result = search.run(lambda g, population: initial.append(max(c.top1 for c in population)) if g == 0 else None)
    assert all(350 <= c.mflops <= 400 and SEARCH_SPACE.contains(c.arch) for c in result.history)
    assert result.best.top1 == max(c.top1 for c in result.history) > initial[0]
    assert len(result.history) > 16 and result.pareto[-1].top1 == result.best.top1
    again = EvolutionSearch(score, 400, 350, population=16, generations=6, seed=0).run()
    assert again.best == result.best  # seeded
    with pytest.raises(ValueError, match="smallest"):
        EvolutionSearch(score, max_mflops=100)


SYNSETS = ["n01440764", "n01443537"]  # ImageNet classes 0 and 1


def test_alphanet_search_end_to_end(tmp_path, official_checkpoint, capsys):
    from alphanet_zoo.commands.search import main

    make_image_folder(tmp_path / "train", SYNSETS, 4, size=40, seed=0)
    make_image_folder(tmp_path / "heldout", SYNSETS, 3, size=40, seed=1)
    out, history = tmp_path / "best.json", tmp_path / "history.jsonl"
    argv = ["--supernet", str(official_checkpoint), "--flops", "300", "--flops-min", "260",
            "--data", str(tmp_path / "heldout"), "--calib-data", str(tmp_path / "train"), "--out", str(out),
            "--population", "4", "--generations", "1", "--calib-batches", "2", "--calib-batch-size", "4",
            "--batch-size", "4",
            "--workers", "0", "--crop-size", "64", "--history", str(history)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Pareto front" in printed and "<- best" in printed
    document = json.loads(out.read_text())
    best = ArchConfig.from_dict(document["architecture"])
    assert document["format"] == "alphanet_zoo.search/1" and document["world_size"] == 1
    assert SEARCH_SPACE.contains(best) and 260 <= count_flops(best) <= 300
    name, parsed = parse_arch(str(out))  # what alphanet-extract / -eval / -export read
    assert parsed == best and name == "best"
    evaluated = [json.loads(line) for line in history.read_text().splitlines()]
    assert len(evaluated) >= 4
    assert all(260 <= c["mflops"] <= 300 and SEARCH_SPACE.contains(ArchConfig.from_dict(c["arch"]))
               for c in evaluated)
    assert all(0 <= c["top1"] <= 100 for c in evaluated)
    assert not list(tmp_path.glob(".best.json.*"))


def test_alphanet_search_errors(tmp_path, capsys):
    from alphanet_zoo.commands.search import main

    (tmp_path / "d").mkdir()
    base = ["--supernet", str(tmp_path / "missing.pt"), "--data", str(tmp_path / "d"), "--calib-data",
            str(tmp_path / "d"), "--out", str(tmp_path / "b.json")]
    assert main(base + ["--flops", "300"]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "s.pt").write_bytes(b"")
    base[1] = str(tmp_path / "s.pt")
    assert main(base + ["--flops", "100"]) == 2
    assert "smallest subnet has 203.39" in capsys.readouterr().err
    assert main(base + ["--flops", "300", "--flops-min", "400"]) == 2
    assert "above --flops" in capsys.readouterr().err


# -- evolution against random search, budgets, the split across processes ---------------------------

def _matches(target: ArchConfig):
    """A synthetic accuracy: how many of the space's choices agree with a hidden target."""
    from alphanet_zoo.search.sampling import _get, genes

    table = genes()
    return lambda arch: float(sum(_get(arch, g) == _get(target, g) for g, _ in table))


def test_evolution_beats_random_search_with_the_same_number_of_evaluations():
    from alphanet_zoo.search import Budget, random_search, sample_in_range

    score = _matches(sample_in_range(350, 400, random.Random(99)))
    wins = 0
    for seed in range(4):
        evolved = EvolutionSearch(score, 400, 350, population=16, generations=6, seed=seed).run()
        baseline = random_search(score, Budget.create(400, 350), len(evolved.history), seed=seed)
        assert len(baseline.history) == len(evolved.history)
        assert all(350 <= c.mflops <= 400 for c in baseline.history)
        wins += evolved.best.top1 > baseline.best.top1
    assert wins >= 3


def test_a_latency_budget_holds_for_every_candidate():
    from alphanet_zoo.search import Budget

    def predicted(arch: ArchConfig) -> float:  # a made-up predictor: resolution costs more than FLOPs say
        return count_flops(arch) / 100 * (arch.resolution / 192) ** 2

    budget = Budget.create(max_latency_ms=4.0, latency=predicted)
    result = EvolutionSearch(_matches(SEARCH_SPACE.largest()), budget=budget, population=8, generations=3,
                             seed=1).run()
    assert all(predicted(c.arch) <= 4.0 and c.latency_ms == pytest.approx(predicted(c.arch)) for c in result.history)
    assert max(c.latency_ms for c in result.history) > 3.0  # the budget is used, not just the smallest subnets
    with pytest.raises(ValueError, match="smallest is predicted"):
        Budget.create(max_latency_ms=1.0, latency=predicted)


def test_the_split_across_processes_is_deterministic_and_balanced():
    from alphanet_zoo.search.parallel import assign, map_over_ranks

    costs = [5, 1, 1, 3, 2, 2, 8, 1]
    owners = assign(costs, 3)
    assert owners == assign(costs, 3) and set(owners) == {0, 1, 2}
    loads = [sum(c for c, o in zip(costs, owners) if o == r) for r in range(3)]
    assert max(loads) - min(loads) <= max(costs) and sum(loads) == sum(costs)
    assert assign(costs, 1) == [0] * len(costs)
    # one process: everything here, in order
    assert map_over_ranks(lambda x: x * 10, [3, 1, 2], [1, 1, 1]) == [(30, 0, pytest.approx(0, abs=1)),
                                                                       (10, 0, pytest.approx(0, abs=1)),
                                                                       (20, 0, pytest.approx(0, abs=1))]


# -- alphanet-search: best.json against a recount, resume, plot --------------------------------------

@pytest.fixture(scope="module")
def search_data(tmp_path_factory, official_checkpoint):
    return make_search_data(tmp_path_factory.mktemp("search_data"), official_checkpoint)


def _search_args(checkpoint, train, heldout, out, history, generations=2, population=4):
    return ["--supernet", str(checkpoint), "--flops", "300", "--flops-min", "230", "--data", str(heldout),
            "--calib-data", str(train), "--calib-batches", "2", "--calib-batch-size", "4", "--batch-size", "4",
            "--workers", "0", "--crop-size", "64", "--population", str(population), "--generations",
            str(generations), "--seed", "3", "--out", str(out), "--history", str(history)]


def recount_best(rows: list[dict]) -> dict:
    """The best row, counted here: highest top-1, then fewest MFLOPs (first on ties)."""
    best = rows[0]
    for row in rows[1:]:
        if (row["top1"], -row["mflops"]) > (best["top1"], -best["mflops"]):
            best = row
    return best


@pytest.fixture(scope="module")
def uninterrupted(search_data, official_checkpoint, tmp_path_factory):
    from alphanet_zoo.commands.search import main

    train, heldout = search_data
    folder = tmp_path_factory.mktemp("uninterrupted")
    assert main(_search_args(official_checkpoint, train, heldout, folder / "best.json", folder / "h.jsonl")) == 0
    return json.loads((folder / "best.json").read_text()), lines(folder / "h.jsonl")


def test_best_json_is_the_best_of_the_history_recounted(uninterrupted):
    best, rows = uninterrupted
    assert len({r["top1"] for r in rows}) > 1  # the data tells candidates apart: the recount means something
    expected = recount_best(rows)
    assert best["architecture"] == expected["arch"] and best["top1"] == expected["top1"] == max(r["top1"]
                                                                                              for r in rows)
    assert best["evaluated"] == len(rows) and best["world_size"] == 1 and best["replayed"] == 0
    assert [r["generation"] for r in rows] == sorted(r["generation"] for r in rows)
    assert {r["rank"] for r in rows} == {0} and {r["world_size"] for r in rows} == {1}
    assert len({r["search"] for r in rows}) == 1 and best["search"] == rows[0]["search"]
    assert len({json.dumps(r["arch"]) for r in rows}) == len(rows)  # each architecture evaluated once
    for r in rows:  # MFLOPs as counted (to 4 decimals), and the time each took
        assert r["mflops"] == pytest.approx(count_flops(ArchConfig.from_dict(r["arch"])), abs=1e-4)
        assert r["seconds"] > 0


def test_resume_continues_where_the_run_stopped(uninterrupted, search_data, official_checkpoint, tmp_path, capsys):
    from alphanet_zoo.commands.search import main

    best, rows = uninterrupted
    train, heldout = search_data
    history = tmp_path / "h.jsonl"
    kept = [r for r in rows if r["generation"] == 0]  # as if killed after the first generation
    history.write_text("".join(json.dumps(r) + "\n" for r in kept))
    assert main(_search_args(official_checkpoint, train, heldout, tmp_path / "best.json", history)
                + ["--resume"]) == 0
    assert "resuming" in capsys.readouterr().out
    resumed = json.loads((tmp_path / "best.json").read_text())
    again = lines(history)
    assert [(r["arch"], r["top1"]) for r in again] == [(r["arch"], r["top1"]) for r in rows]
    assert again[:len(kept)] == kept  # the rows read back are kept as they were (not evaluated again)
    assert resumed["replayed"] == len(kept) and resumed["architecture"] == best["architecture"]
    assert resumed["top1"] == best["top1"] and resumed["evaluated"] == best["evaluated"]


def test_resume_refuses_the_history_of_another_search(uninterrupted, search_data, official_checkpoint, tmp_path,
                                                      capsys):
    from alphanet_zoo.commands.search import main

    _, rows = uninterrupted
    train, heldout = search_data
    history = tmp_path / "h.jsonl"
    history.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = _search_args(official_checkpoint, train, heldout, tmp_path / "best.json", history)
    args[args.index("--seed") + 1] = "4"
    assert main(args + ["--resume"]) == 2
    assert "another search" in capsys.readouterr().err
    history.write_text("not json\n")
    assert main(_search_args(official_checkpoint, train, heldout, tmp_path / "best.json", history)
                + ["--resume"]) == 2
    assert "line 1" in capsys.readouterr().err
    assert main(_search_args(official_checkpoint, train, heldout, tmp_path / "best.json", tmp_path / "none.jsonl")
                + ["--resume"]) == 2
    assert "no history file" in capsys.readouterr().err


def test_plot_draws_every_candidate_and_the_front(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    from alphanet_zoo.search.plot import plot_search

    drawn = []  # what reaches matplotlib, per call: (label, xs, ys)
    for method in ("plot", "scatter"):
        original = getattr(matplotlib.axes.Axes, method)

        def record(self, x, y, *a, _original=original, **k):
            xs, ys = (list(x), list(y)) if hasattr(x, "__len__") else ([x], [y])
            drawn.append((k.get("label"), xs, ys))
            return _original(self, x, y, *a, **k)

        monkeypatch.setattr(matplotlib.axes.Axes, method, record)

    archs = [SEARCH_SPACE.sample(random.Random(i)) for i in range(4)]
    cands = [Candidate(archs[0], 300, 60.0, 5.0), Candidate(archs[1], 250, 62.0, 6.0),
             Candidate(archs[2], 400, 61.0, 4.0), Candidate(archs[3], 500, 70.0, 7.0)]
    points = plot_search(cands, cands[3], tmp_path / "p.png", measured_ms=7.2, budget_ms=7.5)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert points["mflops"]["front"] == [(250, 62.0), (500, 70.0)]
    assert points["latency"]["front"] == [(4.0, 61.0), (6.0, 62.0), (7.0, 70.0)]  # (5 ms, 60 %) is beaten
    assert points["latency"]["best"] == (7.0, 70.0) and len(points["latency"]["all"]) == 4
    by_label = {}
    for label, xs, ys in drawn:
        by_label.setdefault(label, []).append(sorted(zip(xs, ys)))
    assert sorted(by_label["evaluated (4)"]) == [sorted([(4.0, 61.0), (5.0, 60.0), (6.0, 62.0), (7.0, 70.0)]),
                                                 sorted([(250, 62.0), (300, 60.0), (400, 61.0), (500, 70.0)])]
    assert sorted(by_label["Pareto front"]) == [[(4.0, 61.0), (6.0, 62.0), (7.0, 70.0)], [(250, 62.0), (500, 70.0)]]
    assert by_label["best, measured end to end"] == [[(7.2, 70.0)]]  # the measured latency, at the best's top-1
    assert sorted(by_label["best"]) == [[(7.0, 70.0)], [(500, 70.0)]]


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import sys

    from alphanet_zoo.commands.search import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    (tmp_path / "d").mkdir()
    (tmp_path / "s.pt").write_bytes(b"")
    assert main(["--supernet", str(tmp_path / "s.pt"), "--data", str(tmp_path / "d"), "--calib-data",
                 str(tmp_path / "d"), "--out", str(tmp_path / "b.json"), "--flops", "300",
                 "--plot", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "alphanet_zoo[plot]" in err


def test_a_budget_is_required_and_latency_flags_need_latency_ms(tmp_path, capsys):
    from alphanet_zoo.commands.search import main

    (tmp_path / "d").mkdir()
    base = ["--supernet", str(tmp_path / "s.pt"), "--data", str(tmp_path / "d"), "--calib-data", str(tmp_path / "d"),
            "--out", str(tmp_path / "b.json")]
    assert main(base) == 2
    assert "--latency-ms" in capsys.readouterr().err
    assert main(base + ["--flops", "300", "--latency-table", str(tmp_path / "t.json")]) == 2
    assert "only apply with --latency-ms" in capsys.readouterr().err
    assert main(base + ["--flops", "300", "--resume"]) == 2
    assert "--resume needs" in capsys.readouterr().err


def test_a_recorded_top1_is_what_calibrating_and_scoring_that_subnet_gives(uninterrupted, search_data, supernet):
    """Recomputed here with the data pipeline's public functions (not the search's evaluator or caches)."""
    from alphanet_zoo.calibration import calibrate
    from alphanet_zoo.data import TorchClassifier, calibration_batches, evaluate, labelled_batches, open_dataset
    from alphanet_zoo.preprocessing import EvalCrop, Preprocessing

    _, rows = uninterrupted
    train, heldout = search_data
    samples, _ = open_dataset(heldout)
    crop = Preprocessing(resolution=64, resize_size=round(64 / 0.875), crop_size=64)
    for row in (rows[0], max(rows, key=lambda r: r["top1"])):
        arch = ArchConfig.from_dict(row["arch"])
        model = calibrate(supernet.extract(arch), calibration_batches(train, 2, 4, seed=3, crop_size=64),
                          arch.resolution)
        result = evaluate(TorchClassifier(model), labelled_batches(samples, EvalCrop(crop), 64, batch_size=4),
                          resolution=arch.resolution)
        assert result.top1 == row["top1"]


def test_keep_freed_memory_lives_beside_the_device_settings(tmp_path, monkeypatch):
    import ctypes.util

    from alphanet_zoo import allocator
    from alphanet_zoo.commands import eval as eval_command
    from alphanet_zoo.commands import extract as extract_command
    from alphanet_zoo.commands import finetune as finetune_command
    from alphanet_zoo.commands import train as train_command
    from alphanet_zoo.search import evaluate

    assert evaluate.keep_freed_memory is allocator.keep_freed_memory  # the old import path still works
    # True where the C library is glibc (mallopt accepted both settings); False, changing nothing, elsewhere
    libc = ctypes.util.find_library("c")
    assert allocator.keep_freed_memory() is (libc is not None and hasattr(ctypes.CDLL(libc), "mallopt"))
    calls = []
    for module in (eval_command, extract_command, train_command, finetune_command):
        monkeypatch.setattr(module, "keep_freed_memory", lambda name=module.__name__: calls.append(name) or True)
    # on a CPU both set it before any work, so even a run that fails on its input has set it
    assert extract_command.main(["--arch", "a0", "--supernet", str(tmp_path / "missing.pth"), "--out",
                                 str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert eval_command.main(["--arch", "a0", "--weights", "random", "--data", str(tmp_path / "nothing"),
                              "--device", "cpu"]) == 2
    assert train_command.main(["--device", "cpu", "--out", str(tmp_path / "train"),
                               f"data.train={tmp_path / 'nothing'}"]) == 2
    assert finetune_command.main(["--weights", "random", "--arch", "a0", "--data", str(tmp_path / "nothing"),
                                  "--out", str(tmp_path / "ft"), "--device", "cpu"]) == 2
    assert calls == ["alphanet_zoo.commands.extract", "alphanet_zoo.commands.eval", "alphanet_zoo.commands.train",
                     "alphanet_zoo.commands.finetune"]
