"""The supernet training loop behind ``alphanet-train``: one process per GPU (or CPU) under torchrun.

`Trainer(config).run()` trains with `sandwich_step`, validates the smallest and largest subnets
after BatchNorm calibration, writes JSON-lines logs and a checkpoint every epoch and when asked to
stop (SIGTERM, SIGINT), and resumes exactly from its last checkpoint.

Exact resume: every random draw is a function of the seed and the position in training, not of a
generator's history. The subnets of step ``s`` come from ``random.Random(f"{seed}:archs:{s}")`` (the
same on every process), dropout and drop-connect from a torch seed derived from ``(seed, s, rank)``,
each image's augmentation from ``(seed, epoch, index)``, and the data order from ``seed + epoch``
(`ShardedSampler`, which skips the samples of the epoch already trained on). Together with the
weights, the optimizer's momentum, the schedule's progress and the loss scaler, that is the whole
state: a run stopped and resumed matches an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Subset

from ..calibration import calibrate_bn
from ..checkpoint import CheckpointError
from ..config import SEARCH_SPACE
from ..data.folders import is_imagenet_folder
from ..errors import InputError
from ..preprocessing import EvalCrop, normalize, resize_to_resolution
from ..supernet import Supernet
from .. import distributed
from .checkpointing import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import MappedDataset, SeededDataset, ShardedSampler, TrainTransform, eval_preprocessing, image_folder
from .schedule import WarmupCosineSchedule, scaled_lr
from .step import build_optimizer, sample_sandwich, sandwich_step

LOG_NAME = "log.jsonl"
FINAL_WEIGHTS_NAME = "supernet.safetensors"


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of training step ``step`` on process ``rank`` (dropout, drop-connect)."""
    digest = hashlib.sha256(f"{seed}:{step}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class JsonLinesLog:
    """Appends one JSON object per line (with a timestamp); a no-op except on the main process."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def write(self, event: str, **fields: Any) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"event": event, "time": round(time.time(), 3), **fields}) + "\n")


class _StopRequest:
    """Set by SIGTERM / SIGINT; the loop stops at the next step boundary, all processes together."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Trains a `Supernet` with the sandwich rule as ``config`` says.

    ``progress(total=..., desc=..., unit=...)`` makes a progress bar (tqdm-like: ``update``,
    ``set_postfix``, ``close``) for the main process; the trainer itself prints nothing.
    """

    def __init__(self, config: TrainConfig, *, resume: bool = True,
                 progress: Callable[..., Any] | None = None) -> None:
        self.config = config.check()
        self.resume = resume
        self.progress = progress

    # ---- set-up -------------------------------------------------------------------------------
    def _build(self) -> None:
        self._prepare_output()
        self._build_data()
        self._build_model()

    def _prepare_output(self) -> None:
        self.out_dir = Path(self.config.output_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.out_dir / CHECKPOINT_NAME
        if self.checkpoint_path.is_file() and not self.resume:
            raise InputError(f"{self.checkpoint_path} exists: resume it (drop --no-resume) or choose "
                             f"another output_dir")
        self.log = JsonLinesLog(self.out_dir / LOG_NAME, self.ctx.is_main)

    def _build_data(self) -> None:
        cfg, ctx = self.config, self.ctx
        # a 1000-class supernet on synset folders gets ImageNet's canonical labels (also for a subset)
        imagenet = cfg.data.num_classes == 1000 and is_imagenet_folder(cfg.data.train)
        self.train_set = image_folder(cfg.data.train, imagenet)
        self.num_classes = cfg.data.num_classes or len(self.train_set.classes)
        if max(self.train_set.targets, default=0) >= self.num_classes:
            raise InputError(f"{cfg.data.train} has {len(self.train_set.classes)} class folders but "
                             f"data.num_classes is {self.num_classes}")
        self.val_set = None
        if cfg.data.val:
            self.val_set = image_folder(cfg.data.val, imagenet)
            if not imagenet and self.val_set.class_to_idx != self.train_set.class_to_idx:
                raise InputError(f"the class folders of {cfg.data.val} differ from those of {cfg.data.train}")
        transform = TrainTransform(cfg.data.crop_size, cfg.data.interpolation, cfg.data.auto_augment,
                                   cfg.data.crop_scale)
        self.dataset = SeededDataset(self.train_set, transform, cfg.seed)
        self.sampler = ShardedSampler(len(self.train_set), ctx.world_size, ctx.rank, cfg.data.batch_size,
                                      cfg.seed)
        self.global_batch = ctx.world_size * cfg.data.batch_size
        self.steps_per_epoch = self.sampler.samples_per_epoch // self.global_batch

    def _build_model(self) -> None:
        cfg, ctx = self.config, self.ctx
        torch.manual_seed(cfg.seed)
        self.supernet = Supernet(self.num_classes)
        if cfg.init:
            self._load_init(cfg.init)
        self.supernet.to(ctx.device)
        # every process starts from the same weights, whatever its RNG did
        distributed.broadcast_tensors(self.supernet.state_dict().values())
        o = cfg.optim
        self.base_lr = scaled_lr(o.lr_per_256, self.global_batch)
        self.optimizer = build_optimizer(self.supernet, self.base_lr, o.momentum, o.nesterov, o.weight_decay)
        self.schedule = WarmupCosineSchedule(self.optimizer, self.base_lr, cfg.epochs, o.warmup_epochs, o.min_lr,
                                             o.warmup_start_lr)
        self.amp_dtype, self.grad_scaler = None, None
        if cfg.amp and ctx.device.type == "cuda":
            bf16 = cfg.amp_dtype == "bfloat16" and torch.cuda.is_bf16_supported()
            self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
            if not bf16:
                self.grad_scaler = torch.amp.GradScaler("cuda")
        self.epoch, self.consumed, self.global_step = 0, 0, 0
        self.last_validation: dict = {}

    def _load_init(self, path: str) -> None:
        """Start from a supernet checkpoint; a classifier for another number of classes is left fresh."""
        source = Supernet.from_checkpoint(path).state_dict()
        target = self.supernet.state_dict()
        if source["classifier.weight"].shape != target["classifier.weight"].shape:
            source = {k: v for k, v in source.items() if not k.startswith("classifier.")}
        self.supernet.load_state_dict(source, strict=False)

    def _restore(self, state: dict) -> None:
        try:
            self.supernet.load_state_dict(state["model"], strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{self.checkpoint_path} does not fit this supernet "
                                  f"({self.num_classes} classes): {str(e).splitlines()[0]}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.grad_scaler is not None and state.get("grad_scaler"):
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        self.epoch, self.consumed, self.global_step = state["epoch"], state["consumed"], state["global_step"]
        self.last_validation = state.get("validation") or {}
        if state.get("world_size") != self.ctx.world_size or state.get("batch_size") != self.config.data.batch_size:
            self.log.write("resume_rescaled", note="world size or batch size changed: the data order of the "
                           "interrupted epoch continues from the same sample, the learning rate follows the "
                           "new global batch", old_world_size=state.get("world_size"),
                           old_batch_size=state.get("batch_size"))

    def _state(self) -> dict:
        return {
            "model": {k: v.detach().to("cpu", copy=True) for k, v in self.supernet.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "grad_scaler": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "epoch": self.epoch, "consumed": self.consumed, "global_step": self.global_step,
            "world_size": self.ctx.world_size, "batch_size": self.config.data.batch_size,
            "num_classes": self.num_classes, "classes": list(self.train_set.classes),
            "config": self.config.to_dict(), "validation": self.last_validation,
        }

    def _save(self, reason: str) -> None:
        if self.ctx.is_main:
            save_checkpoint(self.checkpoint_path, self._state())
            self.log.write("checkpoint", reason=reason, path=str(self.checkpoint_path), epoch=self.epoch,
                           consumed=self.consumed, global_step=self.global_step)
        distributed.barrier()

    # ---- training -----------------------------------------------------------------------------
    def run(self) -> dict:
        """Train to ``config.epochs`` (or until a stop signal); returns a summary dict."""
        self.ctx = distributed.setup(self.config.device)
        try:
            self._build()
            resumed = self.checkpoint_path.is_file()
            if resumed:
                self._restore(load_checkpoint(self.checkpoint_path))
            self.log.write("start", resumed=resumed, world_size=self.ctx.world_size, device=str(self.ctx.device),
                           global_batch=self.global_batch, base_lr=self.base_lr,
                           steps_per_epoch=self.steps_per_epoch, epoch=self.epoch, consumed=self.consumed,
                           global_step=self.global_step, amp=str(self.amp_dtype) if self.amp_dtype else None,
                           config=self.config.to_dict())
            with _StopRequest() as stop:
                stopped = self._loop(stop)
            if not stopped:
                if self.ctx.is_main:
                    self.supernet.save(self.out_dir / FINAL_WEIGHTS_NAME)
                self.log.write("done", epoch=self.epoch, global_step=self.global_step,
                               validation=self.last_validation)
            return {"stopped": stopped, "epoch": self.epoch, "global_step": self.global_step,
                    "resumed": resumed, "checkpoint": str(self.checkpoint_path), "validation": self.last_validation,
                    "world_size": self.ctx.world_size, "device": str(self.ctx.device), "base_lr": self.base_lr,
                    "output_dir": str(self.out_dir)}
        finally:
            distributed.teardown()

    def _loop(self, stop: _StopRequest) -> str | None:
        cfg = self.config
        while self.epoch < cfg.epochs:
            if self._train_epoch(stop):
                self._save(f"stop ({stop.requested or 'signal'})")
                self.log.write("stopped", signal=stop.requested, epoch=self.epoch, global_step=self.global_step)
                return stop.requested or "signal"
            self.epoch, self.consumed = self.epoch + 1, 0
            every = cfg.validation.every_epochs
            if self.val_set is not None and (self.epoch == cfg.epochs or (every and self.epoch % every == 0)):
                self.last_validation = self.validate()
                self.log.write("validation", epoch=self.epoch, global_step=self.global_step, **self.last_validation)
            self._save("epoch")
        return None

    def _train_epoch(self, stop: _StopRequest) -> bool:
        """Train the rest of the current epoch; True if a stop was requested (checked before each step)."""
        cfg, ctx = self.config, self.ctx
        self.sampler.set_epoch(self.epoch, self.consumed)
        self.consumed = self.sampler.consumed
        self.dataset.set_epoch(self.epoch)
        loader = DataLoader(self.dataset, batch_size=cfg.data.batch_size, sampler=self.sampler,
                            num_workers=cfg.data.workers, drop_last=True, pin_memory=ctx.device.type == "cuda")
        bar = None
        if self.progress is not None and ctx.is_main:
            bar = self.progress(total=len(loader), initial=0, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                                unit="step")
        s = cfg.sandwich
        window: list[dict] = []
        tick = time.perf_counter()
        try:
            for images, targets in loader:
                if self._stop_requested(stop):
                    return True
                images = images.to(ctx.device, non_blocking=True)
                targets = targets.to(ctx.device, non_blocking=True)
                # the rate at the end of this step's share of the epoch (the first step is not at lr 0)
                lr = self.schedule.set_progress(self.epoch + (self.consumed + self.global_batch)
                                                / self.sampler.samples_per_epoch)
                archs = sample_sandwich(random.Random(f"{cfg.seed}:archs:{self.global_step}"), s.num_archs,
                                        SEARCH_SPACE)
                torch.manual_seed(step_seed(cfg.seed, self.global_step, ctx.rank))
                result = sandwich_step(self.supernet, images, targets, archs, self.optimizer,
                                       label_smoothing=s.label_smoothing, alpha_min=s.alpha_min,
                                       alpha_max=s.alpha_max, iw_clip=s.iw_clip,
                                       grad_clip_value=cfg.optim.grad_clip_value, dropout=s.dropout,
                                       drop_connect=s.drop_connect, resize=cfg.data.multi_resolution,
                                       amp_dtype=self.amp_dtype, grad_scaler=self.grad_scaler)
                self.global_step += 1
                self.consumed += self.global_batch
                window.append(result)
                if self.global_step % cfg.log_every == 0:
                    record = self._log_record(window, lr, time.perf_counter() - tick)
                    window, tick = [], time.perf_counter()
                    if bar is not None:
                        bar.set_postfix(loss=f"{record['losses'][0]:.3f}", lr=f"{lr:.3g}")
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return False

    def _stop_requested(self, stop: _StopRequest) -> bool:
        """Whether any process was asked to stop (one tiny all-reduce, so all stop at the same step)."""
        flag = torch.tensor([1.0 if stop.requested else 0.0], device=self.ctx.device)
        return distributed.all_reduce(flag, "max").item() > 0

    def _log_record(self, window: list[dict], lr: float, elapsed: float) -> dict:
        """Average the window's step results over steps and processes, and log them."""
        n_arch = len(window[0]["losses"])
        rows = [[*r["losses"], *r["divergences"], r["grad_norm"], r["grad_norm_clipped"], float(r["skipped"])]
                for r in window]
        values = distributed.all_reduce(torch.tensor(rows, dtype=torch.float64, device=self.ctx.device).mean(0),
                                        "mean").tolist()
        record = {"epoch": self.epoch, "global_step": self.global_step,
                  "epoch_progress": round(self.consumed / self.sampler.samples_per_epoch, 6), "lr": lr,
                  "losses": values[:n_arch], "divergences": values[n_arch:2 * n_arch - 1],
                  "grad_norm": values[-3], "grad_norm_clipped": values[-2], "skipped_steps": values[-1] * len(window),
                  "images_per_s": round(self.global_batch * len(window) / max(elapsed, 1e-9), 2)}
        self.log.write("train", **record)
        return record

    # ---- validation ---------------------------------------------------------------------------
    def validate(self) -> dict:
        """Top-1 / top-5 of the smallest and largest subnets, after BN calibration on training images.

        Calibration images get the training-style crop and flip (no AutoAugment), seeded per image,
        as the official test script calibrates. Every process calibrates on its share of the
        calibration batches; the running statistics are then averaged over processes (weighted by
        batches), which is what one process seeing all the batches computes (momentum None: a
        cumulative average of per-batch statistics). Accuracy counts are summed over the
        processes' shares of the validation images.
        """
        cfg, ctx = self.config, self.ctx
        v = cfg.validation
        order = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        n_batches = max(1, min(v.calib_batches, len(order) // v.calib_batch_size))
        mine = [b for b in range(n_batches) if b % ctx.world_size == ctx.rank]
        calib_set = SeededDataset(self.train_set, TrainTransform(cfg.data.crop_size, cfg.data.interpolation, None),
                                  cfg.seed)
        calib_indices = [i for b in mine for i in order[b * v.calib_batch_size:(b + 1) * v.calib_batch_size]]
        val_indices = list(range(len(self.val_set)))
        if v.max_images is not None and v.max_images < len(val_indices):  # a seeded subset of all classes
            g = torch.Generator().manual_seed(cfg.seed + 1)
            val_indices = sorted(torch.randperm(len(val_indices), generator=g)[:v.max_images].tolist())
        val_indices = val_indices[ctx.rank::ctx.world_size]
        val_set = MappedDataset(self.val_set, EvalCrop(eval_preprocessing(cfg.data.crop_size)))
        results = {}
        for name, arch in {"smallest": SEARCH_SPACE.smallest(), "largest": SEARCH_SPACE.largest()}.items():
            resolution = arch.resolution if cfg.data.multi_resolution else None
            model = self.supernet.extract(arch).to(ctx.device)
            if calib_indices:
                calibrate_bn(model, self._images(calib_set, calib_indices, v.calib_batch_size, resolution))
            self._average_bn_statistics(model, len(mine) if calib_indices else 0)
            results[name] = self._accuracy(model, val_set, val_indices, resolution)
        return results

    def _images(self, dataset, indices: list[int], batch_size: int, resolution: int | None):
        """Batches of ``dataset[indices]`` on the device, normalised, resized to ``resolution`` if given."""
        loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, num_workers=self.config.data.workers)
        for images, labels in loader:
            x = images.to(self.ctx.device)
            x = normalize(x) if x.dtype == torch.uint8 else x
            yield (resize_to_resolution(x, resolution) if resolution else x), labels.to(self.ctx.device)

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

    def _accuracy(self, model: torch.nn.Module, dataset, indices: list[int], resolution: int | None) -> dict:
        counts = torch.zeros(3, dtype=torch.float64, device=self.ctx.device)  # top-1, top-5, images
        model.eval()
        with torch.no_grad():
            for x, labels in self._images(dataset, indices, self.config.validation.batch_size, resolution):
                top = model(x).topk(min(5, model.num_classes), dim=1).indices
                counts[0] += (top[:, 0] == labels).sum()
                counts[1] += (top == labels[:, None]).any(1).sum()
                counts[2] += labels.numel()
        distributed.all_reduce(counts)
        n = max(counts[2].item(), 1.0)
        return {"top1": 100.0 * counts[0].item() / n, "top5": 100.0 * counts[1].item() / n,
                "images": int(counts[2].item())}
