"""Which process of a ``torchrun`` run was lost, told through heartbeats in the rendezvous store.

`watch_peers` starts a heartbeat, so that after a failed collective `explain_failure` can name the
process that was lost (its heartbeat stopped: killed, crashed, hung) or failed (it wrote its error
with `report_failure` before exiting), in one `LostRankError`. Training uses it; search and
evaluation rely on `alphanet_zoo.distributed`'s errors alone.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from datetime import timedelta
from typing import Iterable

import torch.distributed as dist

from ..distributed import DistributedError, is_distributed
from ..errors import brief

log = logging.getLogger("alphanet_zoo")


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
                    "named", host, port, brief(e))
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
            return DistributedError(f"a collective operation failed{where} ({brief(error)}): another process "
                                    "of the run was lost or timed out; see its own message")
        return None
    me, world = _watch.rank, _watch.world_size
    try:
        failed, lost, progress = _watch.census()
    except Exception as e:  # the store is gone too: its host (rank 0's, or torchrun's) is gone
        if not is_communication_failure(error):
            return None
        return LostRankError(f"lost contact with the other processes{where}: the collective failed "
                             f"({brief(error)}) and the rendezvous store is unreachable ({brief(e)}); "
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
        return DistributedError(f"a collective operation failed{where} ({brief(error)}) although every "
                                f"process is alive{hint}")
    return None
