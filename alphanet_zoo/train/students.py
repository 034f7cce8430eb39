"""The students of a sandwich step, run side by side on a multi-core CPU.

After the teacher, the step's students are independent: each needs only the teacher's detached
logits, and their gradients are summed. One subnet at a time, every kernel is split over all
intra-op threads, and at batch sizes that fit a CPU the threads spend much of their time waiting for
each other (a 1-thread step is only about 1.5x slower than a 2-thread one). Running the students in
``workers`` Python threads, each with its share of the intra-op threads, keeps every core busy
(PyTorch releases the GIL in its kernels, and `Supernet.forward` keeps no state on the module).

Exactness: each student's gradients come back from ``torch.autograd.grad`` and are added to the
parameters' ``.grad`` in the students' order, the additions ``backward()`` would have made one
student after another. A student's own gradient can differ from its 2-thread value in the last bits
(kernels sum in another order with fewer threads) but is the same at every run: steps stay
reproducible and resumes exact.
"""
from __future__ import annotations

import threading
from typing import Callable, Sequence

import torch

from ..config import ArchConfig
from ..flops import count_flops

#: below this many intra-op threads the students run one after another
MIN_THREADS = 2


def student_workers(device: "str | torch.device", num_students: int) -> int:
    """How many threads run the students: 2 on a CPU with at least 2 intra-op threads and 2 students,
    else 1 (a GPU runs one subnet at a time)."""
    if torch.device(device).type != "cpu" or num_students < 2 or torch.get_num_threads() < MIN_THREADS:
        return 1
    return 2


def balance(archs: Sequence[ArchConfig], workers: int) -> list[list[int]]:
    """Indices of ``archs`` split into ``workers`` groups of about equal FLOPs (largest first, each
    to the lightest group), each group in the original order."""
    groups: list[list[int]] = [[] for _ in range(workers)]
    load = [0.0] * workers
    for i in sorted(range(len(archs)), key=lambda i: -count_flops(archs[i])):
        g = load.index(min(load))
        groups[g].append(i)
        load[g] += count_flops(archs[i])
    return [sorted(g) for g in groups if g]


def student_gradients(loss_of: Callable[[int], torch.Tensor], archs: Sequence[ArchConfig],
                      params: Sequence[torch.Tensor], workers: int) -> list[tuple]:
    """Call ``loss_of(i)`` (forward and loss of student ``i``, ``archs[i]``) and take its gradients
    w.r.t. ``params``, for every student, in ``workers`` threads. Returns per student, in the students'
    order, the tuple of gradients (None for a parameter the student does not use)."""
    grads: list = [None] * len(archs)
    errors: list[BaseException] = []
    outer = torch.get_num_threads()
    threads = max(1, outer // workers)

    def run(indices: list[int]) -> None:
        try:
            torch.set_num_threads(threads)  # the size of this thread's OpenMP team
            for i in indices:
                grads[i] = torch.autograd.grad(loss_of(i), params, allow_unused=True)
        except BaseException as error:  # re-raised in the caller's thread
            errors.append(error)

    pool = [threading.Thread(target=run, args=(g,), name=f"alphanet-student-{n}")
            for n, g in enumerate(balance(archs, workers))]
    try:
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        torch.set_num_threads(outer)
    if errors:
        raise errors[0]
    return grads


def accumulate(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> None:
    """Add one student's gradients to ``params``' ``.grad`` as ``backward()`` would."""
    with torch.no_grad():
        for p, g in zip(params, grads):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g
            else:
                p.grad += g
