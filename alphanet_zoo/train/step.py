"""One step of supernet training with the sandwich rule, one step of fine-tuning, and the optimizer they expect.

`sandwich_step` trains the largest subnet on the labels and distils every other sampled subnet
from its detached logits with the adaptive alpha-divergence; gradients of all subnets are
summed (and averaged over processes), clipped by value, and applied in one optimizer step.
`finetune_step` trains one standalone model on the labels, optionally distilled from a teacher's
logits; both end in `apply_gradients`.
"""
from __future__ import annotations

import random
from typing import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from ..config import SEARCH_SPACE, ArchConfig, SearchSpace
from ..errors import InputError
from .losses import AdaptiveAlphaDivergence, LabelSmoothingCrossEntropy
from ..preprocessing import resize_to_resolution
from ..distributed import is_distributed


def no_weight_decay(module: nn.Module) -> set[str]:
    """Names of the parameters trained without weight decay: all BatchNorm parameters and every bias.

    (The official rule, "no decay where the name has ``.bn`` or ``.bias``", names exactly these.)
    """
    names = set()
    for module_name, m in module.named_modules():
        is_norm = isinstance(m, nn.modules.batchnorm._BatchNorm)
        for param_name, _ in m.named_parameters(recurse=False):
            if is_norm or param_name == "bias":
                names.add(f"{module_name}.{param_name}" if module_name else param_name)
    return names


def build_optimizer(supernet: nn.Module, lr: float, momentum: float = 0.9, nesterov: bool = True,
                    weight_decay: float = 1e-5) -> torch.optim.SGD:
    """SGD with two parameter groups: weight decay on weights, none on BatchNorm parameters and biases."""
    if lr <= 0:
        raise InputError(f"lr must be positive, got {lr}")
    skip = no_weight_decay(supernet)
    decay, no_decay = [], []
    for name, p in supernet.named_parameters():
        if p.requires_grad:
            (no_decay if name in skip else decay).append(p)
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=lr, momentum=momentum, nesterov=nesterov)


def sample_sandwich(rng: random.Random, num_archs: int = 4, space: SearchSpace = SEARCH_SPACE) -> list[ArchConfig]:
    """The sandwich rule's subnets for one step: largest, ``num_archs - 2`` random ones, smallest."""
    if num_archs < 2:
        raise InputError(f"the sandwich rule needs at least 2 subnets (largest and smallest), got {num_archs}")
    return [space.largest(), *(space.sample(rng) for _ in range(num_archs - 2)), space.smallest()]


