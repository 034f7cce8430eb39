"""Latency tables measured on this machine, and the predictor a latency-budget search uses.

    runtime = make_runtime("onnxruntime", threads=2, batch_size=1)
    table = load_or_build(runtime, progress=...)            # cached under ~/.cache/alphanet_zoo/latency
    predict = LatencyPredictor(table)
    predict(arch)                                          # ms: the table's sum plus the fitted overhead

A table holds the median time of every layer a subnet can have (`latency_layers.space_layers`:
stem, MB blocks in their context, head), each run alone on the chosen runtime. A whole network is
not exactly the sum of its layers: each layer alone pays a runtime call, and consecutive layers
share caches. So the prediction is ``scale * sum + offset``, fitted by least squares on random
subnets measured end to end (spread over the space's FLOPs range), and validated on others:
the table records the median and worst relative error of the prediction on those.

Tables are cached on disk, one file per runtime and version, machine, threads and batch size,
in ``$ALPHANET_ZOO_CACHE/latency`` (default ``$XDG_CACHE_HOME/alphanet_zoo`` or
``~/.cache/alphanet_zoo``), and can be kept and reused as a file (``--latency-table FILE``).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .._io import make_folder, read_json, write_json
from ..config import SEARCH_SPACE, ArchConfig, SearchSpace
from ..errors import InputError
from ..export import timing
from ..flops import count_flops
from .latency_layers import Layer, arch_layers, space_layers
from .latency_runtimes import Runtime, slug
from .sampling import flops_range, sample_in_range

log = logging.getLogger("alphanet_zoo")
TABLE_FORMAT = "alphanet_zoo.latency-table/1"
CACHE_ENV = "ALPHANET_ZOO_CACHE"
FIT_SUBNETS = 8  # random subnets measured end to end to fit the overhead
VALIDATION_SUBNETS = 8  # others, to report the prediction's error
BLOCK = timing.TURN_CALLS  # calls per turn when whole subnets are timed in turns
SUBNET_ROUNDS = 8  # turns per subnet timed end to end
#: The rest of `timing.time_in_turns`'s arguments for whole subnets (with its pause before each turn).
SUBNET_TURNS = {"calls": BLOCK, "warmup": 2, "first_warmup": 7}
CHUNK = 64  # layers timed in turns
ROUNDS = 3  # turns per layer
CALLS = 5  # calls per turn


def cache_dir() -> Path:
    """``$ALPHANET_ZOO_CACHE``, else ``$XDG_CACHE_HOME/alphanet_zoo``, else ``~/.cache/alphanet_zoo``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "alphanet_zoo"


def table_path(key: dict[str, Any]) -> Path:
    """The cache file of a table measured with ``key`` (`Runtime.key`)."""
    name = (f"{key['runtime']}-{slug(key['version'])}-t{key['threads']}-b{key['batch_size']}-"
            f"{slug(key['machine'])[:40]}-{key['machine_id']}.json")
    return cache_dir() / "latency" / name


