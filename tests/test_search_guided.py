"""The guided front search on the surrogate: the goal against the official loop, the evaluation cap of every
search, determinism and resume, the command's surrogate mode; real evaluations with one and two processes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from _search_helpers import lines, make_search_data, torchrun

from alphanet_zoo.config import ArchConfig
from alphanet_zoo.flops import count_flops
from alphanet_zoo.search.evolution import EvolutionSearch
from alphanet_zoo.search.front import Bins
from alphanet_zoo.search.guided import DEFAULT_EVALUATIONS, GuidedFrontSearch
from alphanet_zoo.search.official import OfficialSearch
from alphanet_zoo.search.run import make_front_search, search_front
from alphanet_zoo.search.surrogate import SurrogateEvaluator, shipped_surrogate


def clean_mean(best, bins_filled):
    surrogate = shipped_surrogate()
    return float(np.mean([surrogate.predict([best[i].arch])[0] for i in bins_filled]))


@pytest.mark.parametrize("front,images,seed", [("300:600:10", 50_000, 0),
                                               pytest.param("400:800:20", 10_000, 3, marks=pytest.mark.slow)])
def test_a_tenth_of_the_evaluations_gives_a_front_as_good_as_the_official(front, images, seed):
    bins = Bins.parse(front)
    official = OfficialSearch(bins, SurrogateEvaluator(images, seed), seed=seed).run()
    filled = [i for i, c in enumerate(official.best) if c is not None]
    guided = search_front(bins, evaluator="surrogate", surrogate_images=images, seed=seed,
                          max_evaluations=official.evaluations // 10)
    assert guided.evaluations == official.evaluations // 10 == 537
    assert all(guided.best[i] is not None for i in filled)
    assert clean_mean(guided.best, filled) >= clean_mean(official.best, filled) - 0.02
    for i, c in enumerate(guided.best):  # every winner in its bin, and measured
        if c is not None:
            low, high = bins.bounds(i)
            assert low <= c.mflops <= high and c in guided.history


def test_the_guided_search_learns_only_through_the_evaluator():
    """Any evaluate_many works: here a score the surrogate knows nothing of (depth, rewarded), noise-free."""
    def evaluate_many(archs):
        from alphanet_zoo.search.evolution import Evaluation
        return [Evaluation(50.0 + sum(a.depth) + 0.01 * count_flops(a)) for a in archs]

    bins = Bins.parse("300:500:50")
    result = GuidedFrontSearch(bins, evaluate_many, seed=0, max_evaluations=80).run()
    assert result.evaluations == 80
    depths = [sum(c.arch.depth) for c in result.front]
    draws = [sum(c.arch.depth) for c in result.history[:20]]  # the exploration's random draws
    assert min(depths) > np.mean(draws)


def test_one_seed_gives_one_front_and_a_resumed_search_replays_the_same():
    bins = Bins.parse("250:450:20")
    first = search_front(bins, max_evaluations=90, seed=4, surrogate_images=20_000)
    again = search_front(bins, max_evaluations=90, seed=4, surrogate_images=20_000)
    assert [c and (c.arch, c.top1) for c in first.best] == [c and (c.arch, c.top1) for c in again.best]
    other = search_front(bins, max_evaluations=90, seed=5, surrogate_images=20_000)
    assert [c and c.arch for c in first.best] != [c and c.arch for c in other.best]
    # interrupted after 50 evaluations: those are replayed, the rest evaluated, the same front at the end
    known = {c.arch: c for c in first.history[:50]}
    evaluator = SurrogateEvaluator(20_000, 4)
    resumed = GuidedFrontSearch(bins, evaluator, seed=4, max_evaluations=90, known=known,
                                top1_step=100 / 20_000).run()
    assert resumed.replayed == 50 and evaluator.calls == 40
    assert [c and (c.arch, c.top1) for c in resumed.best] == [c and (c.arch, c.top1) for c in first.best]


@pytest.mark.parametrize("algorithm", ["guided", "official", "evolution"])
def test_max_evaluations_caps_every_front_search(algorithm):
    evaluator = SurrogateEvaluator(50_000, 0)
    search = make_front_search(algorithm, Bins.parse("300:700:20"), evaluator, max_evaluations=37, seed=0)
    result = search.run()
    assert evaluator.calls <= 37 and result.evaluations <= 37
    assert result.evaluations == 37


def test_max_evaluations_caps_the_single_budget_search():
    evaluator = SurrogateEvaluator(50_000, 0)
    search = EvolutionSearch(None, 400, 300, population=16, generations=10, evaluate_many=evaluator,
                             max_evaluations=25)
    result = search.run()
    assert evaluator.calls == 25 == len(result.history)


def test_the_default_budget_is_a_tenth_of_the_official_search():
    assert DEFAULT_EVALUATIONS == 537


def _cli(tmp_path, *extra):
    from alphanet_zoo.commands.search import main

    out = tmp_path / "front.json"
    code = main(["--front", "300:600:30", "--evaluator", "surrogate", "--seed", "2", "--out", str(out), *extra])
    return code, (json.loads(out.read_text()) if out.exists() else None)


def test_the_command_searches_on_the_surrogate_without_a_supernet(tmp_path, capsys):
    code, doc = _cli(tmp_path, "--max-evaluations", "60", "--surrogate-images", "20000",
                     "--history", str(tmp_path / "h.jsonl"))
    assert code == 0
    printed = capsys.readouterr()
    assert "60 surrogate evaluations" in printed.out + printed.err
    assert doc["format"] == "alphanet_zoo.front/1" and doc["evaluator"] == "surrogate"
    assert doc["algorithm"] == "guided" and doc["totals"]["real_evaluations"] == 60
    assert doc["surrogate"]["images"] == 20000 and "not measured accuracy" in doc["surrogate"]["note"]
    rows = lines(tmp_path / "h.jsonl")
    assert len(rows) == 60
    for b in doc["bins"]:
        if not b.get("empty"):
            arch = ArchConfig.from_dict(b["architecture"])
            assert b["low"] <= count_flops(arch) <= b["high"]
            assert any(r["arch"] == b["architecture"] and r["top1"] == b["top1"] for r in rows)
    # the official loop, same format, capped
    code, official = _cli(tmp_path, "--algorithm", "official", "--max-evaluations", "300")
    assert code == 0 and official["algorithm"] == "official" and official["totals"]["real_evaluations"] == 300


def test_the_command_refuses_what_does_not_fit(tmp_path, capsys):
    from alphanet_zoo.commands.search import main

    out = str(tmp_path / "f.json")
    assert main(["--front", "300:600:30", "--out", out]) == 2
    assert "real evaluations need --supernet, --data, --calib-data" in capsys.readouterr().err
    assert main(["--front", "300:600:30", "--evaluator", "surrogate", "--algorithm", "official", "--predictor",
                 "auto", "--out", out]) == 2
    assert "--predictor only apply to --algorithm evolution" in capsys.readouterr().err
    assert main(["--flops", "400", "--algorithm", "guided", "--evaluator", "surrogate", "--out", out]) == 2
    assert "--algorithm applies to --front" in capsys.readouterr().err
    assert main(["--front", "300:600:30", "--evaluator", "surrogate", "--verify-top", "2", "--out", out]) == 2
    assert "real evaluations need --supernet" in capsys.readouterr().err


# -- slow: real evaluations, one and two processes, and --verify-top ---------------------------------------------

@pytest.mark.slow
def test_guided_with_real_evaluations_is_the_same_for_one_and_two_processes(tmp_path_factory, official_checkpoint):
    train, heldout = make_search_data(tmp_path_factory.mktemp("guided_data"), official_checkpoint, crop_size=64)
    docs, rows = {}, {}
    for n in (1, 2):
        folder = tmp_path_factory.mktemp(f"guided{n}")
        args = ["--supernet", official_checkpoint, "--front", "230:330:50", "--data", heldout, "--calib-data", train,
                "--calib-batches", "2", "--calib-batch-size", "4", "--seed", "3", "--batch-size", "4",
                "--workers", "0", "--crop-size", "64", "--max-evaluations", "14", "--out", folder / "f.json",
                "--history", folder / "h.jsonl"]
        done = torchrun("alphanet-search", args, n, folder)
        assert done.returncode == 0, done.stderr[-3000:]
        docs[n], rows[n] = json.loads((folder / "f.json").read_text()), lines(folder / "h.jsonl")
    assert docs[1]["evaluator"] == "real" and docs[1]["algorithm"] == "guided"
    assert [(r["arch"], r["top1"]) for r in rows[1]] == [(r["arch"], r["top1"]) for r in rows[2]]
    assert len(rows[1]) == 14 and {r["rank"] for r in rows[2]} == {0, 1}
    assert [b.get("architecture") for b in docs[1]["bins"]] == [b.get("architecture") for b in docs[2]["bins"]]


@pytest.mark.slow
def test_verify_top_measures_the_chosen_bins_for_real(tmp_path, official_checkpoint):
    from alphanet_zoo.commands.search import main

    train, heldout = make_search_data(tmp_path / "data", official_checkpoint, crop_size=64)
    out = tmp_path / "f.json"
    assert main(["--front", "230:400:20", "--evaluator", "surrogate", "--max-evaluations", "40", "--verify-top", "2",
                 "--supernet", str(official_checkpoint), "--data", str(heldout), "--calib-data", str(train),
                 "--calib-batches", "2", "--calib-batch-size", "4", "--batch-size", "4", "--workers", "0",
                 "--crop-size", "64", "--seed", "1", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    verified = [b for b in doc["bins"] if "verified_top1" in b]
    assert len(verified) == 2 == doc["verified"]["bins"]
    assert all(0 <= b["verified_top1"] <= 100 for b in verified)