def all_reduce_gradients(params: Iterable[torch.Tensor]) -> None:
    """Average the gradients of ``params`` over all processes, in one collective per dtype and device.

    Every process must hold gradients for the same parameters (train the same subnets).
    """
    if not is_distributed():
        return
    world = dist.get_world_size()
    groups: dict[tuple, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            groups.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
    for grads in groups.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(world)
        for g, chunk in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(chunk.view_as(g))


def l2_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all ``tensors`` together, as a float32 scalar tensor.

    Sums of squares, not ``torch.linalg.vector_norm``: on CPU that accumulates float32 naively and
    is off by ~1e-4 relative on tensors of millions of entries; ``sum`` is pairwise.
    """
    if not tensors:
        return torch.zeros(())
    return torch.stack([t.float().square().sum() for t in tensors]).sum().sqrt()


def sandwich_step(supernet: nn.Module, images: torch.Tensor, targets: torch.Tensor, archs: Sequence[ArchConfig],
                  optimizer: torch.optim.Optimizer, *, label_smoothing: float = 0.1, alpha_min: float = -1.0,
                  alpha_max: float = 1.0, iw_clip: float = 5.0, grad_clip_value: float | None = 1.0,
                  dropout: float = 0.0, drop_connect: float = 0.0, resize: bool = True,
                  amp_dtype: torch.dtype | None = None, grad_scaler: "torch.amp.GradScaler | None" = None,
                  ) -> dict:
    """One sandwich-rule training step of ``supernet`` (a `Supernet`) on a batch.

    ``archs[0]`` is the teacher (normally the largest subnet): it is trained on ``targets`` with
    label-smoothed cross entropy, with ``dropout`` before the classifier and ``drop_connect`` in the
    last two stages. Every other arch is trained to match the teacher's detached logits with
    `AdaptiveAlphaDivergence`. With ``resize``, the images are resized (bicubic) to each arch's
    resolution; without it they are used as given (small-image datasets). Gradients are summed over
    the archs, averaged over processes when ``torch.distributed`` is initialized (every process must
    pass the same ``archs``), clipped to ``[-grad_clip_value, grad_clip_value]``, and applied with
    one ``optimizer.step()``.

    ``amp_dtype`` runs the forward passes under ``torch.autocast`` (mixed precision); give a
    ``grad_scaler`` for float16. Returns ``{"losses": [float per arch], "divergences": [alpha-
    divergence of each student, the value of its loss's gradient], "grad_norm": L2 norm of the
    gradient before clipping, "grad_norm_clipped": after, "skipped": True if the grad scaler
    skipped the step}``; the students' ``losses`` are the gradient surrogates (they can be negative).
    """
    if len(archs) < 1:
        raise InputError("sandwich_step needs at least one arch (the teacher)")
    if images.shape[0] != targets.shape[0]:
        raise InputError(f"{images.shape[0]} images but {targets.shape[0]} targets")
    ce = LabelSmoothingCrossEntropy(label_smoothing)
    kd = AdaptiveAlphaDivergence(alpha_min, alpha_max, iw_clip)
    device_type = images.device.type

    def forward(arch: ArchConfig, **rates) -> torch.Tensor:
        x = resize_to_resolution(images, arch.resolution) if resize else images
        with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return supernet(x, arch, **rates)

    def backward(loss: torch.Tensor) -> None:
        (grad_scaler.scale(loss) if grad_scaler is not None else loss).backward()

    supernet.train()
    optimizer.zero_grad(set_to_none=True)
    logits = forward(archs[0], drop_rate=dropout, drop_connect_rate=drop_connect)
    loss = ce(logits, targets)
    backward(loss)
    teacher = logits.detach()
    losses, divergences = [loss.detach()], []
    for arch in archs[1:]:
        logits = forward(arch)
        loss = kd(logits, teacher)
        backward(loss)
        losses.append(loss.detach())
        divergences.append(kd.divergence(logits.detach(), teacher))

    update = apply_gradients(optimizer, grad_clip_value, grad_scaler)
    values = torch.stack([v.float() for v in (*losses, *divergences, update["grad_norm"],
                                              update["grad_norm_clipped"])]).tolist()
    n = len(losses)
    return {"losses": values[:n], "divergences": values[n:n + len(divergences)],
            "grad_norm": values[-2], "grad_norm_clipped": values[-1], "skipped": update["skipped"]}


def apply_gradients(optimizer: torch.optim.Optimizer, grad_clip_value: float | None = 1.0,
                    grad_scaler: "torch.amp.GradScaler | None" = None) -> dict:
    """The end of every training step: average the gradients over processes, unscale them (float16),
    clip them by value and step. Returns ``{"grad_norm": before clipping, "grad_norm_clipped": after
    (float32 scalar tensors), "skipped": True if the grad scaler skipped the step}``."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    all_reduce_gradients(params)
    if grad_scaler is not None:
        grad_scaler.unscale_(optimizer)
    grads = [p.grad for p in params]
    grad_norm = l2_norm(grads)
    if grad_clip_value is not None:
        torch.nn.utils.clip_grad_value_(params, grad_clip_value)
        grad_norm_clipped = l2_norm(grads)
    else:
        grad_norm_clipped = grad_norm
    if grad_scaler is not None:
        scale = grad_scaler.get_scale()
        grad_scaler.step(optimizer)
        grad_scaler.update()
        skipped = grad_scaler.get_scale() < scale  # the scale drops only when the step was skipped
    else:
        optimizer.step()
        skipped = False
    return {"grad_norm": grad_norm, "grad_norm_clipped": grad_norm_clipped, "skipped": bool(skipped)}


def finetune_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, optimizer: torch.optim.Optimizer,
                  *, teacher_logits: torch.Tensor | None = None, distill: nn.Module | None = None,
                  distill_weight: float = 0.5, label_smoothing: float = 0.1, grad_clip_value: float | None = 1.0,
                  amp_dtype: torch.dtype | None = None, grad_scaler: "torch.amp.GradScaler | None" = None) -> dict:
    """One fine-tuning step of a standalone model (an `AlphaNet`) on a batch, in the mode it is in.

    The loss is label-smoothed cross entropy on ``targets``; when a teacher's logits are given, it is
    ``(1 - distill_weight) * cross entropy + distill_weight * distill(logits, teacher_logits)``
    (`AdaptiveAlphaDivergence`, or `SoftTargetCrossEntropy` for KL): the gradient keeps the scale of
    the cross entropy's, so the same learning rate suits both.
    The update is `apply_gradients`'s. Returns the shape of `sandwich_step`'s result: ``losses``
    ``[cross entropy, distillation]`` (or ``[cross entropy]``), ``divergences`` (the alpha-divergence
    or KL surrogate's value, when distilling), ``grad_norm``, ``grad_norm_clipped``, ``skipped``.
    """
    if images.shape[0] != targets.shape[0]:
        raise InputError(f"{images.shape[0]} images but {targets.shape[0]} targets")
    if (teacher_logits is None) != (distill is None):
        raise InputError("finetune_step: give both teacher_logits and distill, or neither")
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(images)
    loss = LabelSmoothingCrossEntropy(label_smoothing)(logits, targets)
    losses, divergences = [loss.detach()], []
    if distill is not None:
        if not 0.0 <= distill_weight <= 1.0:
            raise InputError(f"distill_weight must be in [0, 1], got {distill_weight}")
        kd = distill(logits, teacher_logits)
        loss = (1.0 - distill_weight) * loss + distill_weight * kd
        losses.append(kd.detach())
        divergence = getattr(distill, "divergence", None)
        divergences.append(divergence(logits.detach(), teacher_logits) if divergence else kd.detach())
    (grad_scaler.scale(loss) if grad_scaler is not None else loss).backward()
    update = apply_gradients(optimizer, grad_clip_value, grad_scaler)
    values = torch.stack([v.float() for v in (*losses, *divergences, update["grad_norm"],
                                              update["grad_norm_clipped"])]).tolist()
    n = len(losses)
    return {"losses": values[:n], "divergences": values[n:n + len(divergences)], "grad_norm": values[-2],
            "grad_norm_clipped": values[-1], "skipped": update["skipped"]}