@dataclass
class LatencyTable:
    """Median milliseconds per layer (``entries``, by `Layer.key`), the fitted overhead, the validation."""

    key: dict[str, Any]
    entries: dict[str, float] = field(default_factory=dict)
    scale: float = 1.0
    offset_ms: float = 0.0
    validation: dict[str, Any] | None = None
    build_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"format": TABLE_FORMAT, "key": self.key, "scale": self.scale, "offset_ms": self.offset_ms,
                "validation": self.validation, "build_seconds": round(self.build_seconds, 1),
                "entries": dict(sorted(self.entries.items()))}

    @classmethod
    def from_dict(cls, data: Any, what: str = "latency table") -> "LatencyTable":
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise InputError(f"{what}: not a latency table (expected format {TABLE_FORMAT!r})")
        try:
            entries = {str(k): float(v) for k, v in data["entries"].items()}
            key = dict(data["key"])
            for name in ("runtime", "version", "machine", "machine_id", "threads", "batch_size"):
                key[name]  # noqa: B018 - presence check
            table = cls(key, entries, float(data.get("scale", 1.0)), float(data.get("offset_ms", 0.0)),
                        data.get("validation"), float(data.get("build_seconds", 0.0)))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"{what}: malformed latency table ({e})") from None
        if any(not v > 0 or v != v for v in entries.values()):
            raise InputError(f"{what}: latencies must be positive numbers")
        return table

    def save(self, path: str | os.PathLike) -> None:
        make_folder(Path(path).parent, "latency table folder")
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyTable":
        return cls.from_dict(read_json(path, f"latency table {path}"), f"latency table {path}")

    def missing(self, layers: Iterable[Layer]) -> list[Layer]:
        return [layer for layer in layers if layer.key not in self.entries]

    def layer_sum(self, arch: ArchConfig, num_classes: int = 1000, space: SearchSpace = SEARCH_SPACE) -> float:
        """The sum of ``arch``'s layers in the table (ms); a layer the table lacks is an `InputError`."""
        try:
            return sum(self.entries[layer.key] for layer in arch_layers(arch, num_classes, space))
        except KeyError as e:
            raise InputError(f"the latency table has no entry for layer {e.args[0]} (measured for other "
                             "resolutions or classes?)") from None

    def describe(self) -> str:
        k = self.key
        threads = f"{k['threads']} thread" + ("s" if k["threads"] != 1 else "")
        return f"{k['runtime']} {k['version']}, {threads}, batch {k['batch_size']} on {k['machine']}"


class LatencyPredictor:
    """``predictor(arch) -> ms``: ``scale * (sum of the table's layers) + offset`` (cached per architecture)."""

    def __init__(self, table: LatencyTable, num_classes: int = 1000, space: SearchSpace = SEARCH_SPACE) -> None:
        self.table, self.num_classes, self.space = table, num_classes, space
        self._predict = functools.lru_cache(maxsize=65536)(self._compute)

    def _compute(self, arch: ArchConfig) -> float:
        return self.table.scale * self.table.layer_sum(arch, self.num_classes, self.space) + self.table.offset_ms

    def __call__(self, arch: ArchConfig) -> float:
        return self._predict(arch)


def needed_layers(space: SearchSpace = SEARCH_SPACE, num_classes: int = 1000,
                  max_mflops: float | None = None) -> list[Layer]:
    """The layers of the resolutions where a subnet fits ``max_mflops`` (all without a cap)."""
    resolutions = [r for r in space.resolutions
                   if max_mflops is None or count_flops(_at(space.smallest(), r), num_classes) <= max_mflops]
    return space_layers(space, num_classes, resolutions)


def _at(arch: ArchConfig, resolution: int) -> ArchConfig:
    return dataclasses.replace(arch, resolution=resolution)


def robust_ms(rounds: Sequence[Sequence[float]]) -> float:
    """The fastest round's median: a round of a few calls, several rounds apart in time. On a shared
    machine load comes and goes; a quiet round's median is the layer's own cost."""
    return min(statistics.median(r) for r in rounds if r)


def measure_layers(runtime: Runtime, table: LatencyTable, layers: Sequence[Layer],
                   on_done: Callable[[int], Any] | None = None) -> None:
    """Time each of ``layers`` alone on ``runtime`` into ``table.entries`` (`robust_ms` of `ROUNDS`
    rounds of `CALLS` calls; the layers of a chunk take turns, so their rounds are apart in time).
    ``on_done(n)`` after each chunk of ``n`` layers.

    No pause before the turns (`timing.TURN_PAUSE_S`), as ever for layers: a table has thousands of
    turns, and a pause each would add minutes to building one."""
    with runtime.active():
        for first in range(0, len(layers), CHUNK):
            chunk = layers[first:first + CHUNK]
            runs = [runtime.layer(layer) for layer in chunk]
            turns = timing.time_in_turns(runs, rounds=ROUNDS, calls=CALLS, warmup=2, pause_s=0)
            for layer, t in zip(chunk, turns):
                table.entries[layer.key] = robust_ms(_ms(t))
            del runs
            if on_done is not None:
                on_done(len(chunk))


