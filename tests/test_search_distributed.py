"""``alphanet-search`` under ``torchrun`` (gloo on loopback, one thread per process): one and two
processes give the same best.json and history; a candidate evaluated by rank 1 is what
``alphanet-extract`` + ``alphanet-eval`` give; a killed rank ends the run with one clear line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _search_helpers import BIN, lines, make_search_data, torchrun

pytestmark = pytest.mark.slow

CALIB = ["--calib-batches", "2", "--calib-batch-size", "4", "--seed", "3"]


@pytest.fixture(scope="module")
def search_data(tmp_path_factory, official_checkpoint):
    return make_search_data(tmp_path_factory.mktemp("search_data"), official_checkpoint, crop_size=224)


def _args(checkpoint, train, heldout, out, history, generations=2):
    return ["--supernet", checkpoint, "--flops", "300", "--flops-min", "230", "--data", heldout,
            "--calib-data", train, *CALIB, "--batch-size", "4", "--workers", "0",
            "--population", "5", "--generations", generations, "--out", out, "--history", history]


@pytest.fixture(scope="module")
def runs(search_data, official_checkpoint, tmp_path_factory):
    """The same search with one and with two processes: {n: (best.json, history rows, stdout)}."""
    train, heldout = search_data
    out = {}
    for n in (1, 2):
        folder = tmp_path_factory.mktemp(f"procs{n}")
        done = torchrun("alphanet-search", _args(official_checkpoint, train, heldout, folder / "best.json",
                                                 folder / "h.jsonl"), n, folder)
        assert done.returncode == 0, done.stderr[-3000:]
        out[n] = (json.loads((folder / "best.json").read_text()), lines(folder / "h.jsonl"), done.stdout)
    return out


def test_one_and_two_processes_give_the_same_search(runs):
    (best1, rows1, out1), (best2, rows2, out2) = runs[1], runs[2]
    assert len({r["top1"] for r in rows1}) > 1  # candidates score differently: the comparison means something
    assert [(r["arch"], r["top1"], r["mflops"], r["generation"]) for r in rows1] == \
        [(r["arch"], r["top1"], r["mflops"], r["generation"]) for r in rows2]
    same = ("architecture", "top1", "mflops", "generation", "evaluated", "search", "budget", "calibration")
    assert {k: best1[k] for k in same} == {k: best2[k] for k in same}
    assert (best1["world_size"], best2["world_size"]) == (1, 2)
    assert {r["world_size"] for r in rows2} == {2} and {r["rank"] for r in rows2} == {0, 1}
    assert {r["rank"] for r in rows1} == {0}
    front = [line for line in out1.splitlines() if "<- best" in line]
    assert front and front == [line for line in out2.splitlines() if "<- best" in line]
    # best.json against an independent recount of the history
    top = max(rows2, key=lambda r: (r["top1"], -r["mflops"]))
    assert best2["architecture"] == top["arch"] and best2["top1"] == top["top1"]


def test_a_candidate_of_rank_1_is_reproduced_by_extract_and_eval(runs, search_data, official_checkpoint, tmp_path,
                                                                 capsys):
    from alphanet_zoo.commands import extract_main
    from alphanet_zoo.commands.eval import main as eval_main

    train, heldout = search_data
    _, rows, _ = runs[2]
    row = next(r for r in rows if r["rank"] == 1)
    arch = tmp_path / "cand.json"
    arch.write_text(json.dumps(row["arch"]))
    assert extract_main(["--supernet", str(official_checkpoint), "--arch", str(arch), "--out", str(tmp_path / "w"),
                         "--calib-data", str(train), "--workers", "0", *CALIB]) == 0
    out = tmp_path / "r.json"
    assert eval_main(["--arch", str(arch), "--weights", str(tmp_path / "w"), "--data", str(heldout), "--workers", "0",
                      "--batch-size", "4", "--out", str(out)]) == 0
    capsys.readouterr()
    assert json.loads(out.read_text())["top1"] == row["top1"]


def _rank_pid(parent: int, rank: int) -> int | None:
    """The process of ``rank`` among ``parent``'s descendants (from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"TORCHELASTIC_RUN_ID" in b"".join(environ) \
                and int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            return int(entry.name)
    return None


def test_a_killed_rank_ends_the_run_with_one_clear_line(search_data, official_checkpoint, tmp_path):
    train, heldout = search_data
    history = tmp_path / "h.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python",
         str(BIN / "alphanet-search"), *map(str, _args(official_checkpoint, train, heldout, tmp_path / "best.json",
                                                       history, generations=200))],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not history.exists() and time.monotonic() < deadline and launcher.poll() is None:
            time.sleep(0.2)
        assert history.exists(), "the search never finished its first generation"
        victim = _rank_pid(launcher.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        _, err = launcher.communicate(timeout=60)  # a hang would time out here
        assert time.monotonic() - killed < 60
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.communicate()
    assert launcher.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith("alphanet-search: error: rank 0")]
    assert len(ours) == 1 and ("died" in ours[0] or "stopped by the launcher" in ours[0]), err[-3000:]
    assert not (tmp_path / "best.json").exists()
    assert lines(history)  # the generations finished before the kill are kept, for --resume
