"""How every latency of the package is taken: calls timed one by one, runs taking turns, the machine's name.

    >>> times = time_calls(lambda: model(x), warmup=3, calls=20)           # seconds per call
    >>> turns = time_in_turns([lambda: a(x), lambda: b(x)], rounds=6, calls=5)
    >>> turns[0]                                                           # a's calls, one list per turn

`time_in_turns` is the one interleaved loop: export's ``auto`` precision choice (`deploy`), the
benchmark (`bench`) and the latency tables of the search (``alphanet_zoo.search.latency``) all time
through it, so load that comes and goes on a shared machine falls on every contender alike.
`mean_seconds` (a single statement, its mean over a block of calls) builds on ``torch.utils.benchmark``.
"""
from __future__ import annotations

import contextlib
import platform
import time
from typing import Any, Callable, Iterator, Sequence

import torch

#: Idle time before each turn. A runtime's worker threads spin for a while after a call (ONNX
#: Runtime's do by default, OpenMP's too) and would take the cores from the next turn's calls:
#: measured on 2 cores, that inflated the median of a subnet by 60 % over its time alone.
TURN_PAUSE_S = 0.05
TURN_CALLS = 5  # timed calls per turn unless told otherwise


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return name


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch intra-op threads (None: as they are), restoring the count afterwards."""
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_calls(run: Callable[[], Any], *, warmup: int = 0, calls: int = TURN_CALLS, min_seconds: float = 0.0,
               max_calls: int = 1000, settle_s: float = 0.0,
               sync: Callable[[], Any] | None = None) -> list[float]:
    """Seconds of each call of ``run()``: ``calls`` of them, more while under ``min_seconds`` in all (at most
    ``max_calls``), after untimed calls: ``warmup`` of them, and as many more as fill ``settle_s`` seconds.

    ``sync`` (CUDA's synchronize) is called before the first timed call and inside each timed one, so
    a clock never stops before the work it times is done."""
    settled = time.perf_counter() + settle_s
    done = 0
    while done < warmup or time.perf_counter() < settled:
        run()
        done += 1
    if sync is not None:
        sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < calls or (time.perf_counter() - start < min_seconds and len(times) < max_calls):
        t = time.perf_counter()
        run()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t)
    return times


def time_in_turns(runs: Sequence[Callable[[], Any]], *, rounds: int, calls: int | Sequence[int] = TURN_CALLS,
                  warmup: int = 1, first_warmup: int | None = None, pause_s: float = TURN_PAUSE_S,
                  settle_s: float = 0.0, syncs: Sequence[Callable[[], Any] | None] | None = None
                  ) -> list[list[list[float]]]:
    """Time ``runs`` taking turns: ``rounds`` rounds in which each run, in order, gets one turn of
    `TURN_PAUSE_S` (``pause_s``) idle, untimed calls (``warmup``; ``first_warmup`` in the first round;
    at least ``settle_s`` seconds of them) and ``calls`` timed calls (a sequence: per round).

    Returns seconds per call, by run, then by turn: ``result[run][round] = [s, s, ...]``.
    ``syncs``: per run, what waits for its asynchronous work (see `time_calls`)."""
    per_round = [calls] * rounds if isinstance(calls, int) else list(calls)
    syncs = list(syncs) if syncs is not None else [None] * len(runs)
    times: list[list[list[float]]] = [[] for _ in runs]
    for i, n in enumerate(per_round):
        for run, sync, t in zip(runs, syncs, times):
            if pause_s:
                time.sleep(pause_s)
            t.append(time_calls(run, warmup=first_warmup if i == 0 and first_warmup is not None else warmup,
                                calls=n, settle_s=settle_s, sync=sync))
    return times


def flat(turns: Sequence[Sequence[float]]) -> list[float]:
    """One run's calls of every turn, in order."""
    return [v for turn in turns for v in turn]


def mean_seconds(run: Callable[[], Any], calls: int, threads: int | None = None) -> float:
    """Mean seconds per call of ``run()`` over a block of ``calls`` (after a few untimed calls), at
    ``threads`` torch threads (None: as they are): ``torch.utils.benchmark.Timer``, which also waits for
    CUDA work before reading its clock."""
    # imported here: torch.utils.benchmark pulls in cpp_extension, which warns on stderr on a machine
    # without CUDA, and every command imports this module
    from torch.utils import benchmark

    timer = benchmark.Timer("run()", globals={"run": run}, num_threads=threads or torch.get_num_threads())
    return timer.timeit(calls).mean


__all__ = ["TURN_CALLS", "TURN_PAUSE_S", "cpu_name", "flat", "mean_seconds", "time_calls", "time_in_turns",
           "torch_threads"]