def _ms(turns: Sequence[Sequence[float]]) -> list[list[float]]:
    return [[v * 1e3 for v in turn] for turn in turns]


def summary(turns: Sequence[Sequence[float]]) -> dict[str, float]:
    """A subnet's timed turns (seconds, `timing.time_in_turns`) in milliseconds: ``ms`` (`robust_ms` of its
    turns), ``median_ms`` (of all its calls), their quartiles ``p25_ms``, ``p75_ms``, and ``turns_ms``
    (each turn's median, in order)."""
    ms = _ms(turns)
    calls = timing.flat(ms)
    return {"ms": robust_ms(ms), "median_ms": statistics.median(calls), **_quartiles(calls),
            "turns_ms": [statistics.median(t) for t in ms if t]}


def _quartiles(values: Sequence[float]) -> dict[str, float]:
    """``p25_ms`` and ``p75_ms`` of the calls (their spread)."""
    q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return {"p25_ms": q1, "p75_ms": q3}


def measure_models(runtime: Runtime, archs: Sequence[ArchConfig], num_classes: int = 1000,
                   rounds: int = SUBNET_ROUNDS,
                   progress: Callable[[Iterable], Iterable] | None = None) -> list[dict[str, float]]:
    """Whole subnets on ``runtime``, run as a user runs the exported model, timed in turns of `BLOCK` calls
    (`timing.time_in_turns`: load that comes and goes falls on all alike); each one's `summary`."""
    runs = [runtime.model(a, num_classes) for a in (progress(archs) if progress else archs)]
    with runtime.active():
        return [summary(t) for t in timing.time_in_turns(runs, rounds=rounds, **SUBNET_TURNS)]


def spread_subnets(count: int, seed: int, space: SearchSpace = SEARCH_SPACE,
                   max_mflops: float | None = None) -> list[ArchConfig]:
    """``count`` random subnets at FLOPs spread evenly over the space's range (up to ``max_mflops``)."""
    rng = random.Random(seed)
    low, high = flops_range(space)
    high = min(high, max_mflops) if max_mflops is not None else high
    targets = [low + (high - low) * (i + 0.5) / count for i in range(count)]
    tolerance = max(5.0, (high - low) / count / 2)
    return [sample_in_range(max(low, t - tolerance), min(high, t + tolerance), rng, space) for t in targets]


