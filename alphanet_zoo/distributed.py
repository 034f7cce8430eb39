"""torch.distributed set-up from the environment ``torchrun`` provides, and small collectives.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) training runs as one process and no
process group is created. With it: NCCL when the processes use GPUs, gloo on CPU.

Failures: ``setup``'s ``timeout_s`` bounds every collective (a process waiting longer on another
fails). The object collectives and `barrier` turn a failed collective into one `DistributedError`;
`alphanet_zoo.train.peer_watch` tells training which process was lost.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.distributed as dist

from .device import parse_device
from .errors import AlphaNetError, brief



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


def setup(device: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Join the process group ``torchrun`` describes (if any) and pick this process's device.

    ``timeout_s`` is the process group's timeout: a collective that waits longer on another process
    raises (gloo) or aborts the process (NCCL's watchdog). A failure to join is a `DistributedError`."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = parse_device(device, local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError) as e:  # a rendezvous that timed out, an unreachable MASTER_ADDR, ...
            raise DistributedError(f"rank {rank}: cannot join the process group of {world_size} processes "
                                   f"({backend}): {brief(e)}") from None
    return DistContext(rank, world_size, local_rank, resolved)


@contextmanager
def torchrun(device: str | torch.device = "auto", timeout_s: float = 1800.0,
             prog: str = "alphanet") -> Iterator[DistContext]:
    """The run of a command: inside ``torchrun`` (``WORLD_SIZE`` > 1) join its process group, turn the
    launcher's SIGTERM into one `DistributedError`, and leave the group at the end; outside it, one
    process on the parsed device. Yields the `DistContext` either way."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    ctx = setup(device, timeout_s) if world_size > 1 else DistContext(0, 1, 0, parse_device(device))
    try:
        with stop_on_sigterm(prog):
            yield ctx
    finally:
        if world_size > 1:
            teardown()


def broadcast_or_raise(compute: Callable[[], Any], what: str, src: int = 0) -> Any:
    """``compute()`` on rank ``src`` and its result on every rank; when it fails there, it raises there
    and every other rank raises one `DistributedError` naming ``what`` and rank ``src``'s reason."""
    if not is_distributed():
        return compute()
    if dist.get_rank() == src:
        try:
            value = compute()
        except BaseException as e:
            broadcast_object(("error", brief(e, None, first_line=False)), src, what)
            raise
        broadcast_object(("ok", value), src, what)
        return value
    status, value = broadcast_object(None, src, f"waiting for rank {src}: {what}")
    if status == "error":
        raise DistributedError(f"rank {src} failed {what}: {value}")
    return value


def teardown() -> None:
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
        reason = brief(e, 200).split(". ")[0]
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


def barrier(what: str = "waiting for the other processes") -> None:
    """Wait for every process; a failure is a `DistributedError` naming ``what``."""
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

    stopped: list[DistributedError] = []

    def handler(signum, frame):
        rank = dist.get_rank() if is_distributed() else 0
        stopped.append(DistributedError(f"rank {rank}: stopped by the launcher (signal {signum}): another process "
                                        "of the run failed or the run was cancelled"))
        raise stopped[-1]

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except BaseException as error:
        # the handler's exception may surface wrapped by the code it interrupted (load_state_dict
        # re-raises it as a RuntimeError): what ends the run is still the launcher's stop
        if stopped and error is not stopped[-1]:
            raise stopped[-1] from error
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
