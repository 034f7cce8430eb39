"""``alphanet-search --front``: the best subnet per bin in one run, the accuracy predictor that spares
real evaluations, resume, and one and two processes giving the same front."""
from __future__ import annotations

import json
import random

import pytest
import torch
from _search_helpers import lines, make_search_data, one_thread, torchrun  # noqa: F401 (one_thread: autouse)
from _train_helpers import make_image_folder

from alphanet_zoo import SEARCH_SPACE, ArchConfig, count_flops
from alphanet_zoo.errors import InputError
from alphanet_zoo.search import sample_in_range
from alphanet_zoo.search.evolution import Candidate, Evaluation
from alphanet_zoo.search.front import Bins, FrontSearch
from alphanet_zoo.search.predictor import (AccuracyPredictor, encode, kendall_tau, read_evaluations,
                                          tau_is_significant)
from alphanet_zoo.search.report import front_table


def score(arch: ArchConfig) -> float:
    """A synthetic top-1 that the predictor's features can express (no images needed)."""
    return round(60 + 0.02 * count_flops(arch) + 0.3 * sum(arch.depth) - 0.2 * sum(arch.kernel_size) / 2, 6)


def evaluate_many(archs):
    return [Evaluation(score(a)) for a in archs]


def test_bins():
    bins = Bins.parse("200:230:10")
    assert bins.count == 3 and bins.bounds(2) == (220, 230)
    assert [bins.index(v) for v in (200, 209.9, 210, 229.9, 230, 199.9, 230.1)] == [0, 0, 1, 2, 2, None, None]
    assert Bins.parse("200:225:10").bounds(2) == (220, 225)
    for bad in ("200:100:10", "1:2", "a:b:c", "200:300:0"):
        with pytest.raises(InputError):
            Bins.parse(bad)


def test_kendall_tau_and_the_predictor():
    assert kendall_tau([1, 2, 3], [1, 2, 3]) == 1 and kendall_tau([1, 2, 3], [3, 2, 1]) == -1
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert kendall_tau([1, 1], [2, 2]) is None
    rng = random.Random(0)
    archs = [sample_in_range(210, 500, rng) for _ in range(60)]
    assert len(encode(archs[0])) == len(encode(archs[1])) and all(0 <= v <= 1 for v in encode(archs[0])[:-2])
    model = AccuracyPredictor.fit(archs[:40], [score(a) for a in archs[:40]])
    predicted = model.predict(archs[40:])
    assert kendall_tau(predicted, [score(a) for a in archs[40:]]) > 0.9
    assert model.loo_rmse < 0.1 and model.predict(archs[40:]) == predicted  # deterministic
    assert json.loads(json.dumps(model.to_dict()))["model"] == "ridge"
    with pytest.raises(InputError, match="at least"):
        AccuracyPredictor.fit(archs[:2], [1.0, 2.0])


def test_read_evaluations(tmp_path):
    a, b = SEARCH_SPACE.smallest(), SEARCH_SPACE.largest()
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps({"arch": a.to_dict(), "top1": 70.5, "generation": 0}) + "\n\n"
                    + json.dumps({"arch": b.to_dict(), "top1": None, "predicted_top1": 80}) + "\n")
    assert read_evaluations(path) == [(a, 70.5)]
    (tmp_path / "list.json").write_text(json.dumps([{"arch": b.to_dict(), "top1": 80}]))
    assert read_evaluations(tmp_path / "list.json") == [(b, 80.0)]
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(InputError, match="line 1"):
        read_evaluations(tmp_path / "bad.jsonl")


def _search(predictor, **kw):
    evaluate = kw.pop("evaluate", evaluate_many)
    settings = dict(population=24, generations=4, seed=1, predictor=predictor)
    settings.update(kw)
    return FrontSearch(Bins.parse("210:330:40"), evaluate, **settings)


def test_front_keeps_the_best_per_bin_and_the_predictor_spares_evaluations():
    none = _search(None).run()
    auto = _search("auto").run()
    for result in (none, auto):
        assert all(c is not None for c in result.best)
        for i, c in enumerate(result.best):  # best of the bin, among the evaluated
            low, high = result.bins.bounds(i)
            assert low <= c.mflops <= high
            assert c.top1 == max(e.top1 for e in result.history if result.bins.index(e.mflops) == i)
    assert len(none.history) == len(none.pool)  # without a predictor every candidate is evaluated
    assert len(auto.history) < len(none.history) / 2
    # the predictor ruled out nothing that would have changed the front (this score is linear in its features)
    exhaustive = [max(score(a) for a in auto.pool if auto.bins.index(count_flops(a)) == i) for i in range(3)]
    assert [c.top1 for c in auto.best] == exhaustive
    assert auto.kendall_tau > 0.8 and auto.tau_pairs > 0
    assert [c.top1 for c in auto.best] >= [c.top1 for c in none.best]


