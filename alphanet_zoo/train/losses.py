"""Losses of AlphaNet supernet training: the adaptive alpha-divergence and its companions.

AlphaNet (Wang et al., 2021, arXiv 2102.07954) distils every sampled subnet from the largest one
with an alpha-divergence whose importance weights are clipped, choosing per sample between a
mass-covering (``alpha_min < 0``) and a mode-seeking (``alpha_max > 0``) divergence: whichever
is larger is the one whose gradient is followed.

For a teacher distribution ``p``, a student ``q`` and the importance weight ``t = p / q``,

    D_alpha(p || q) = sum_i q_i * (t_i**alpha - 1) / (alpha * (alpha - 1))

with ``t**alpha`` clipped at ``iw_clip``; its limits are ``KL(q || p)`` at alpha = 0 (there ``t``
itself is clipped) and ``KL(p || q)`` at alpha = 1. Differentiating through ``q`` only,

    grad D_alpha = -sum_i q_i * rho_i * grad log q_i,    rho = t**alpha / alpha + 1 / (alpha * (alpha - 1))

(rho = log t - 1 at alpha = 0 and rho = t at alpha = 1). The training loss is therefore the
*surrogate* ``-sum_i stopgrad(q_i * rho_i) * log q_i``: its gradient is the divergence's gradient,
its value is not the divergence (it can be negative). Both are returned.

The divergences are computed in float64 from log-probabilities, so very large logits (|logit| of
1e4 and more) and one-hot teachers (teacher logits of ``-inf`` or far apart) give finite values:
the log importance weight is floored at the log of the smallest normal float (a teacher probability
below it counts as that float), which only changes results where a plain ``p / q`` would underflow
to 0 or overflow.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

__all__ = [
    "AdaptiveAlphaDivergence", "LabelSmoothingCrossEntropy", "SoftTargetCrossEntropy",
    "adaptive_alpha_divergence", "f_divergence", "soft_target_cross_entropy",
]

# |alpha| (or |alpha - 1|) below this uses the alpha = 0 (alpha = 1) limit, where the general
# formula divides by ~0.
ALPHA_LIMIT_EPS = 1e-3


def _loss_dtype(logits: torch.Tensor) -> torch.dtype:
    # float64 where the device has it: the per-sample choice between two divergences compares values
    # of about 1e-3 that float32 holds to only ~1e-4 relative (their difference can be smaller), and
    # the cost is nil next to the network. Apple's MPS has no float64: float32 there.
    return torch.float32 if logits.device.type == "mps" else torch.float64


def _log_probs(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise InputError(f"student and teacher logits must both be (N, num_classes); got "
                         f"{list(student_logits.shape)} and {list(teacher_logits.shape)}")
    dtype = _loss_dtype(student_logits)
    return F.log_softmax(student_logits.to(dtype), dim=1), F.log_softmax(teacher_logits.detach().to(dtype), dim=1)


def f_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, alpha: float,
                 iw_clip: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample alpha-divergence ``D_alpha(teacher || student)`` and its gradient surrogate.

    Returns ``(divergence, surrogate)``, each of shape (N,). ``divergence`` carries no gradient;
    ``surrogate`` has the divergence's gradient with respect to ``student_logits`` (the teacher is
    a fixed target). Importance weights ``(p / q)**alpha`` are clipped at ``iw_clip`` (at alpha = 0:
    ``p / q``; at alpha = 1 they are not clipped). Computed in float64 (float32 on MPS), whatever
    the logits' precision; the surrogate's gradient flows back in the logits' dtype.
    """
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise InputError(f"alpha must be a finite number, got {alpha}")
    if not iw_clip > 0:
        raise InputError(f"iw_clip must be positive, got {iw_clip}")
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    q = log_q.detach().exp()
    # log importance weight, floored so that a zero teacher probability stays finite
    log_t = (log_p - log_q.detach()).clamp(min=math.log(torch.finfo(log_q.dtype).tiny))
    log_clip = math.log(iw_clip)
    if abs(alpha) < ALPHA_LIMIT_EPS:  # KL(q || p), importance weight clipped
        log_t = log_t.clamp(max=log_clip)
        divergence = (q * -log_t).sum(1)
        rho = log_t - 1.0
        weight = q * rho
    elif abs(alpha - 1.0) < ALPHA_LIMIT_EPS:  # KL(p || q); q * t is p, computed without overflow
        p_over = log_p.exp()
        divergence = (p_over * log_t).sum(1)
        weight = p_over  # q * rho with rho = t
    else:
        scale = 1.0 / (alpha * (alpha - 1.0))
        t_alpha = torch.exp((alpha * log_t).clamp(max=log_clip))  # (p / q)**alpha, clipped
        divergence = (q * (t_alpha - 1.0)).sum(1) * scale
        weight = q * (t_alpha / alpha + scale)
    # q * log q is 0 where q underflowed to 0 (log q itself stays finite from log_softmax)
    surrogate = -(weight.detach() * log_q).sum(1)
    return divergence.detach(), surrogate


