"""Search at a FLOPs budget: random draws, evolution, and ``alphanet-search`` end to end."""
from __future__ import annotations

import json
import random

import pytest
import torch
from _train_helpers import make_image_folder

from alphanet_zoo import SEARCH_SPACE, ArchConfig, count_flops
from alphanet_zoo.cli import parse_arch
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
    from alphanet_zoo.search.cli import main

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
    best = ArchConfig.from_dict(json.loads(out.read_text()))
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
    from alphanet_zoo.search.cli import main

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
