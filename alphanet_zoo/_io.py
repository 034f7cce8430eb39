"""Files in and out: atomic writes with the usual file mode, output checks before long work, bounded JSON.

Every file the package writes goes through `atomic_path`: it is written under a temporary name
beside its target (``.NAME.<pid>.<random>.tmp``) and renamed onto the target only when complete,
so an interruption never leaves a half file under the final name; a new folder of files (a model
folder) is written as a temporary folder renamed once into place. A temporary is removed on any
exception; one left by a killed process is removed by the next write of the same target (its
process id no longer runs).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError, OutputError, OutputPathError

log = logging.getLogger("alphanet_zoo")

#: JSON inputs (architecture files, config.json, metadata) larger than this are refused.
MAX_JSON_BYTES = 4 << 20
_TMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders that killed writers of ``path`` left beside it; returns them."""
    path = Path(path)
    removed = []
    with contextlib.suppress(OSError):
        for candidate in path.parent.glob(f".{path.name}.*.tmp"):
            match = _TMP_NAME.match(candidate.name)
            if match and match["name"] == path.name and not _pid_alive(int(match["pid"])):
                _remove(candidate)
                if not candidate.exists():
                    removed.append(candidate)
    for candidate in removed:
        log.info("removed %s, left by an interrupted write", candidate)
    return removed


def check_writable_file(path: str | os.PathLike, what: str = "output") -> Path:
    """Raise `OutputError` unless ``path`` can be written as a file: its folder exists and is
    writable, and ``path`` is not a folder. Call it before long work."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputPathError(f"cannot write {what} {path}: it is a folder")
    if not parent.exists():
        raise OutputPathError(f"cannot write {what} {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise OutputPathError(f"cannot write {what} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {what} {path}: folder {parent} is not writable")
    return path


def check_writable_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Raise `OutputError` unless ``path`` is, or can be created as, a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"cannot write {what} {path}: a file of that name exists")
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"cannot write {what} {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {what} {path}: folder {existing} is not writable")
    return path


def make_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) as a folder; `OutputError` if that fails."""
    path = check_writable_folder(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"cannot create {what} {path}: {e.strerror or e}") from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it gets the usual mode (0666 less the
    umask) and is renamed onto ``path``; on any error it is removed. An ``OSError`` while writing
    (disk full, read-only folder) becomes `OutputError` naming ``path``.

    With ``folder=True`` the temporary is a folder, renamed into place whole with the files written
    into it (each given the usual mode); ``path`` must not exist yet. The parent folder must exist
    (it is not created here: a typo'd folder should be an error).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"cannot write {path}: folder {parent} does not exist")
    if folder and path.exists():
        raise OutputPathError(f"cannot write folder {path}: it exists")
    if not folder and path.is_dir():
        raise OutputPathError(f"cannot write {path}: it is a folder")
    clean_stale_temporaries(path)
    prefix = f".{path.name}.{os.getpid()}."
    try:
        if folder:
            tmp = tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent)
        else:
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=parent)
            os.close(fd)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if folder:
            for file in tmp_path.iterdir():
                _finish_file(file)
            os.chmod(tmp_path, 0o777 & ~_umask())
        else:
            _finish_file(tmp_path)
        os.replace(tmp_path, path)
    except BaseException as e:
        _remove(tmp_path)
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def _finish_file(path: Path) -> None:
    # set the mode last: some writers (safetensors) replace the file and leave it 0600
    os.chmod(path, 0o666 & ~_umask())
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure atomically, in the format its suffix names (PNG without one)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".").lower() or "png")
    return Path(path)


def parse_json(text: str | bytes, what: str) -> Any:
    """``json.loads`` with a clear `InputError` for bad, oversized or too deeply nested JSON."""
    if len(text) > MAX_JSON_BYTES:
        raise InputError(f"{what} is larger than {MAX_JSON_BYTES >> 20} MiB; not a JSON file this package reads")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InputError(f"{what} is nested too deeply to be a config") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{what} is not valid JSON: {e}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: str | os.PathLike, what: str | None = None) -> Any:
    """The JSON document in ``path`` (at most `MAX_JSON_BYTES`), or an `InputError` naming the file."""
    path = Path(path)
    what = what or str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{what}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{what} is a folder, not a JSON file") from None
    except OSError as e:
        raise InputError(f"cannot read {what}: {e.strerror or e}") from None
    return parse_json(data, what)


class ExclusiveLock:
    """An exclusive ``flock`` on ``path`` (created, holding the owner's pid), released when the process ends,
    also by SIGKILL. A second holder gets `InputError` with ``busy`` (``{pid}`` becomes the owner's pid)."""

    def __init__(self, path: str | os.PathLike, busy: str) -> None:
        self.path, self.busy = Path(path), busy
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = os.read(fd, 64).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise InputError(self.busy.replace("{pid}", owner)) from None
            try:
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # the holder removed the file as it ended: lock the file there now
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        """Unlock, removing the lock file first (while still holding it)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None


def save_safetensors(state: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` with its write errors (disk full) as ``OSError``.

    Meant for a temporary path from `atomic_path`, which reports the error as `OutputError` naming
    the target, or sets the file mode and renames the file.
    """
    from safetensors.torch import save_file

    try:
        save_file(state, str(path), metadata=metadata)
    except Exception as e:  # safetensors' SafetensorError wraps the I/O error of a failed write
        if isinstance(e, OSError) or type(e).__name__ != "SafetensorError":
            raise
        raise OSError(str(e)) from None
