"""Third-party chatter routed to the ``alphanet_zoo`` logger instead of the user's terminal.

ExecuTorch's runtime prints its CPU probing (``[cpuinfo_utils.cpp:71] Reading file ...``) and LiteRT its
absl/oneDNN/XNNPACK start-up lines (``I0000 00:00:... port.cc:153] oneDNN custom operations are on``)
from C++ straight to file descriptor 2, and importing either exporter makes torch warn, through torch's
own log handler, about an Enum registered with pytree. None says anything a user can act on. `to_log` captures both while a
block runs and hands each line to our logger at DEBUG (``--verbose`` shows them); anything else written
to stderr meanwhile is passed on as it was.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from typing import Iterator

log = logging.getLogger("alphanet_zoo")
# native lines known to be noise: cpuinfo's probing, absl/glog INFO and WARNING lines, LiteRT's delegate notice
CHATTER = re.compile(r"^(\[cpuinfo_utils\.cpp|WARNING: All log messages before absl::InitializeLog"
                     r"|[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\]|INFO: Created TensorFlow Lite XNNPACK delegate)")
LOGGERS = ("torch.utils._pytree",)  # third-party Python loggers whose warnings are noise here


class _Forward(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        log.debug("%s: %s", record.name, record.getMessage())


@contextlib.contextmanager
def to_log() -> Iterator[None]:
    """Inside: fd 2's known native chatter and `LOGGERS`' records go to our logger at DEBUG."""
    saved_loggers = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved_loggers.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers, logger.propagate = [_Forward()], False
    try:
        sys.stderr.flush()
        saved_fd = os.dup(2)
    except (OSError, ValueError):  # no real stderr (an embedded interpreter): loggers only
        saved_fd = None
    capture = tempfile.TemporaryFile(mode="w+b") if saved_fd is not None else None
    if capture is not None:
        os.dup2(capture.fileno(), 2)
    try:
        yield
    finally:
        if capture is not None:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            capture.close()
            passed = []
            for line in text.splitlines():
                if CHATTER.match(line):
                    log.debug("native: %s", line)
                else:
                    passed.append(line)
            if passed:
                sys.stderr.write("\n".join(passed) + "\n")
        for logger, handlers, propagate in saved_loggers:
            logger.handlers, logger.propagate = handlers, propagate
