"""The search history (``--history``, JSON lines): one row per evaluated candidate, read back to resume.

Row::

    {"mflops": 301.2, "top1": 71.25, "arch": {...}, "generation": 3, "rank": 1,
     "latency_ms": 7.91,          # predicted, in a latency-budget search
     "seconds": 12.3,             # the candidate's calibration and scoring
     "world_size": 2, "search": "5f0c3a9e1b2d"}

Rows come in the order the candidates were drawn, which is the same for any number of processes;
``rank`` and ``seconds`` are the only fields that depend on how the work was split. ``search``
fingerprints the settings that decide the draws and the scores (seed, budget, population, ratios,
data and calibration flags, latency table): ``--resume`` refuses a history of another search.
The file is rewritten (atomically) after every generation, so a killed run leaves whole generations.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from .._io import write_text
from ..config import ArchConfig
from ..errors import InputError
from ..flops import count_flops
from .evolution import Candidate


def fingerprint(settings: dict[str, Any]) -> str:
    """A short hash of the settings a history belongs to."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def history_rows(candidates: Iterable[Candidate], search_id: str) -> list[dict[str, Any]]:
    return [{**c.to_dict(), "search": search_id} for c in candidates]


def front_history_rows(search, search_id: str) -> list[dict[str, Any]]:
    """The rows of a `alphanet_zoo.search.front.FrontSearch` so far: evaluated candidates only, in the
    order evaluated, with ``predicted_top1`` where the predictor chose them (the real ``top1`` stays the
    only accuracy read back)."""
    rows = history_rows(search.evaluated.values(), search_id)
    for row, arch in zip(rows, search.evaluated):
        if arch in search.predicted_before:
            row["predicted_top1"] = round(search.predicted_before[arch], 4)
    return rows


def write_history(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def read_history(path: str | os.PathLike, search_id: str | None = None,
                 latency=None) -> dict[ArchConfig, Candidate]:
    """The candidates of a history file, by architecture, in file order; ``search_id`` must match every row.

    MFLOPs and predicted latency are recomputed (the file rounds them); top-1 is taken as written.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--resume: no history file at {path}")
    out: dict[ArchConfig, Candidate] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                row = json.loads(line)
                arch = ArchConfig.from_dict(row["arch"]).validate()
                top1, generation = float(row["top1"]), int(row["generation"])
                rank, world_size = int(row.get("rank", 0)), int(row.get("world_size", 1))
                seconds = None if row.get("seconds") is None else float(row["seconds"])
            except (ValueError, KeyError, TypeError) as e:
                raise InputError(f"{where}: not a search history row ({e})") from None
            if search_id is not None and row.get("search") != search_id:
                raise InputError(f"{where}: written by another search (settings {row.get('search')}, this search "
                                 f"has {search_id}): the seed, budget, population, ratios, data, calibration or "
                                 "latency table differ")
            if arch in out:
                raise InputError(f"{where}: architecture evaluated twice")
            out[arch] = Candidate(arch, count_flops(arch), top1, None if latency is None else float(latency(arch)),
                                  generation, rank, seconds, world_size)
    return out
