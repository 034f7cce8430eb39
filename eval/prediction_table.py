"""The table ``alphanet-predict --out`` writes, streamed and resumable: a journal per process, merged at the end.

While a run goes, each process appends its rows to a journal of JSON lines,
``OUT.parts/rank-R-of-W.jsonl``, one batch per write, flushed: a run stopped at any point (Ctrl-C, SIGTERM,
SIGKILL, a power cut between writes) leaves whole rows and at most one torn last line. Started again with the
same command, a process reads its journal back, drops the torn line and any batch it holds only in part, and
goes on from the next batch (`Journal.open`). The journal's first line holds the run's settings; a journal of
another command is refused, not mixed in. An ``flock`` on the journal refuses a second run writing the same
``--out`` at once (released by the kernel when a process dies, also by SIGKILL).

When every process is done, `merge_journals` writes the one table, in the input order, with exactly one row
per image (checked), atomically: JSON lines (``.jsonl``, the default), CSV or Parquet (needs pyarrow) by
suffix or ``--format``; then the journals go. Logits or features go to ``.npy`` shards beside the table, one
per batch (`shard_folder`), named in each row.
"""
from __future__ import annotations

import csv
import heapq
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .._io import ExclusiveLock, atomic_path
from ..errors import InputError, UsageError

JOURNAL_FORMAT = "alphanet_zoo.predict-journal/1"
FORMATS = ("jsonl", "csv", "parquet")
SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet",
            ".pq": "parquet"}
PARQUET_ROW_GROUP = 8192


def table_format(out: str | os.PathLike, given: str | None = None) -> str:
    """The table format: ``given``, else from the suffix of ``out`` (JSON lines when it says none of ours)."""
    if given is not None:
        if given not in FORMATS:
            raise UsageError(f"unknown table format {given!r}; known: {', '.join(FORMATS)}")
        return given
    return SUFFIXES.get(Path(out).suffix.lower(), "jsonl")


def require_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UsageError("Parquet output needs pyarrow: pip install 'alphanet_zoo[parquet]' (or write .jsonl or "
                         ".csv)") from None
    return pyarrow


def parts_folder(out: str | os.PathLike) -> Path:
    """Where the journals of a run writing ``out`` live until the table is written."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def shard_folder(out: str | os.PathLike, kind: str) -> Path:
    """The folder of ``kind`` (logits or features) shards beside ``out``: ``labels.jsonl`` -> ``labels.logits``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.{kind}")


def write_shard(folder: Path, batch: int, array: np.ndarray) -> str:
    """Save one batch's rows of logits or features (atomically); the name rows refer to it by."""
    name = f"{batch:07d}.npy"
    with atomic_path(folder / name) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
    return f"{folder.name}/{name}"


class Journal:
    """One process's rows of a run, appended a batch at a time; see the module docstring."""

    def __init__(self, out: str | os.PathLike, settings: dict[str, Any], rank: int = 0, world: int = 1) -> None:
        self.out, self.settings = Path(out), dict(settings, world_size=world)
        self.path = parts_folder(out) / f"rank-{rank:05d}-of-{world:05d}.jsonl"
        self.lock = ExclusiveLock(self.path.with_suffix(".lock"),
                                  f"another alphanet-predict (pid {{pid}}) is writing {self.out}: wait for it to end, or "
                                  f"choose another --out")
        self._file = None
        self.resumed = False

    def open(self, batches: Sequence[Sequence[int]], restart: bool = False) -> set[int]:
        """Lock, read back what an earlier run of the same command wrote (whole ``batches`` only: this
        process's share, in order; nothing with ``restart``) and get ready to append. The indices already
        done come back."""
        self.path.parent.mkdir(exist_ok=True)
        self.lock.acquire()
        done: set[int] = set()
        if restart:
            self.path.unlink(missing_ok=True)
        self.resumed = self.path.exists()
        try:
            if self.resumed:
                keep, done = self._read_back(batches)
                with open(self.path, "rb+") as f:
                    f.truncate(keep)
            else:
                with atomic_path(self.path) as tmp:
                    tmp.write_text(json.dumps({"format": JOURNAL_FORMAT, "settings": self.settings}) + "\n")
            self._file = open(self.path, "a", encoding="utf-8")
        except BaseException:
            self.lock.release()
            raise
        return done

    def _read_back(self, batches: Sequence[Sequence[int]]) -> tuple[int, set[int]]:
        """The byte length of the journal's header and whole batches, and their indices."""
        with open(self.path, "rb") as f:
            header = f.readline()
            try:
                head = json.loads(header)
            except ValueError:
                head = None
            if not isinstance(head, dict) or head.get("format") != JOURNAL_FORMAT:
                raise InputError(f"{self.path} is not a journal of alphanet-predict: remove {self.path.parent} "
                                 "to start over")
            if head.get("settings") != self.settings:
                differ = sorted(k for k in set(head["settings"]) | set(self.settings)
                                if head["settings"].get(k) != self.settings.get(k))
                raise InputError(f"{self.path.parent} holds an unfinished run with other settings "
                                 f"({', '.join(differ)}): run the same command to finish it, or remove "
                                 f"{self.path.parent} to start over")
            keep, pos, done, pending = f.tell(), f.tell(), set(), iter(batches)
            want, seen = set(next(pending, ())), set()
            for line in f:
                pos += len(line)
                try:
                    i = json.loads(line)["i"] if line.endswith(b"\n") else None
                except (ValueError, KeyError, TypeError):
                    i = None
                if i not in want or i in seen:
                    break  # a line torn by a kill mid-write, or not this share's next batch: redone from here
                seen.add(i)
                if seen == want:  # a whole batch: kept
                    keep, done = pos, done | seen
                    want, seen = set(next(pending, ())), set()
        return keep, done

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Write one batch of rows (each with its input index ``i``) in one write, flushed."""
        self._file.write("".join(json.dumps(row, allow_nan=False) + "\n" for row in rows))
        self._file.flush()

    def close_file(self) -> None:
        """Stop appending (the lock is kept until `close`)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        self.close_file()
        self.lock.release()


