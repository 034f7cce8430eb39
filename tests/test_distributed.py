"""The one torchrun context, the one broadcast-or-raise and the one device parser, with real gloo
process groups on loopback (two processes spawned by the test)."""
from __future__ import annotations

import os
import signal
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from alphanet_zoo import distributed
from alphanet_zoo.device import parse_device
from alphanet_zoo.errors import InputError


def test_the_device_parser_keeps_the_index_and_names_a_bad_value():
    assert parse_device("cpu") == torch.device("cpu") and parse_device(torch.device("cpu")) == torch.device("cpu")
    assert parse_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    with pytest.raises(InputError, match="auto, cpu, cuda or cuda:N, got 'tpu'"):
        parse_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            parse_device("cuda:1")
    elif torch.cuda.device_count() > 1:
        assert parse_device("cuda:1").index == 1 and parse_device("cuda", local_rank=1).index == 1


def test_outside_torchrun_the_context_is_one_process_and_rank_zero_work_runs_here(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.torchrun("cpu") as ctx:
        assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.device) == (0, 1, True, torch.device("cpu"))
        assert distributed.broadcast_or_raise(lambda: 41 + 1, "adding") == 42
        with pytest.raises(ZeroDivisionError):
            distributed.broadcast_or_raise(lambda: 1 / 0, "dividing")


def _worker(rank: int, port: int, results) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    out = {}
    with distributed.torchrun("cpu", timeout_s=60, prog="test") as ctx:
        out["ctx"] = (ctx.rank, ctx.world_size, ctx.is_main)
        out["shared"] = distributed.broadcast_or_raise(lambda: {"from": dist_rank()}, "sharing a table")
        try:
            distributed.broadcast_or_raise(lambda: _fail(), "reading the history")
        except distributed.DistributedError as e:
            out["error"] = ("DistributedError", str(e))
        except ValueError as e:
            out["error"] = ("ValueError", str(e))
        try:  # the launcher's SIGTERM, arriving inside code that wraps what it catches
            with distributed.stop_on_sigterm("test"):
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(5)
                except distributed.DistributedError as e:
                    raise RuntimeError("Error(s) in loading state_dict for AlphaNet") from e
        except distributed.DistributedError as e:
            out["sigterm"] = str(e)
        distributed.barrier("finishing")
    out["after"] = torch.distributed.is_initialized()
    results[rank] = out


def dist_rank() -> int:
    return torch.distributed.get_rank()


def _fail():
    raise ValueError("history.jsonl: line 3 is not JSON")


@pytest.mark.slow  # two spawned processes
def test_rank_zero_work_reaches_every_rank_and_its_failure_is_one_error_on_each():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(port, results), nprocs=2, join=True)
        results = dict(results)
    assert results[0]["ctx"] == (0, 2, True) and results[1]["ctx"] == (1, 2, False)
    assert results[0]["shared"] == results[1]["shared"] == {"from": 0}
    assert results[0]["error"] == ("ValueError", "history.jsonl: line 3 is not JSON")
    kind, message = results[1]["error"]
    assert kind == "DistributedError" and "rank 0 failed reading the history" in message \
        and "line 3 is not JSON" in message
    assert not results[0]["after"] and not results[1]["after"]  # the context left the process group
    for rank in (0, 1):  # one clear line, even where the interrupted code wrapped the stop in its own error
        assert results[rank]["sigterm"].startswith(f"rank {rank}: stopped by the launcher (signal 15)")