def fit_overhead(sums: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """(scale, offset) of ``measured ~ scale * sum + offset``: Theil-Sen (the median of the pairwise
    slopes, then the median offset), so one subnet timed while the machine was busy does not pull the
    line; (1, median gap) when there are too few points or the slope is implausible."""
    pairs = [(b_m - a_m) / (b_s - a_s) for i, (a_s, a_m) in enumerate(zip(sums, measured))
             for b_s, b_m in list(zip(sums, measured))[i + 1:] if abs(b_s - a_s) > 1e-9]
    scale = statistics.median(pairs) if len(sums) >= 3 and pairs else 1.0
    if not 0.2 <= scale <= 5.0:
        scale = 1.0
    return scale, statistics.median(m - scale * s for s, m in zip(sums, measured))


def relative_errors(predicted: Sequence[float], measured: Sequence[float]) -> list[float]:
    return [abs(p - m) / m for p, m in zip(predicted, measured)]


def fit_and_validate(runtime: Runtime, table: LatencyTable, num_classes: int = 1000,
                     space: SearchSpace = SEARCH_SPACE, max_mflops: float | None = None,
                     fit_subnets: int = FIT_SUBNETS, validation_subnets: int = VALIDATION_SUBNETS,
                     progress: Callable[[Iterable], Iterable] | None = None) -> None:
    """Measure random subnets end to end; fit the overhead on some, report the error on the others."""
    archs = spread_subnets(fit_subnets + validation_subnets, seed=12345, space=space, max_mflops=max_mflops)
    fit, val = archs[0::2][:fit_subnets], archs[1::2][:validation_subnets]
    if len(fit) < fit_subnets:  # more fit than validation subnets asked for
        fit = [a for a in archs if a not in val][:fit_subnets]
    measured = {a: m["ms"] for a, m in zip(fit + val, measure_models(runtime, fit + val, num_classes,
                                                                     progress=progress))}
    sums = {a: table.layer_sum(a, num_classes, space) for a in archs}
    table.scale, table.offset_ms = fit_overhead([sums[a] for a in fit], [measured[a] for a in fit])
    predicted = [table.scale * sums[a] + table.offset_ms for a in val]
    errors = relative_errors(predicted, [measured[a] for a in val])
    plain = relative_errors([sums[a] for a in val], [measured[a] for a in val])
    table.validation = {
        "subnets": len(val), "median_rel_error": statistics.median(errors), "worst_rel_error": max(errors),
        "table_sum_median_rel_error": statistics.median(plain), "table_sum_worst_rel_error": max(plain),
        "points": [{"mflops": round(count_flops(a, num_classes), 2), "measured_ms": round(measured[a], 4),
                    "predicted_ms": round(p, 4), "fit": False, "arch": a.to_dict()} for a, p in zip(val, predicted)]
        + [{"mflops": round(count_flops(a, num_classes), 2), "measured_ms": round(measured[a], 4),
            "predicted_ms": round(table.scale * sums[a] + table.offset_ms, 4), "fit": True, "arch": a.to_dict()}
           for a in fit],
    }


def load_or_build(runtime: Runtime, path: str | os.PathLike | None = None, *, num_classes: int = 1000,
                  space: SearchSpace = SEARCH_SPACE, max_mflops: float | None = None,
                  progress: Callable[..., Any] | None = None, validate: bool = True,
                  fit_subnets: int = FIT_SUBNETS,
                  validation_subnets: int = VALIDATION_SUBNETS) -> tuple[LatencyTable, Path, bool]:
    """The table for ``runtime`` at ``path`` (default: the cache file), with every layer the search
    needs measured: loaded, completed, or built (layers, then the end-to-end fit). Returns
    (table, path, whether anything was measured now)."""
    key = runtime.key()
    path = Path(path) if path is not None else table_path(key)
    table = LatencyTable(key)
    if path.is_file():
        table = LatencyTable.load(path)
        differs = [k for k in ("runtime", "threads", "batch_size") if table.key.get(k) != key[k]]
        if differs:
            raise InputError(f"latency table {path} was measured with " + ", ".join(
                f"{k} {table.key.get(k)}" for k in differs) + "; this search asks for "
                + ", ".join(f"{k} {key[k]}" for k in differs))
        for k in ("version", "machine"):
            if table.key.get(k) != key[k]:
                log.warning("latency table %s was measured with %s %s, this is %s", path, k, table.key.get(k), key[k])
    missing = table.missing(needed_layers(space, num_classes, max_mflops))
    measured_now = bool(missing) or (validate and table.validation is None)
    if missing:
        if table.key.get("machine_id") != key["machine_id"]:
            raise InputError(f"latency table {path} lacks {len(missing)} layers this search needs and was measured "
                             "on another machine; build one here (leave out --latency-table)")
        start = time.perf_counter()
        bar = progress(total=len(missing), desc="latency table", unit="layer") if progress else None
        try:
            measure_layers(runtime, table, missing, bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        table.build_seconds += time.perf_counter() - start
    if validate and (table.validation is None or missing):
        start = time.perf_counter()
        bar = (lambda it: progress(it, total=fit_subnets + validation_subnets, desc="latency fit", unit="subnet")) \
            if progress else None
        fit_and_validate(runtime, table, num_classes, space, max_mflops, fit_subnets, validation_subnets, bar)
        table.build_seconds += time.perf_counter() - start
    if measured_now:
        table.save(path)
    return table, path, measured_now