def _journal_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        f.readline()
        for line in f:
            yield json.loads(line)


def flat_columns(topk: int, shards: str | None) -> list[str]:
    """The columns of a CSV or Parquet table: the path, an error, then rank by rank the class index, synset,
    name and probability; the shard file and row when logits or features were saved."""
    columns = ["path", "error"]
    for r in range(1, topk + 1):
        columns += [f"top{r}_index", f"top{r}_synset", f"top{r}_name", f"top{r}_probability"]
    if shards:
        columns += [shards, f"{shards}_row"]
    return columns


def _flat(row: dict[str, Any], topk: int, shards: str | None) -> dict[str, Any]:
    flat = {"path": row["path"], "error": row.get("error")}
    top = row.get("top") or []
    for r in range(1, topk + 1):
        c = top[r - 1] if r <= len(top) else {}
        flat.update({f"top{r}_index": c.get("index"), f"top{r}_synset": c.get("synset"),
                     f"top{r}_name": c.get("name"), f"top{r}_probability": c.get("probability")})
    if shards:
        flat[shards], flat[f"{shards}_row"] = row.get(shards), row.get(f"{shards}_row")
    return flat


def _write_jsonl(path: Path, rows: Iterator[dict[str, Any]], **_) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _write_csv(path: Path, rows: Iterator[dict[str, Any]], topk: int, shards: str | None) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, flat_columns(topk, shards))
        writer.writeheader()
        for row in rows:
            writer.writerow(_flat(row, topk, shards))


def _write_parquet(path: Path, rows: Iterator[dict[str, Any]], topk: int, shards: str | None) -> None:
    pa = require_pyarrow()
    import pyarrow.parquet as pq

    types = {"path": pa.string(), "error": pa.string()}
    for r in range(1, topk + 1):
        types.update({f"top{r}_index": pa.int32(), f"top{r}_synset": pa.string(), f"top{r}_name": pa.string(),
                      f"top{r}_probability": pa.float32()})
    if shards:
        types.update({shards: pa.string(), f"{shards}_row": pa.int32()})
    schema = pa.schema([(name, types[name]) for name in flat_columns(topk, shards)])

    def group(chunk: list[dict[str, Any]]):
        return pa.Table.from_pylist([_flat(row, topk, shards) for row in chunk], schema=schema)

    with pq.ParquetWriter(path, schema) as writer:
        chunk: list[dict[str, Any]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == PARQUET_ROW_GROUP:
                writer.write_table(group(chunk))
                chunk = []
        if chunk:
            writer.write_table(group(chunk))


WRITERS = {"jsonl": _write_jsonl, "csv": _write_csv, "parquet": _write_parquet}


def merge_journals(out: str | os.PathLike, fmt: str, world: int, count: int, topk: int,
                   shards: str | None = None) -> tuple[int, int]:
    """Write the table ``out`` from the journals of ``world`` processes: rows in input order, exactly one per
    image of ``count`` (else an error naming the first index missing or doubled), then remove the journals.
    Returns the rows written and how many of them are errors."""
    folder = parts_folder(out)
    journals = [folder / f"rank-{r:05d}-of-{world:05d}.jsonl" for r in range(world)]
    streams = [_journal_rows(j) for j in journals]

    errors = 0

    def in_order() -> Iterator[dict[str, Any]]:
        nonlocal errors
        expected = 0
        for row in heapq.merge(*streams, key=lambda row: row["i"]):
            if row["i"] != expected:
                raise InputError(f"{folder}: the journals {'miss' if row['i'] > expected else 'repeat'} image "
                                 f"#{min(row['i'], expected)}: remove {folder} and run again")
            expected += 1
            errors += "error" in row
            yield {k: v for k, v in row.items() if k != "i"}
        if expected != count:
            raise InputError(f"{folder}: the journals hold {expected} of {count} images: remove {folder} and run "
                             "again")

    with atomic_path(out) as tmp:
        WRITERS[fmt](tmp, in_order(), topk=topk, shards=shards)
    shutil.rmtree(folder, ignore_errors=True)
    return count, errors