def adaptive_alpha_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, alpha_min: float = -1.0,
                              alpha_max: float = 1.0, iw_clip: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the larger of ``D_alpha_min`` and ``D_alpha_max``, and that divergence's surrogate.

    Returns ``(divergence, surrogate)`` of shape (N,); see `f_divergence`.
    """
    div_min, sur_min = f_divergence(student_logits, teacher_logits, alpha_min, iw_clip)
    div_max, sur_max = f_divergence(student_logits, teacher_logits, alpha_max, iw_clip)
    use_min = div_min > div_max
    return torch.where(use_min, div_min, div_max), torch.where(use_min, sur_min, sur_max)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def _check_reduction(reduction: str) -> str:
    if reduction not in ("mean", "sum", "none"):
        raise InputError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return reduction


class AdaptiveAlphaDivergence(nn.Module):
    """AlphaNet's distillation loss: ``loss(student_logits, teacher_logits)``.

    Per sample, the gradient of whichever of ``D_alpha_min`` and ``D_alpha_max`` is larger
    (importance weights clipped at ``iw_clip``); the returned value is the gradient surrogate,
    averaged over the batch (``reduction="mean"``). Use `divergence` for the divergence itself
    (for logging). The teacher logits are detached.
    """

    def __init__(self, alpha_min: float = -1.0, alpha_max: float = 1.0, iw_clip: float = 5.0,
                 reduction: str = "mean") -> None:
        super().__init__()
        if not alpha_min <= alpha_max:
            raise InputError(f"alpha_min ({alpha_min}) must not exceed alpha_max ({alpha_max})")
        if not iw_clip > 0:
            raise InputError(f"iw_clip must be positive, got {iw_clip}")
        self.alpha_min, self.alpha_max, self.iw_clip = float(alpha_min), float(alpha_max), float(iw_clip)
        self.reduction = _check_reduction(reduction)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        _, surrogate = adaptive_alpha_divergence(student_logits, teacher_logits, self.alpha_min,
                                                 self.alpha_max, self.iw_clip)
        return _reduce(surrogate, self.reduction)

    def divergence(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """The larger of the two divergences per sample, reduced like the loss (no gradient)."""
        div, _ = adaptive_alpha_divergence(student_logits, teacher_logits, self.alpha_min,
                                           self.alpha_max, self.iw_clip)
        return _reduce(div, self.reduction)

    def extra_repr(self) -> str:
        return f"alpha_min={self.alpha_min}, alpha_max={self.alpha_max}, iw_clip={self.iw_clip}"


def soft_target_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample cross entropy of the student against the teacher's softmax (teacher detached).

    Equal to ``KL(p || q)`` plus the teacher's entropy: the gradient is the KL's.
    """
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    return -(log_p.exp() * log_q).sum(1)


class SoftTargetCrossEntropy(nn.Module):
    """Plain knowledge distillation: cross entropy against the teacher's softmax (``kl_soft``)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return _reduce(soft_target_cross_entropy(student_logits, teacher_logits), self.reduction)


class LabelSmoothingCrossEntropy(nn.Module):
    """Cross entropy against ``(1 - smoothing) * one_hot + smoothing / num_classes``, in float32 or wider."""

    def __init__(self, smoothing: float = 0.1, reduction: str = "mean") -> None:
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise InputError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = float(smoothing)
        self.reduction = _check_reduction(reduction)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return F.cross_entropy(logits, targets, label_smoothing=self.smoothing, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}"
