"""Process-wide memory-allocator setting for commands that run many forward passes on a CPU.

    from alphanet_zoo.allocator import keep_freed_memory
    keep_freed_memory()   # once, early in a command; False where the C library is not glibc

glibc serves every block above its mmap threshold (128 KiB, raised dynamically up to 32 MiB) with
a fresh ``mmap`` and returns it with ``munmap`` when freed, so a CNN's activations are mapped,
zeroed by the kernel and unmapped again layer after layer. On this project's 2-core test machine
that was more than half of a search candidate's time (system time; ``benchmarks/bench_search.py
--profile``). `keep_freed_memory` raises the mmap and trim thresholds so freed blocks are kept in
the heap for reuse. It lives beside `alphanet_zoo.device` and the thread settings of
`alphanet_zoo.commands.running`: like them it is a setting of the process, not of a model.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Ask glibc's allocator to serve blocks below ``threshold`` bytes from its heap and keep freed
    memory for reuse (``mallopt`` M_MMAP_THRESHOLD and M_TRIM_THRESHOLD) instead of mapping and
    unmapping every large activation. Process-wide; for commands that run many forward passes.
    False (and nothing changed) where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, int(threshold)) == 1 and mallopt(_M_TRIM_THRESHOLD, 2 * int(threshold)) == 1
    log.debug("mallopt: large blocks kept for reuse: %s", ok)
    return ok
