"""The supernet training loop behind ``alphanet-train``: one process per GPU (or CPU) under torchrun.

`Trainer(config).run()` trains with `sandwich_step`, validates the smallest and largest subnets
after BatchNorm calibration, writes JSON-lines logs, and checkpoints every
``checkpoint_every_steps`` steps, at every epoch end, and when asked to stop (SIGTERM, SIGINT).
Rerun, it resumes exactly from its last checkpoint (``Trainer(config, resume=PATH)``: from that
checkpoint, into ``output_dir``; ``resume=False`` refuses to continue one).

Exact resume: every random draw is a function of the seed and the position in training, not of a
generator's history. The subnets of step ``s`` come from ``random.Random(f"{seed}:archs:{s}")`` (the
same on every process), dropout and drop-connect from a torch seed derived from ``(seed, s, rank)``,
each image's augmentation from ``(seed, epoch, index)``, and the data order from ``seed + epoch``
(`ShardedSampler`, which skips the samples of the epoch already trained on). Together with the
weights, the optimizer's momentum, the schedule's progress, the loss scaler, the precision ``auto``
chose and the steps of the open log window, that is the whole state: a run killed at any moment and
rerun continues exactly as an uninterrupted run from its last checkpoint would. The log is cut back to that checkpoint
(the records of the lost steps move to ``log.discarded.jsonl``), so each step is logged once.

Faults (see `run`): a lost or failed process makes every other one exit with one error naming it;
SIGTERM/SIGINT stop all processes at the next step (or validation batch), write a checkpoint and
return ``stopped``; a damaged newest checkpoint is replaced by the previous one, with a warning.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch.utils.data import DataLoader

from .. import distributed
from .._io import ExclusiveLock, atomic_path, check_writable_file, make_folder
from ..calibration import calibrate
from ..checkpoint import CheckpointError
from ..config import SEARCH_SPACE
from ..data import CalibrationBatches, CalibrationDraws, LabelledImages, TorchClassifier, batch_indices, evaluate
from ..data.images import BadImageError
from ..errors import AlphaNetError, InputError, brief
from ..preprocessing import EvalCrop, model_input
from ..supernet import Supernet
from . import peer_watch
from .checkpointing import CHECKPOINT_NAME, PREVIOUS_NAME, load_checkpoint, load_latest, previous_path, save_checkpoint
from .config import TrainConfig
from .data import (CLASS_FOLDERS, SeededDataset, ShardedSampler, TrainTransform, check_batch, eval_preprocessing,
                   training_data)
from .precision import DTYPES, PROBE_BATCH, Precision, resolve_precision, time_precisions, use_training_layout
from .schedule import WarmupCosineSchedule, scaled_lr
from .step import build_optimizer, sample_sandwich, sandwich_step

LOG_NAME = "log.jsonl"
DISCARDED_LOG_NAME = "log.discarded.jsonl"
FINAL_WEIGHTS_NAME = "supernet.safetensors"
LOCK_NAME = ".alphanet-train.lock"
log = logging.getLogger("alphanet_zoo")


class TrainingError(AlphaNetError):
    """Training cannot go on: it diverged, ran out of memory, or lost its data loader."""


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of training step ``step`` on process ``rank`` (dropout, drop-connect)."""
    digest = hashlib.sha256(f"{seed}:{step}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the keys in sorted order, each followed by its tensor's raw bytes (the supernet's identity)."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


class JsonLinesLog:
    """Appends one JSON object per line (with a timestamp); a no-op except on the main process."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    @staticmethod
    def line(event: str, **fields: Any) -> str:
        return json.dumps({"event": event, "time": round(time.time(), 3), **fields}) + "\n"

    def append(self, line: str) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)

    def write(self, event: str, **fields: Any) -> None:
        self.append(self.line(event, **fields))

    def size(self) -> int:
        return self.path.stat().st_size if self.path.is_file() else 0

    def cut(self, offset: int, discarded: Path) -> int:
        """Keep the first ``offset`` bytes (what a checkpoint saw); move the rest to ``discarded``.
        Returns the number of bytes moved (0 when the log is not longer than ``offset``)."""
        if not self.enabled or not self.path.is_file():
            return 0
        data = self.path.read_bytes()
        if len(data) <= offset:
            return 0
        tail = data[offset:]
        with open(discarded, "ab") as f:
            f.write(tail if tail.endswith(b"\n") else tail + b"\n")
        with atomic_path(self.path) as tmp:
            tmp.write_bytes(data[:offset])
        return len(tail)


class _Stopped(BaseException):
    """Raised to leave set-up (or validation) at once when a stop was requested."""


class _StopRequest:
    """Set by SIGTERM / SIGINT. While ``immediate`` (set-up: nothing to save yet) the handler raises
    `_Stopped`; during training it only records the signal and every process stops at the next step."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.immediate = True
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.requested = self.requested or signal.Signals(signum).name
        if self.immediate:
            raise _Stopped()

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            # a stopped torchrun process is on its way out (status 143): torchrun's own SIGTERM, sent when
            # the first process exits, must not kill the others while they finish
            late = sig == signal.SIGTERM and self.requested and distributed.is_distributed()
            signal.signal(sig, signal.SIG_IGN if late else handler)


def _quiet_worker(_: int) -> None:
    """Loader workers leave SIGTERM/SIGINT to the training process, which ends them when it stops
    (a scheduler signals every process of the job, and a worker killed by it would fail the step)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _output_lock(folder: Path) -> ExclusiveLock:
    """An exclusive lock on the output folder (released when the process dies, also by SIGKILL)."""
    return ExclusiveLock(folder / LOCK_NAME, f"another alphanet-train (pid {{pid}}) is using {folder}: wait for it "
                                             "to end, or choose another output_dir")


class Trainer:
    """Trains a `Supernet` with the sandwich rule as ``config`` says.

    Subclasses train another network on the same machinery (`alphanet_zoo.train.finetune.FineTuner`):
    they override `_make_model`, `_step`, `_fresh_start`, `validate` and `_save_final`.

    ``progress(total=..., desc=..., unit=...)`` makes a progress bar (tqdm-like: ``update``,
    ``set_postfix``, ``close``) for the main process; the trainer itself prints nothing.
    """

    what = "supernet"  # the network trained, in messages
    output_files: tuple[str, ...] = (FINAL_WEIGHTS_NAME,)  # written at the end, besides checkpoints and log

    def __init__(self, config: TrainConfig, *, resume: "bool | str | os.PathLike" = True,
                 progress: Callable[..., Any] | None = None) -> None:
        self.config = config.check()
        self.resume = resume is not False  # False: refuse a checkpoint already in the output folder
        self.resume_from = None if isinstance(resume, bool) else Path(resume)  # this checkpoint, not the folder's
        self.progress = progress
        self.lock: ExclusiveLock | None = None
        self.epoch, self.consumed, self.global_step = 0, 0, 0
        self.checkpoint_path: Path | None = None
        self.saved_step: int | None = None
        self.precision: Precision | None = None  # chosen once the checkpoint is known (`_set_precision`)
        self.amp_dtype, self.grad_scaler = None, None
        self.created_out_dir = False  # this run made the output folder
        self.started = False  # training began (its start is logged)

    # ---- set-up -------------------------------------------------------------------------------
    def _prepare_output(self) -> None:
        self.out_dir = Path(self.config.output_dir)
        self.checkpoint_path = self.out_dir / CHECKPOINT_NAME
        self.log = JsonLinesLog(self.out_dir / LOG_NAME, self.ctx.is_main)
        if not self.ctx.is_main:
            return
        self.created_out_dir = not self.out_dir.exists()
        make_folder(self.out_dir, "output_dir")
        for name in (CHECKPOINT_NAME, PREVIOUS_NAME, LOG_NAME, *self.output_files):
            check_writable_file(self.out_dir / name)
        existing = [p for p in (self.checkpoint_path, previous_path(self.checkpoint_path)) if p.is_file()]
        if not self.resume and existing:
            raise InputError(f"{existing[0]} exists: resume it (drop --no-resume) or choose another output_dir")
        if self.resume_from is not None:
            if not self.resume_from.is_file():
                raise InputError(f"no checkpoint to resume at {self.resume_from}")
            if existing and not any(os.path.samefile(self.resume_from, p) for p in existing):
                raise InputError(f"{existing[0]} exists: resume it (--resume without a file) or continue "
                                 f"{self.resume_from} in another output_dir")
        self.lock = _output_lock(self.out_dir)
        self.lock.acquire()
        # holding the lock, no other run writes here: every temporary file is a killed writer's
        for name in (CHECKPOINT_NAME, PREVIOUS_NAME, LOG_NAME, *self.output_files):
            for stale in self.out_dir.glob(f".{name}.*.tmp"):
                with contextlib.suppress(OSError):
                    stale.unlink()
                    log.info("removed %s, left by an interrupted write", stale)

    def _build_data(self) -> None:
        cfg, ctx = self.config, self.ctx
        self.data = training_data(cfg.data.train, cfg.data.val, cfg.data.num_classes)
        self.num_classes = self.data.num_classes
        transform = TrainTransform(cfg.data.crop_size, cfg.data.interpolation, cfg.data.auto_augment,
                                   cfg.data.crop_scale)
        self.dataset = SeededDataset(self.data.samples, transform, cfg.seed)
        self.sampler = ShardedSampler(len(self.data.samples), ctx.world_size, ctx.rank, cfg.data.batch_size, cfg.seed)
        self.global_batch = ctx.world_size * cfg.data.batch_size
        self.steps_per_epoch = self.sampler.samples_per_epoch // self.global_batch

    def _build_model(self) -> None:
        cfg, ctx = self.config, self.ctx
        torch.manual_seed(cfg.seed)
        self.model = use_training_layout(self._make_model().to(ctx.device), ctx.device)
        # every process starts from the same weights, whatever its RNG did
        distributed.broadcast_tensors(self.model.state_dict().values())
        o = cfg.optim
        self.base_lr = scaled_lr(o.lr_per_256, self.global_batch)
        self.optimizer = self._make_optimizer(self.model)
        self.schedule = WarmupCosineSchedule(self.optimizer, self.base_lr, cfg.epochs, o.warmup_epochs, o.min_lr,
                                             o.warmup_start_lr)
        self.epoch, self.consumed, self.global_step = 0, 0, 0
        self.window: list[list[float]] = []  # per-step results since the last log record
        self.window_layout = (0, 0)  # (losses, divergences) per row of the window
        self.validation_pending = False
        self.last_validation: dict = {}

    def _make_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        o = self.config.optim
        return build_optimizer(model, self.base_lr, o.momentum, o.nesterov, o.weight_decay)

    def _set_precision(self, state: dict | None) -> None:
        """Resolve ``config.precision`` (`resolve_precision`), once per run: a resumed ``auto`` run keeps
        what its checkpoint's run chose (the same arithmetic as the uninterrupted run), and a timed choice
        is rank 0's on every process."""
        requested, saved = self.config.precision, (state or {}).get("precision")
        kept = requested == "auto" and saved in DTYPES
        if kept:
            resolve_precision(saved, self.ctx.device)  # still possible here (fp16 needs CUDA)
            chosen = Precision(saved, requested, state.get("precision_reason") or "",
                               state.get("precision_timings") or {})
        else:
            local = resolve_precision(requested, self.ctx.device, lambda: time_precisions(self._probe_step))
            chosen = distributed.broadcast_or_raise(lambda: local, "choosing the training precision")
        self.precision = chosen
        self.amp_dtype, self.grad_scaler = chosen.autocast_dtype, chosen.grad_scaler(self.ctx.device)
        if self.ctx.is_main:  # a choice made for the user is said once; what was asked for, only when debugging
            log.log(logging.INFO if requested == "auto" else logging.DEBUG, "training precision: %s%s",
                    chosen.describe(), ", as when the run started" if kept else "")

    def _probe_step(self, dtype: torch.dtype | None) -> Callable[[], Any]:
        """One training step (`_step`) at autocast ``dtype`` of a copy of the model and optimizer, on a
        batch of this run's shape (at most `PROBE_BATCH` images): the run's own weights, optimizer and
        random state are left as they were."""
        cfg, device = self.config, self.ctx.device
        probe = copy.copy(self)
        probe.model = copy.deepcopy(self.model)
        probe.optimizer = self._make_optimizer(probe.model)
        probe.amp_dtype, probe.grad_scaler = dtype, None
        g = torch.Generator().manual_seed(cfg.seed)
        n, side = min(cfg.data.batch_size, PROBE_BATCH), cfg.data.crop_size
        images = model_input(torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g).to(device),
                             None)
        targets = torch.randint(0, self.num_classes, (n,), generator=g).to(device)

        def step() -> None:
            with torch.random.fork_rng(devices=[]):  # the step seeds torch: the run's draws stay as they were
                probe._step(images, targets)

        return step

    def _make_model(self) -> torch.nn.Module:
        """The network to train, on the CPU (the supernet; `init` loaded when set)."""
        supernet = Supernet(self.num_classes)
        if self.config.init:
            self._load_init(supernet, self.config.init)
        return supernet

    def _fresh_start(self) -> None:
        """Called once when no checkpoint was found, before the first step (a subclass prepares here)."""

    @staticmethod
    def _load_init(supernet: Supernet, path: str) -> None:
        """Start from a supernet checkpoint; a classifier for another number of classes is left fresh."""
        source = Supernet.from_checkpoint(path).state_dict()
        target = supernet.state_dict()
        if source["classifier.weight"].shape != target["classifier.weight"].shape:
            source = {k: v for k, v in source.items() if not k.startswith("classifier.")}
        supernet.load_state_dict(source, strict=False)

    # ---- checkpoints ----------------------------------------------------------------------------
    def _find_checkpoint(self) -> tuple[dict, Path, str | None] | None:
        """The checkpoint to resume from: the one asked for, or the main process chooses (the newest
        readable one) and the others read the same file, so every process resumes from the same state."""
        if self.resume_from is not None:
            return load_checkpoint(self.resume_from), self.resume_from, None
        choice = torch.tensor([-1], dtype=torch.int64, device=self.ctx.device)
        found = None
        if self.ctx.is_main:
            found = load_latest(self.checkpoint_path)
            if found is not None:
                choice[0] = 0 if found[1] == self.checkpoint_path else 1
        distributed.broadcast_tensors([choice])
        if found is None and choice.item() >= 0:
            path = self.checkpoint_path if choice.item() == 0 else previous_path(self.checkpoint_path)
            found = load_checkpoint(path), path, None
        return found

    def _restore(self, state: dict, path: Path) -> None:
        try:
            self.model.load_state_dict(state["model"], strict=True)
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path} does not fit this {self.what} ({self.num_classes} classes): "
                                  f"{brief(e, first_line=False)}") from None
        self.schedule.load_state_dict(state["schedule"])
        if self.grad_scaler is not None and state.get("grad_scaler"):
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        self.epoch, self.consumed, self.global_step = state["epoch"], state["consumed"], state["global_step"]
        self.window = [list(map(float, row)) for row in state.get("log_window") or []]
        self.window_layout = tuple(state.get("log_window_layout") or self._default_layout())
        self.validation_pending = bool(state.get("validation_pending"))
        self.last_validation = state.get("validation") or {}
        self.saved_step = self.global_step
        classes = state.get("classes")
        if classes is not None and state.get("labels", self.data.labels) == self.data.labels == CLASS_FOLDERS \
                and list(classes) != self.data.classes:
            raise InputError(f"the class folders of {self.config.data.train} changed since {path} was written "
                             f"({len(classes)} then, {len(self.data.classes)} now): the labels would not match")
        if state.get("world_size") != self.ctx.world_size or state.get("batch_size") != self.config.data.batch_size:
            self.log.write("resume_rescaled", note="world size or batch size changed: the data order of the "
                           "interrupted epoch continues from the same sample, the learning rate follows the "
                           "new global batch", old_world_size=state.get("world_size"),
                           old_batch_size=state.get("batch_size"))

    def _state(self, log_offset: int) -> dict:
        return {
            "model": {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "grad_scaler": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "precision": self.precision.name, "precision_reason": self.precision.reason,
            "precision_timings": dict(self.precision.timings),
            "epoch": self.epoch, "consumed": self.consumed, "global_step": self.global_step,
            "log_window": [list(row) for row in self.window], "log_window_layout": list(self.window_layout),
            "validation_pending": self.validation_pending,
            "log_offset": log_offset,
            "world_size": self.ctx.world_size, "batch_size": self.config.data.batch_size,
            "num_classes": self.num_classes, "classes": list(self.data.classes), "labels": self.data.labels,
            "num_samples": len(self.data.samples), "config": self.config.to_dict(), "validation": self.last_validation,
        }

    def _save(self, reason: str) -> None:
        """Write the checkpoint (main process) and its log record; the previous one is kept."""
        if self.ctx.is_main:
            line = self.log.line("checkpoint", reason=reason, path=str(self.checkpoint_path), epoch=self.epoch,
                                 consumed=self.consumed, global_step=self.global_step,
                                 validation_pending=self.validation_pending)
            # the checkpoint remembers the log up to and including its own record
            save_checkpoint(self.checkpoint_path, self._state(self.log.size() + len(line.encode())))
            self.log.append(line)
        self.saved_step = self.global_step
        distributed.barrier()

    # ---- running ----------------------------------------------------------------------------------
    def run(self) -> dict:
        """Train to ``config.epochs`` (or until a stop signal); returns a summary dict.

        Faults end in one `AlphaNetError`: a lost or failed process as `peer_watch.LostRankError`
        naming it (each surviving process raises it within ``collective_timeout_s`` when a process
        hangs, within seconds when one dies), divergence, memory or data-loader failures as
        `TrainingError`. A stop signal is not a fault: the summary's ``stopped`` names it.
        """
        self.ctx = distributed.setup(self.config.device, self.config.collective_timeout_s)
        peer_watch.watch_peers()
        try:
            with _StopRequest() as stop:
                try:
                    return self._run(stop)
                except _Stopped:
                    stop.immediate = False
                    peer_watch.report_failure(f"stopped by {stop.requested} before training started")
                    if hasattr(self, "log"):
                        self.log.write("stopped", signal=stop.requested, global_step=self.global_step,
                                       note="before training started: nothing new to save")
                    return self._summary(stop.requested, resumed=self.saved_step is not None)
        except BaseException as e:
            if isinstance(e, InputError):
                self._remove_refused_output()
            failure = self._failure(e)
            if failure is None:
                raise
            raise failure from None
        finally:
            if self.lock is not None:
                self.lock.release()
            peer_watch.stop_watching()
            distributed.teardown()

    def _remove_refused_output(self) -> None:
        """A run refused for its input before training began leaves no output folder it made."""
        holding = self.lock is not None and self.lock.fd is not None  # not when another run holds the folder
        if not (holding and self.created_out_dir and not self.started and self.saved_step is None):
            return
        for entry in self.out_dir.iterdir():  # all but the lock, still held: no other run is here meanwhile
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name != LOCK_NAME:
                entry.unlink(missing_ok=True)
        self.lock.release()
        self.lock = None
        with contextlib.suppress(OSError):
            self.out_dir.rmdir()  # unless a run that started since has written into it

    def _run(self, stop: _StopRequest) -> dict:
        self._prepare_output()
        self._build_data()
        self._build_model()
        found = self._find_checkpoint()
        self._set_precision(found[0] if found is not None else None)
        fallback, discarded = None, 0
        if found is not None:
            state, path, fallback = found
            # first: what follows is logged after the cut (a checkpoint of another folder counts another log)
            if self.ctx.is_main and "log_offset" in state and path.resolve().parent == self.out_dir.resolve():
                discarded = self.log.cut(int(state["log_offset"]), self.out_dir / DISCARDED_LOG_NAME)
            self._restore(state, path)
        else:
            self._fresh_start()
        self.log.write("start", resumed=found is not None, resumed_from=str(found[1]) if found else None,
                       fallback=fallback, discarded_log_bytes=discarded,
                       state_sha256=state_dict_sha256(self.model.state_dict()),
                       world_size=self.ctx.world_size, device=str(self.ctx.device), global_batch=self.global_batch,
                       base_lr=self.base_lr, steps_per_epoch=self.steps_per_epoch, epoch=self.epoch,
                       consumed=self.consumed, global_step=self.global_step, num_classes=self.num_classes,
                       labels=self.data.labels, classes=self.data.classes[:20],
                       amp=str(self.amp_dtype) if self.amp_dtype else None, precision=self.precision.name,
                       precision_reason=self.precision.reason, precision_timings=self.precision.timings,
                       config=self.config.to_dict())
        self.started = True
        peer_watch.set_progress(self.global_step)
        self.tick = time.perf_counter()
        stop.immediate = False
        stopped = self._loop(stop)
        if not stopped:
            if self.window:
                self._log_window()
            if self.ctx.is_main:
                self._save_final()
            self.log.write("done", epoch=self.epoch, global_step=self.global_step, validation=self.last_validation)
        return self._summary(stopped, resumed=found is not None)

    def _save_final(self) -> None:
        """Write the trained weights (main process): the supernet as ``supernet.safetensors``."""
        self.model.save(self.out_dir / FINAL_WEIGHTS_NAME)

    def _summary(self, stopped: str | None, resumed: bool) -> dict:
        return {"stopped": stopped, "epoch": self.epoch, "global_step": self.global_step, "resumed": resumed,
                # None when there is none (stopped before the first one): never a path that does not exist
                "checkpoint": str(self.checkpoint_path) if self.checkpoint_path and self.checkpoint_path.is_file()
                else None,
                "validation": getattr(self, "last_validation", {}),
                "world_size": self.ctx.world_size, "device": str(self.ctx.device),
                "base_lr": getattr(self, "base_lr", None), "output_dir": str(self.config.output_dir)}

    def _failure(self, error: BaseException) -> AlphaNetError | None:
        """The one clear error to end with instead of ``error`` (None: re-raise ``error`` as it is)."""
        where = f" at step {self.global_step + 1} (epoch {self.epoch + 1})"
        if isinstance(error, distributed.DistributedError) and error.__cause__ is not None:
            error = error.__cause__  # a failed collective: explained below, naming the lost process
        saved = self.saved_step
        resume = (f"; rerun the same command to resume from the last checkpoint ({self.checkpoint_path}, "
                  f"step {saved})" if saved is not None else "")
        if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
            error = TrainingError(f"out of memory{where} on {self.ctx.device}: lower data.batch_size "
                                  f"(or data.workers){resume}")
        elif isinstance(error, RuntimeError) and str(error).startswith("DataLoader worker"):
            error = TrainingError(f"a data-loading process died{where} ({brief(error, 200, first_line=False)}): "
                                  f"out of memory? lower data.workers{resume}")
        if isinstance(error, (AlphaNetError, OSError, KeyboardInterrupt)):
            peer_watch.report_failure(brief(error, None, first_line=False))
            return error if isinstance(error, TrainingError) else None
        if not distributed.is_distributed():
            return None
        explained = peer_watch.explain_failure(error, where)
        if explained is not None:
            explained.args = (str(explained) + resume,)
        return explained

    # ---- training -----------------------------------------------------------------------------
    def _loop(self, stop: _StopRequest) -> str | None:
        cfg = self.config
        try:
            if self._any_stop(stop):
                raise _Stopped()
            if self.validation_pending:  # stopped during the validation of the epoch just ended
                self._validate_and_save(stop)
            while self.epoch < cfg.epochs:
                if self._train_epoch(stop):
                    raise _Stopped()
                self.epoch, self.consumed = self.epoch + 1, 0
                every = cfg.validation.every_epochs
                if self.data.val_samples is not None and (self.epoch == cfg.epochs or
                                                          (every and self.epoch % every == 0)):
                    self.validation_pending = True
                    self._save("epoch")
                    self._validate_and_save(stop)
                else:
                    self._save("epoch")
        except _Stopped:
            if self.saved_step != self.global_step:  # (the same answer on every process: _save has a barrier)
                self._save(f"stop ({stop.requested or 'signal'})")
            self.log.write("stopped", signal=stop.requested, epoch=self.epoch, global_step=self.global_step,
                           validation_pending=self.validation_pending)
            return stop.requested or "signal"
        return None

    def _validate_and_save(self, stop: _StopRequest) -> None:
        self.last_validation = self.validate(stop)
        self.validation_pending = False
        self.log.write("validation", epoch=self.epoch, global_step=self.global_step, **self.last_validation)
        self._save("validation")

    def _loader(self, dataset, **kwargs) -> DataLoader:
        workers = self.config.data.workers
        return DataLoader(dataset, num_workers=workers, worker_init_fn=_quiet_worker if workers else None,
                          pin_memory=self.ctx.device.type == "cuda",
                          generator=torch.Generator().manual_seed(0), **kwargs)  # leaves the global RNG alone

    def _train_epoch(self, stop: _StopRequest) -> bool:
        """Train the rest of the current epoch; True if a stop was requested (all processes agree)."""
        cfg, ctx = self.config, self.ctx
        self.sampler.set_epoch(self.epoch, self.consumed)
        self.consumed = self.sampler.consumed
        self.dataset.set_epoch(self.epoch)
        loader = self._loader(self.dataset, batch_size=cfg.data.batch_size, sampler=self.sampler, drop_last=True)
        bar = None
        if self.progress is not None and ctx.is_main:
            bar = self.progress(total=len(loader), initial=0, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                                unit="step")
        every = cfg.checkpoint_every_steps
        try:
            for images, targets, indices, errors in loader:
                check_batch(self.data.samples, indices.tolist(), errors)
                images = model_input(images.to(ctx.device, non_blocking=True), None)
                targets = targets.to(ctx.device, non_blocking=True)
                # the rate at the end of this step's share of the epoch (the first step is not at lr 0)
                lr = self.schedule.set_progress(self.epoch + (self.consumed + self.global_batch)
                                                / self.sampler.samples_per_epoch)
                result = self._step(images, targets)
                self.global_step += 1
                self.consumed += self.global_batch
                peer_watch.set_progress(self.global_step)
                row, stopping = self._reduce_step(result, lr, stop)
                self.window.append(row)
                if self.global_step % cfg.log_every == 0:
                    record = self._log_window()
                    if bar is not None:
                        bar.set_postfix(loss=f"{record['losses'][0]:.3f}", lr=f"{lr:.3g}")
                if bar is not None:
                    bar.update(1)
                last_of_epoch = self.consumed >= self.sampler.samples_per_epoch
                if every and self.global_step % every == 0 and not last_of_epoch and not stopping:
                    self._save("step")
                if stopping:
                    return True
        finally:
            if bar is not None:
                bar.close()
        return False

    def _step(self, images: torch.Tensor, targets: torch.Tensor) -> dict:
        """One training step (`sandwich_step`'s result): the subnets of the step and the dropout draws
        are functions of the seed and the step, so a resumed run repeats them."""
        cfg, s = self.config, self.config.sandwich
        archs = sample_sandwich(random.Random(f"{cfg.seed}:archs:{self.global_step}"), s.num_archs, SEARCH_SPACE)
        torch.manual_seed(step_seed(cfg.seed, self.global_step, self.ctx.rank))
        return sandwich_step(self.model, images, targets, archs, self.optimizer,
                             label_smoothing=s.label_smoothing, alpha_min=s.alpha_min,
                             alpha_max=s.alpha_max, iw_clip=s.iw_clip,
                             grad_clip_value=cfg.optim.grad_clip_value, dropout=s.dropout,
                             drop_connect=s.drop_connect, resize=cfg.data.multi_resolution,
                             amp_dtype=self.amp_dtype, grad_scaler=self.grad_scaler)

    def _default_layout(self) -> tuple[int, int]:
        """(losses, divergences) of a step's result: one loss per subnet, a divergence per student."""
        return self.config.sandwich.num_archs, self.config.sandwich.num_archs - 1

    def _any_stop(self, stop: _StopRequest) -> bool:
        """Whether any process was asked to stop (one tiny all-reduce, so all stop at the same point)."""
        flag = torch.tensor([1.0 if stop.requested else 0.0], device=self.ctx.device)
        return distributed.all_reduce(flag, "max").item() > 0

    def _reduce_step(self, result: dict, lr: float, stop: _StopRequest) -> tuple[list[float], bool]:
        """One all-reduce per step: the step's results averaged over the processes, and whether any
        process was asked to stop. A non-finite loss or update (not skipped by the loss scaler) ends training."""
        values = [*result["losses"], *result["divergences"], result["grad_norm"], result["grad_norm_clipped"],
                  float(result["skipped"])]
        flat = torch.tensor([*values, 1.0 if stop.requested else 0.0], dtype=torch.float64, device=self.ctx.device)
        distributed.all_reduce(flat)
        row = (flat[:-1] / self.ctx.world_size).tolist()
        self.window_layout = (len(result["losses"]), len(result["divergences"]))
        # the losses and the update applied (an infinite gradient clipped by value is a finite update)
        applied = [*row[:len(result["losses"])], row[-2]]
        if not all(math.isfinite(v) for v in applied) and row[-1] == 0:
            then = (f"the last checkpoint, {self.checkpoint_path} (step {self.saved_step}), is intact: lower "
                    f"optim.lr_per_256 (now {self.config.optim.lr_per_256:g}) and resume" if self.saved_step is not None
                    else f"no checkpoint was written: lower optim.lr_per_256 (now {self.config.optim.lr_per_256:g})")
            raise TrainingError(f"training diverged at step {self.global_step} (epoch {self.epoch + 1}): losses "
                                f"{[round(v, 4) for v in row[:len(result['losses'])]]}, gradient norm {row[-3]} "
                                f"({row[-2]} after clipping); {then}")
        row.append(lr)
        return row, flat[-1].item() > 0

    def _log_window(self) -> dict:
        """Log the mean of the steps since the last record (each step's results already averaged over processes)."""
        n_loss, n_div = self.window_layout if self.window else self._default_layout()
        values = torch.tensor([row[:-1] for row in self.window], dtype=torch.float64).mean(0).tolist()
        elapsed = time.perf_counter() - self.tick
        record = {"epoch": self.epoch, "global_step": self.global_step, "steps": len(self.window),
                  "epoch_progress": round(self.consumed / self.sampler.samples_per_epoch, 6),
                  "lr": self.window[-1][-1], "losses": values[:n_loss], "divergences": values[n_loss:n_loss + n_div],
                  "grad_norm": values[-3], "grad_norm_clipped": values[-2],
                  "skipped_steps": int(round(values[-1] * len(self.window))),
                  "images_per_s": round(self.global_batch * len(self.window) / max(elapsed, 1e-9), 2)}
        self.log.write("train", **record)
        self.window, self.tick = [], time.perf_counter()
        return record

    # ---- validation ---------------------------------------------------------------------------
    def validate(self, stop: _StopRequest | None = None) -> dict:
        """Top-1 / top-5 of the smallest and largest subnets, after BN calibration on training images.

        The pipeline of ``alphanet-extract`` and ``alphanet-eval``: `CalibrationBatches` (seeded
        training-style crops; the same draws as ``--calib-data TRAIN --calib-batches N
        --calib-batch-size B --seed S``), `calibrate`, `EvalCrop` and `evaluate`. Every process
        calibrates on its share of the calibration batches; the running statistics are then
        averaged over processes (weighted by batches), which is what one process seeing all the
        batches computes (momentum None: a cumulative average of per-batch statistics). Accuracy
        counts are summed over the processes' shares of the validation images. With ``stop``, every
        batch checks (all processes together) whether a stop was requested, and `_Stopped` leaves.
        """
        cfg, ctx, v = self.config, self.ctx, self.config.validation
        calibration = CalibrationBatches(self.data.samples, v.calib_batches, v.calib_batch_size, cfg.seed,
                                         cfg.data.workers, cfg.data.crop_size)
        draws = calibration.dataset()
        calib_batches = batch_indices(len(draws), v.calib_batch_size)
        val = self.data.val_samples
        chosen = list(range(len(val)))
        if v.max_images is not None and v.max_images < len(chosen):  # a seeded subset of all classes
            g = torch.Generator().manual_seed(cfg.seed + 1)
            chosen = sorted(torch.randperm(len(chosen), generator=g)[:v.max_images].tolist())
        val_batches = [[chosen[i] for i in b] for b in batch_indices(len(chosen), v.batch_size)]
        crop = EvalCrop(eval_preprocessing(cfg.data.crop_size))
        results = {}
        for name, arch in {"smallest": SEARCH_SPACE.smallest(), "largest": SEARCH_SPACE.largest()}.items():
            resolution = arch.resolution if cfg.data.multi_resolution else None
            model = self.model.extract(arch).to(ctx.device)
            mine = calib_batches[ctx.rank::ctx.world_size]
            crops = self._checked(self._calibration_crops(draws, mine), -(-len(calib_batches) // ctx.world_size),
                                  stop)
            if mine:
                calibrate(model, crops, resolution)
            else:
                for _ in crops:  # only the stop checks, in step with the other processes
                    pass
            self._average_bn_statistics(model, len(mine))
            mine = val_batches[ctx.rank::ctx.world_size]
            loader = self._loader(LabelledImages(val, crop, (3, cfg.data.crop_size, cfg.data.crop_size)),
                                  batch_sampler=mine)
            results[name] = self._score(model, loader, len(val_batches), stop, resolution, val)
        return results

    def _score(self, model, loader, num_batches: int, stop, resolution, samples) -> dict:
        """Top-1/top-5 of ``model`` on this process's share of the validation batches, summed over
        every process: ``{"top1", "top5", "images"}``."""
        ctx = self.ctx
        result = evaluate(TorchClassifier(model, ctx.device),
                          self._checked(loader, -(-num_batches // ctx.world_size), stop),
                          resolution=resolution, device=ctx.device, paths=lambda i: samples[i].path)
        counts = torch.tensor([result.correct1, result.correct5, result.images], dtype=torch.float64,
                              device=ctx.device)
        distributed.all_reduce(counts)
        n = max(counts[2].item(), 1.0)
        return {"top1": 100.0 * counts[0].item() / n, "top5": 100.0 * counts[1].item() / n,
                "images": int(counts[2].item())}

    def _calibration_crops(self, draws: CalibrationDraws, batches: list[list[int]]) -> Iterator[torch.Tensor]:
        if not batches:
            return
        for images, errors in self._loader(draws, batch_sampler=batches):
            for error in errors:
                if error:
                    path, reason = error.split("\0", 1)
                    raise BadImageError(path, reason)
            yield images

    def _checked(self, items: Iterable, rounds: int, stop: _StopRequest | None) -> Iterator:
        """``items``, checking before each one, and then up to ``rounds`` checks in all (every process
        makes the same number of checks), whether any process was asked to stop."""
        done = 0
        for item in items:
            if stop is not None and self._any_stop(stop):
                raise _Stopped()
            done += 1
            yield item
        for _ in range(rounds - done):
            if stop is not None and self._any_stop(stop):
                raise _Stopped()

    @staticmethod
    def _average_bn_statistics(model: torch.nn.Module, weight: int) -> None:
        if not distributed.is_distributed():
            return
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        stats = [t for m in norms for t in (m.running_mean, m.running_var)]
        flat = torch.cat([t.reshape(-1) * weight for t in stats] + [stats[0].new_tensor([float(weight)])])
        distributed.all_reduce(flat)
        total = flat[-1].item()
        for t, chunk in zip(stats, (flat[:-1] / total).split([t.numel() for t in stats])):
            t.copy_(chunk.view_as(t))


__all__ = ["Trainer", "TrainingError", "step_seed", "state_dict_sha256"]
