"""Learning-rate schedule: linear warm-up, then cosine decay, as a function of training progress.

The rate depends only on how far training is, in epochs (a float: ``epoch + fraction done``),
so resuming, also with another number of processes, lands on the very same rate.
"""
from __future__ import annotations

import math

import torch

from ..errors import InputError


def scaled_lr(lr_per_256: float, global_batch: int) -> float:
    """The linear scaling rule: ``lr_per_256`` for every 256 images of the global batch."""
    return lr_per_256 * global_batch / 256


def warmup_cosine(progress: float, base_lr: float, epochs: float, warmup_epochs: float = 0.0,
                  min_lr: float = 0.0, warmup_start_lr: float = 0.0) -> float:
    """The rate at ``progress`` epochs: linear from ``warmup_start_lr`` to ``base_lr`` over
    ``warmup_epochs``, then cosine from ``base_lr`` down to ``min_lr`` at ``epochs``."""
    if progress < warmup_epochs:
        return warmup_start_lr + (base_lr - warmup_start_lr) * progress / warmup_epochs
    span = max(epochs - warmup_epochs, 1e-12)
    done = min(max((progress - warmup_epochs) / span, 0.0), 1.0)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * done))


class WarmupCosineSchedule:
    """Sets the optimizer's learning rate from the training progress: ``schedule.set_progress(epochs)``."""

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, epochs: float, warmup_epochs: float = 0.0,
                 min_lr: float = 0.0, warmup_start_lr: float = 0.0) -> None:
        if epochs <= 0:
            raise InputError(f"epochs must be positive, got {epochs}")
        if not 0 <= warmup_epochs <= epochs:
            raise InputError(f"warmup_epochs must be in [0, epochs={epochs}], got {warmup_epochs}")
        self.optimizer = optimizer
        self.base_lr, self.epochs, self.warmup_epochs = float(base_lr), float(epochs), float(warmup_epochs)
        self.min_lr, self.warmup_start_lr = float(min_lr), float(warmup_start_lr)
        self.progress = 0.0
        self.set_progress(0.0)

    def lr_at(self, progress: float) -> float:
        return warmup_cosine(progress, self.base_lr, self.epochs, self.warmup_epochs, self.min_lr,
                             self.warmup_start_lr)

    def set_progress(self, progress: float) -> float:
        """Set every parameter group's rate for ``progress`` epochs; returns it."""
        self.progress = float(progress)
        lr = self.lr_at(self.progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"progress": self.progress, "base_lr": self.base_lr, "epochs": self.epochs,
                "warmup_epochs": self.warmup_epochs, "min_lr": self.min_lr, "warmup_start_lr": self.warmup_start_lr}

    def load_state_dict(self, state: dict) -> None:
        """Restore the progress (the shape of the schedule comes from the current config)."""
        self.set_progress(float(state["progress"]))
