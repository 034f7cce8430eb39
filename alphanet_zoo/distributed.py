"""torch.distributed set-up from the environment ``torchrun`` provides, and small collectives.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) training runs as one process and no
process group is created. With it: NCCL when the processes use GPUs, gloo on CPU.

Failures: ``setup``'s ``timeout_s`` bounds every collective (a process waiting longer on another
fails). `watch_peers` starts a heartbeat in the rendezvous store, so that after a failed collective
`explain_failure` can name the process that was lost (its heartbeat stopped: killed, crashed, hung)
or failed (it wrote its error with `report_failure` before exiting), in one `LostRankError`.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable

import torch
import torch.distributed as dist

from .errors import AlphaNetError, InputError

log = logging.getLogger("alphanet_zoo")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when a GPU is there, else ``cpu``; ``cuda`` -> ``cuda:<local_rank>``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device} asked for, but no CUDA GPU is available")
    return resolved


def setup(device: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Join the process group ``torchrun`` describes (if any) and pick this process's device.

    ``timeout_s`` is the process group's timeout: a collective that waits longer on another process
    raises (gloo) or aborts the process (NCCL's watchdog). A failure to join is a `DistributedError`."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError) as e:  # a rendezvous that timed out, an unreachable MASTER_ADDR, ...
            raise DistributedError(f"rank {rank}: cannot join the process group of {world_size} processes "
                                   f"({backend}): {' '.join(str(e).split())[:300]}") from None
    return DistContext(rank, world_size, local_rank, resolved)


def teardown() -> None:
    stop_watching()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``sum``, ``max`` or ``mean``) when distributed; returns ``tensor``."""
    if is_distributed():
        dist.all_reduce(tensor, dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        if op == "mean":
            tensor.div_(dist.get_world_size())
    return tensor


def broadcast_tensors(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` on every process with the values of process ``src`` (one collective per dtype)."""
    if not is_distributed():
        return
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    for items in groups.values():
        flat = torch.cat([t.detach().reshape(-1) for t in items])
        dist.broadcast(flat, src)
        with torch.no_grad():
            for t, chunk in zip(items, flat.split([t.numel() for t in items])):
                t.copy_(chunk.view_as(t))


def barrier() -> None:
    if is_distributed():
        dist.barrier()


# ---- for search and evaluation: Python objects across processes, and failures as one clear error ----

class DistributedError(AlphaNetError):
    """Another process of a ``torchrun`` run failed, was killed, or stopped answering."""


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside a process group."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextmanager
def collective(what: str):
    """Turn a failed collective (a peer's connection closed, a timeout) into one `DistributedError`."""
    try:
        yield
    except (RuntimeError, dist.DistError) as e:
        rank = dist.get_rank() if is_distributed() else 0
        reason = " ".join(str(e).split())
        reason = re.sub(r"^\[[^\]]*\] ", "", reason)  # gloo's source location
        reason = reason.split(". ")[0][:200]
        raise DistributedError(f"rank {rank}: {what} failed: another process of the run died, was killed or timed "
                               f"out ({reason})") from e


def all_gather_object(obj: Any, what: str = "gathering results") -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order, on every process; ``[obj]`` when not distributed."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    with collective(what):
        dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0, what: str = "sharing a result") -> Any:
    """Process ``src``'s ``obj`` (picklable) on every process (others pass anything, e.g. None)."""
    if not is_distributed():
        return obj
    box = [obj]
    with collective(what):
        dist.broadcast_object_list(box, src)
    return box[0]


def checked_barrier(what: str = "waiting for the other processes") -> None:
    """`barrier`, with a failure reported as `DistributedError`."""
    if is_distributed():
        with collective(what):
            dist.barrier()


@contextmanager
def stop_on_sigterm(prog: str):
    """Inside a multi-process run, turn the launcher's SIGTERM (``torchrun`` sends it to the survivors when
    a process fails) into a `DistributedError`, so the command ends with one line instead of in silence."""
    if not is_distributed() or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        rank = dist.get_rank() if is_distributed() else 0
        raise DistributedError(f"rank {rank}: stopped by the launcher (signal {signum}): another process of the "
                               "run failed or the run was cancelled")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---- for training: which process was lost, told through heartbeats in the rendezvous store ----------

#: Every process adds to its heartbeat counter in the rendezvous store this often (a background thread).
HEARTBEAT_PERIOD_S = 0.5
#: After a failed collective, a process whose counter did not move for this long is named as lost.
LOST_AFTER_S = 2.0
_COMM_FAILURE = re.compile(r"gloo|nccl|connection (reset|closed)|timed out|broken pipe|processgroup|socket",
                           re.IGNORECASE)


class LostRankError(DistributedError):
    """Other processes of the run were lost (killed, crashed, hung) or failed; ``ranks`` names them."""

    def __init__(self, message: str, ranks: Iterable[int]) -> None:
        super().__init__(message)
        self.ranks = sorted(ranks)


class PeerWatch:
    """Heartbeats of every process in the rendezvous store that ``torchrun`` provides.

    Each process adds to its own counter every `HEARTBEAT_PERIOD_S` from a daemon thread (so a process
    busy computing, or blocked in a collective, still beats) and publishes its progress (a step
    number). When a collective fails, `census` tells the lost processes (their counter stopped) and
    the failed ones (they wrote their error with `report_failure` before exiting) from the live ones.
    """

    def __init__(self, host: str, port: int, rank: int, world_size: int, prefix: str) -> None:
        self.rank, self.world_size, self.prefix = rank, world_size, prefix
        timeout = timedelta(seconds=10)
        self._beat_store = dist.TCPStore(host, port, is_master=False, timeout=timeout, wait_for_workers=False)
        self._store = dist.TCPStore(host, port, is_master=False, timeout=timeout, wait_for_workers=False)
        self.progress = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="alphanet-heartbeat", daemon=True)

    def _key(self, kind: str, rank: int) -> str:
        return f"{self.prefix}/{kind}/{rank}"

    def start(self) -> "PeerWatch":
        self._beat_store.set(self._key("beat", self.rank), f"0 {self.progress}")
        self._thread.start()
        return self

    def _beat(self) -> None:
        count = 0
        while not self._stop.wait(HEARTBEAT_PERIOD_S):
            count += 1
            try:
                self._beat_store.set(self._key("beat", self.rank), f"{count} {self.progress}")
            except Exception:  # the store is gone (its host died): nothing left to tell
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * HEARTBEAT_PERIOD_S)

    def report_failure(self, message: str) -> None:
        """Tell the other processes why this one is about to exit."""
        try:
            self._store.set(self._key("failed", self.rank), message[:2000])
        except Exception:
            pass

    def _read(self, kind: str) -> dict[int, str]:
        out = {}
        for r in range(self.world_size):
            key = self._key(kind, r)
            if r != self.rank and self._store.check([key]):
                out[r] = self._store.get(key).decode("utf-8", "replace")
        return out

    def census(self, wait_s: float = LOST_AFTER_S) -> tuple[dict[int, str], list[int], dict[int, int]]:
        """(failed ranks and their messages, lost ranks, the live ranks' progress) among the other processes.

        Raises the store's error when it cannot be reached."""
        before = self._read("beat")
        time.sleep(wait_s)
        after = self._read("beat")
        failed = self._read("failed")
        count = {r: after[r].split()[0] for r in after}
        others = [r for r in range(self.world_size) if r != self.rank]
        lost = [r for r in others if r not in failed and (r not in after or count[r] == before.get(r, "").split()[0])]
        progress = {r: int(after[r].split()[1]) for r in others if r in after and r not in lost and r not in failed}
        return failed, lost, progress


_watch: PeerWatch | None = None


def watch_peers() -> PeerWatch | None:
    """Start this process's heartbeat (inside a ``torchrun`` process group); None when not distributed."""
    global _watch
    if _watch is not None or not is_distributed():
        return _watch
    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not host or not port:
        return None
    prefix = f"alphanet_zoo/{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/" \
             f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    try:
        _watch = PeerWatch(host, int(port), dist.get_rank(), dist.get_world_size(), prefix).start()
    except (RuntimeError, ValueError) as e:
        log.warning("cannot watch the other processes through the store at %s:%s (%s): a lost process will not be "
                    "named", host, port, _first_line(e))
        _watch = None
    return _watch


def stop_watching() -> None:
    global _watch
    if _watch is not None:
        _watch.stop()
        _watch = None


def set_progress(step: int) -> None:
    """Publish how far this process is (a step number), for the message of a process that finds another hung."""
    if _watch is not None:
        _watch.progress = int(step)


def report_failure(message: str) -> None:
    """Tell the other processes (through the store) the error this one is about to exit with."""
    if _watch is not None:
        _watch.report_failure(message)


def _first_line(error: BaseException) -> str:
    text = re.sub(r"\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", str(error))  # gloo's source locations
    text = text.split(". This is typically", 1)[0]
    return " ".join(text.split())[:300] or type(error).__name__


def is_communication_failure(error: BaseException) -> bool:
    """Whether ``error`` looks like a failed collective (a closed connection, a timeout) rather than a bug."""
    return isinstance(error, dist.DistError) or (isinstance(error, RuntimeError)
                                                 and bool(_COMM_FAILURE.search(str(error))))


def explain_failure(error: BaseException, where: str = "") -> DistributedError | None:
    """After ``error`` in a multi-process run: a `LostRankError` naming the processes that were lost or
    failed, a `DistributedError` for a collective that failed while every process is alive, or None
    when ``error`` is this process's own (a bug: let it show). Waits up to `LOST_AFTER_S` to tell."""
    if _watch is None:
        if is_communication_failure(error):
            return DistributedError(f"a collective operation failed{where} ({_first_line(error)}): another process "
                                    "of the run was lost or timed out; see its own message")
        return None
    me, world = _watch.rank, _watch.world_size
    try:
        failed, lost, progress = _watch.census()
    except Exception as e:  # the store is gone too: its host (rank 0's, or torchrun's) is gone
        if not is_communication_failure(error):
            return None
        return LostRankError(f"lost contact with the other processes{where}: the collective failed "
                             f"({_first_line(error)}) and the rendezvous store is unreachable ({_first_line(e)}); "
                             f"the process hosting it (rank 0 or torchrun) is gone", [])
    parts = []
    if lost:
        names = ", ".join(map(str, lost))
        parts.append(f"lost rank{'s' if len(lost) > 1 else ''} {names} of {world}: "
                     f"{'their processes' if len(lost) > 1 else 'its process'} stopped responding "
                     f"(killed, crashed or hung)")
    for r, message in sorted(failed.items()):
        parts.append(f"rank {r} of {world} failed: {' '.join(message.split())}")
    if parts:
        return LostRankError("; ".join(parts) + f"; rank {me} stops too{where}", [*lost, *failed])
    if is_communication_failure(error):
        behind = [f"rank {r} at step {s}" for r, s in sorted(progress.items()) if s < _watch.progress]
        hint = f" ({', '.join(behind)}, this one at step {_watch.progress}: hung?)" if behind else ""
        return DistributedError(f"a collective operation failed{where} ({_first_line(error)}) although every "
                                f"process is alive{hint}")
    return None