def test_a_front_search_is_seeded_resumable_and_takes_an_earlier_history():
    first = _search("auto").run()
    again = _search("auto").run()
    assert again.best == first.best and list(again.pool) == list(first.pool)
    known = {c.arch: c for c in first.history[:len(first.history) // 2]}
    calls = []

    def counting(archs):
        calls.extend(archs)
        return evaluate_many(archs)

    resumed = _search("auto", known=known, evaluate=counting).run()
    assert resumed.best == first.best and resumed.replayed == len(known)
    assert not set(calls) & set(known) and len(calls) == len(first.history) - len(known)
    capped = _search("auto", rounds=1).run()  # doubt carried over; the last generation settles it
    assert all(c is not None for c in capped.best) and capped.kendall_tau > 0.8
    exhaustive = [max(score(a) for a in capped.pool if capped.bins.index(count_flops(a)) == i) for i in range(3)]
    assert [c.top1 for c in capped.best] == exhaustive
    prior = [(c.arch, c.top1) for c in first.history]
    seeded = _search("auto", prior=prior, seed=2).run()  # an earlier run's evaluations: no warm-up needed
    assert len(seeded.history) < len(_search("auto", seed=2).run().history)


def noise(arch: ArchConfig) -> float:
    """A top-1 no architecture encoding predicts (an untrained supernet on 16 images): a seeded draw per
    subnet on the 6.25-point grid 16 images give."""
    return 6.25 * random.Random(repr(arch)).randrange(0, 11)


def test_a_predictor_with_no_skill_rules_nothing_out():
    def evaluate(archs):
        return [Evaluation(noise(a)) for a in archs]

    none = _search(None, evaluate=evaluate, population=12).run()
    auto = _search("auto", evaluate=evaluate, population=12, top1_step=6.25).run()
    assert not auto.trusted and auto.untrusted_rounds > 0
    # it had shown no skill on held-out rows, so the search is the exhaustive one: same candidates, same front
    assert list(auto.pool) == list(none.pool) and auto.best == none.best
    assert len(auto.history) == len(none.history)
    rule = _search("auto", margin=0.0, rounds=1, trust_z=-10.0, evaluate=evaluate, population=12).run()
    assert rule.trusted  # told to trust anything, it prunes


def test_the_rule_counts_ties_on_the_top1_grid():
    search = _search("auto", top1_step=6.25)
    small, large = sorted((SEARCH_SPACE.smallest(), sample_in_range(250, 320, random.Random(0))), key=count_flops)
    best = Candidate(small, count_flops(small), 43.75)
    assert not search.can_change(large, 43.75 + 6.0, best)  # rounds down to 43.75: a tie, at a higher cost
    assert search.can_change(large, 43.75 + 6.25, best)  # 50.0 would beat it
    cheaper = Candidate(large, count_flops(large), 43.75)
    assert search.can_change(small, 49.9, cheaper)  # a tie at a lower cost takes the bin
    assert not search.can_change(small, 43.7, cheaper)
    assert search.can_change(small, 0.0, None)
    with pytest.raises(InputError):
        _search("auto", bound="wild")


def test_the_predictor_records_its_leave_one_out_skill():
    rng = random.Random(0)
    archs = [sample_in_range(210, 500, rng) for _ in range(40)]
    good = AccuracyPredictor.fit(archs, [score(a) for a in archs])
    assert good.loo_tau > 0.9 and len(good.loo_residuals) == 40 and max(good.loo_residuals) < 0.2
    assert tau_is_significant(good.loo_tau, good.rows)
    bad = AccuracyPredictor.fit(archs, [noise(a) for a in archs])
    assert not tau_is_significant(bad.loo_tau, bad.rows)
    assert kendall_tau(torch.tensor([1.0, 2, 2, 3]), torch.tensor([1.0, 3, 2, 2])) == \
        pytest.approx(kendall_tau([1, 2, 2, 3], [1, 3, 2, 2]))


def test_a_front_over_another_cost():
    def ms(arch):  # a stand-in latency: the bins are over whatever cost the search is given
        return count_flops(arch) / 50 + arch.resolution / 100

    bins = Bins.parse("6:10:1", "ms")
    result = FrontSearch(bins, evaluate_many, cost=ms, latency=ms, population=12, generations=2, seed=0,
                         predictor="auto").run()
    assert result.front and all(6 <= c.latency_ms <= 10 for c in result.history)
    for i, c in enumerate(result.best):
        if c is not None:
            low, high = bins.bounds(i)
            assert low <= ms(c.arch) <= high
    table = front_table(result, 1.0)
    assert "6..10 ms by 1" in table[0] and " ms " in table[1] and len(table) >= 2 + bins.count


SYNSETS = ["n01440764", "n01443537"]


def _front_args(checkpoint, train, heldout, out, history, predictor="auto", population=6, generations=2,
                crop_size=64):
    return ["--supernet", str(checkpoint), "--front", "230:330:50", "--predictor", predictor,
            "--data", str(heldout), "--calib-data", str(train), "--calib-batches", "2", "--calib-batch-size", "4",
            "--batch-size", "4", "--workers", "0", "--crop-size", str(crop_size), "--population", str(population),
            "--generations", str(generations), "--seed", "3", "--out", str(out), "--history", str(history)]


def test_alphanet_search_front_end_to_end(tmp_path, official_checkpoint, capsys):
    from alphanet_zoo.commands.search import main

    make_image_folder(tmp_path / "train", SYNSETS, 4, size=40, seed=0)
    make_image_folder(tmp_path / "heldout", SYNSETS, 3, size=40, seed=1)
    out, history = tmp_path / "front.json", tmp_path / "h.jsonl"
    assert main(_front_args(official_checkpoint, tmp_path / "train", tmp_path / "heldout", out, history)
                + ["--plot", str(tmp_path / "front.png"), "--channels-last"]) == 0
    printed = capsys.readouterr().out
    assert "Front over 230..330 MFLOPs by 50" in printed and "channels-last: same predictions" in printed
    doc = json.loads(out.read_text())
    assert doc["format"] == "alphanet_zoo.front/1" and doc["range"] == {"min": 230, "max": 330, "step": 50}
    assert doc["channels_last"] is True
    assert [(b["low"], b["high"]) for b in doc["bins"]] == [(230, 280), (280, 330)]
    rows = lines(history)
    totals = doc["totals"]
    assert totals["real_evaluations"] == len(rows) and totals["candidates"] == len(rows) + totals["predicted_only"]
    assert doc["predictor"]["mode"] == "auto" and doc["predictor"]["model"] == "ridge"
    for b in doc["bins"]:
        if not b.get("empty"):
            assert b["low"] <= b["mflops"] <= b["high"]
            assert SEARCH_SPACE.contains(ArchConfig.from_dict(b["architecture"]))
            assert any(r["arch"] == b["architecture"] and r["top1"] == b["top1"] for r in rows)  # real top-1
    assert all("top1" not in r for r in doc["predicted_only"])
    assert (tmp_path / "front.png").stat().st_size > 0
    assert main(_front_args(official_checkpoint, tmp_path / "train", tmp_path / "heldout", out, history)
                + ["--flops", "300"]) == 2
    assert "replaces --flops" in capsys.readouterr().err


def test_the_command_spares_evaluations_only_with_a_predictor_that_ranks(tmp_path, official_checkpoint, capsys,
                                                                          monkeypatch):
    """The command's wiring (skill test, the top-1 grid of its held-out images, ties): top-1 given by a
    score the predictor can learn, on the 100/6-point grid of the 6 held-out images, so a predictor
    run and a ``none`` run of the same seed can be compared bin by bin; then the same with noise."""
    from alphanet_zoo.commands.search import main
    from alphanet_zoo.search.evaluate import SubnetEvaluator

    make_image_folder(tmp_path / "train", SYNSETS, 4, size=40, seed=0)
    make_image_folder(tmp_path / "heldout", SYNSETS, 3, size=40, seed=1)
    step = 100 / 6

    def learnable(arch):  # rises with MFLOPs and depth, 0..100 on the grid of 6 images
        return step * min(6, max(0, round((count_flops(arch) - 230) / 20 + (sum(arch.depth) - 20) / 4)))

    for name, score_of in (("learnable", learnable), ("noise", lambda a: step * random.Random(repr(a)).randrange(7))):
        monkeypatch.setattr(SubnetEvaluator, "__call__", lambda self, arch, f=score_of: f(arch))
        docs = {}
        for predictor in ("auto", "none"):
            folder = tmp_path / f"{name}_{predictor}"
            folder.mkdir()
            assert main(_front_args(official_checkpoint, tmp_path / "train", tmp_path / "heldout", folder / "f.json",
                                    folder / "h.jsonl", predictor=predictor, population=40, generations=3)) == 0
            docs[predictor] = json.loads((folder / "f.json").read_text())
        capsys.readouterr()
        auto, none = docs["auto"], docs["none"]
        assert [b.get("top1") for b in auto["bins"]] == [b.get("top1") for b in none["bins"]]  # the exhaustive front
        if name == "learnable":
            assert auto["predictor"]["trusted"] and auto["predictor"]["loo_tau"] > 0.5
            assert auto["totals"]["real_evaluations"] < none["totals"]["real_evaluations"]
        else:  # no skill shown: nothing ruled out, every candidate evaluated as without a predictor
            assert not auto["predictor"]["trusted"] and auto["predictor"]["untrusted_rounds"] > 0
            assert auto["totals"]["real_evaluations"] == none["totals"]["real_evaluations"]


# -- slow: resume, one and two processes, the predictor against none on real (calibrated) evaluations ----

@pytest.fixture(scope="module")
def search_data(tmp_path_factory, official_checkpoint):
    return make_search_data(tmp_path_factory.mktemp("front_data"), official_checkpoint, heldout=16)


@pytest.mark.slow
def test_front_resume_gives_the_uninterrupted_front(search_data, official_checkpoint, tmp_path, capsys):
    from alphanet_zoo.commands.search import main

    train, heldout = search_data
    whole = tmp_path / "whole"
    whole.mkdir()
    args = _front_args(official_checkpoint, train, heldout, whole / "f.json", whole / "h.jsonl", generations=3)
    assert main(args) == 0
    rows = lines(whole / "h.jsonl")
    part = tmp_path / "h.jsonl"
    kept = [r for r in rows if r["generation"] <= 1]
    part.write_text("".join(json.dumps(r) + "\n" for r in kept))
    assert main(_front_args(official_checkpoint, train, heldout, tmp_path / "f.json", part, generations=3)
                + ["--resume"]) == 0
    capsys.readouterr()
    a, b = json.loads((whole / "f.json").read_text()), json.loads((tmp_path / "f.json").read_text())
    assert a["bins"] == b["bins"] and b["totals"]["replayed"] == len(kept)
    assert [(r["arch"], r["top1"]) for r in lines(part)] == [(r["arch"], r["top1"]) for r in rows]
    # an earlier run's history as the predictor's data: no warm-up, its evaluations pooled into every fit
    seeded = tmp_path / "seeded"
    seeded.mkdir()
    assert main(_front_args(official_checkpoint, train, heldout, seeded / "f.json", seeded / "h.jsonl",
                            predictor=str(whole / "h.jsonl"), generations=3)) == 0
    c = json.loads((seeded / "f.json").read_text())
    assert c["predictor"]["mode"] == str(whole / "h.jsonl") and c["predictor"]["rows"] > len(lines(seeded / "h.jsonl"))


@pytest.mark.slow
def test_one_and_two_processes_give_the_same_front(search_data, official_checkpoint, tmp_path):
    train, heldout = search_data
    docs = {}
    for predictor, n in (("auto", 1), ("auto", 2), ("none", 2)):
        folder = tmp_path / f"{predictor}{n}"
        folder.mkdir()
        done = torchrun("alphanet-search", _front_args(official_checkpoint, train, heldout, folder / "f.json",
                                                       folder / "h.jsonl", predictor=predictor, population=8), n,
                        folder)
        assert done.returncode == 0, done.stderr[-3000:]
        docs[predictor, n] = json.loads((folder / "f.json").read_text())
    one, two = docs["auto", 1], docs["auto", 2]
    assert one["bins"] == two["bins"] and one["totals"] == two["totals"]
    assert one["predictor"] == two["predictor"] and one["predicted_only"] == two["predicted_only"]
    assert (one["world_size"], two["world_size"]) == (1, 2)
    none = docs["none", 2]
    # on these images (an untrained supernet) top-1 is noise to any predictor: it shows no skill on held-out
    # evaluations, so it rules nothing out and the front is the exhaustive one, bin by bin
    assert [b.get("top1") for b in one["bins"]] == [b.get("top1") for b in none["bins"]]
    assert one["totals"]["real_evaluations"] <= none["totals"]["real_evaluations"]
    assert one["predictor"]["trusted"] is not None and "loo_tau" in one["predictor"]
