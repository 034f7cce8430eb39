"""The AlphaNet losses: parity with the official implementation, the math, and numerical safety."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import det

from alphanet_zoo.train.losses import (AdaptiveAlphaDivergence, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy,
                                 adaptive_alpha_divergence, f_divergence, soft_target_cross_entropy)

ALPHAS = (-1.0, -0.5, 0.0, 0.5, 1.0, 2.0)


def _logits(spec: dict) -> torch.Tensor:
    return det(spec["seed"], spec["shape"]) * spec["scale"]


def _close(actual, expected, rtol: float, atol: float = 0.0) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol)


# ---- parity with reference_salt0.json["losses"] (values stored to 7 decimals: atol 1e-7) ------------

def test_f_divergence_matches_reference(reference):
    ref = reference["losses"]
    student, teacher = _logits(ref["student"]), _logits(ref["teacher"])
    assert len(ref["f_divergence"]) >= 6
    for alpha, expected in ref["f_divergence"].items():
        divergence, surrogate = f_divergence(student, teacher, float(alpha), expected["iw_clip"])
        _close(divergence, expected["loss"], rtol=1e-5, atol=1e-7)
        _close(surrogate.detach(), expected["grad_loss"], rtol=1e-5, atol=1e-7)


def test_adaptive_loss_and_gradient_match_reference(reference):
    ref = reference["losses"]
    teacher = _logits(ref["teacher"])
    for pair, expected in ref["adaptive"].items():
        alpha_min, alpha_max = (float(a) for a in pair.split(","))
        student = _logits(ref["student"]).requires_grad_()
        loss = AdaptiveAlphaDivergence(alpha_min, alpha_max, expected["iw_clip"])(student, teacher)
        loss.backward()
        _close(loss.item(), expected["loss"], rtol=1e-5)
        _close(student.grad.flatten(), expected["grad_student"], rtol=1e-5, atol=2e-7)


def test_soft_target_loss_and_gradient_match_reference(reference):
    ref = reference["losses"]
    student = _logits(ref["student"]).requires_grad_()
    loss = SoftTargetCrossEntropy()(student, _logits(ref["teacher"]))
    loss.backward()
    _close(loss.item(), ref["kl_soft"]["loss"], rtol=1e-5)
    _close(student.grad.flatten(), ref["kl_soft"]["grad_student"], rtol=1e-5, atol=2e-7)


# ---- the math, independent of the reference ---------------------------------------------------------

def _exact_divergence(student: torch.Tensor, teacher: torch.Tensor, alpha: float) -> torch.Tensor:
    """D_alpha(p || q) per sample straight from its definition (no clipping), differentiable in q."""
    q, p = F.softmax(student, 1), F.softmax(teacher, 1)
    if alpha == 0:
        return (q * (q.log() - p.log())).sum(1)
    if alpha == 1:
        return (p * (p.log() - q.log())).sum(1)
    return ((q * (p / q) ** alpha).sum(1) - 1) / (alpha * (alpha - 1))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_values_and_gradients_are_the_alpha_divergence(alpha):
    student = (det(7, [6, 12]).double() * 0.7).requires_grad_()
    teacher = det(8, [6, 12]).double() * 0.7  # mild logits: the clip (1e9) never acts
    divergence, surrogate = f_divergence(student, teacher, alpha, iw_clip=1e9)
    exact = _exact_divergence(student, teacher, alpha)
    _close(divergence, exact.detach(), rtol=1e-9, atol=1e-12)
    assert (divergence >= 0).all()
    (grad_surrogate,) = torch.autograd.grad(surrogate.sum(), student)
    (grad_exact,) = torch.autograd.grad(exact.sum(), student)
    _close(grad_surrogate, grad_exact, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("limit", [0.0, 1.0])
def test_alpha_near_0_and_1_use_the_limits(limit):
    teacher = det(2, [5, 9]) * 2

    def divergence_and_grad(alpha):
        student = (det(1, [5, 9]) * 2).requires_grad_()
        divergence, surrogate = f_divergence(student, teacher, alpha, iw_clip=1e9)
        (grad,) = torch.autograd.grad(surrogate.sum(), student)
        assert torch.isfinite(divergence).all() and torch.isfinite(grad).all()
        return divergence, grad

    at_limit = divergence_and_grad(limit)
    for alpha in (limit - 5e-4, limit + 5e-4):  # inside the limit band: the KL form itself
        near = divergence_and_grad(alpha)
        _close(near[0], at_limit[0], rtol=1e-12)
        _close(near[1], at_limit[1], rtol=1e-12)
    for alpha in (limit - 2e-3, limit + 2e-3):  # just outside: the general formula, continuous with the limit
        near = divergence_and_grad(alpha)
        _close(near[0], at_limit[0], rtol=5e-2)
        _close(near[1], at_limit[1], rtol=5e-2, atol=1e-3)


def test_importance_weights_are_clipped():
    student, teacher = det(3, [4, 10]) * 4, det(4, [4, 10]) * 4
    p, q = F.softmax(teacher.double(), 1), F.softmax(student.double(), 1)
    assert ((p / q) ** -1 > 5).any()
    clipped, _ = f_divergence(student, teacher, -1.0, iw_clip=5.0)
    expected = (q * ((q / p).clamp(max=5.0) - 1)).sum(1) / 2
    _close(clipped, expected, rtol=1e-9)


def test_adaptive_follows_the_larger_divergence_per_sample():
    student = det(11, [16, 10]) * 2
    teacher = det(12, [16, 10]) * 2
    d_min, s_min = f_divergence(student, teacher, -1.0)
    d_max, s_max = f_divergence(student, teacher, 1.0)
    pick_min = d_min > d_max
    assert pick_min.any() and (~pick_min).any()  # both branches exercised
    divergence, surrogate = adaptive_alpha_divergence(student, teacher, -1.0, 1.0)
    _close(divergence, torch.maximum(d_min, d_max), rtol=0)
    _close(surrogate, torch.where(pick_min, s_min, s_max), rtol=0)
    loss = AdaptiveAlphaDivergence()
    _close(loss(student, teacher).item(), surrogate.mean().item(), rtol=1e-12)
    _close(loss.divergence(student, teacher).item(), divergence.mean().item(), rtol=1e-12)
    assert AdaptiveAlphaDivergence(reduction="none")(student, teacher).shape == (16,)


def test_teacher_gets_no_gradient():
    student = det(1, [3, 5]).requires_grad_()
    teacher = det(2, [3, 5]).requires_grad_()
    AdaptiveAlphaDivergence()(student, teacher).backward()
    assert teacher.grad is None and student.grad is not None


# ---- numerical safety --------------------------------------------------------------------------------

def _extreme_cases():
    big = det(21, [8, 10]) * 1e4
    one_hot_finite = torch.full((8, 10), -1e4)
    one_hot_finite[torch.arange(8), torch.arange(8)] = 1e4
    one_hot_inf = torch.full((8, 10), -math.inf)
    one_hot_inf[torch.arange(8), torch.arange(8) % 10] = 0.0
    return {
        "logits 1e4": (det(20, [8, 10]) * 1e4, big),
        "one-hot teacher (finite logits)": (det(22, [8, 10]) * 3, one_hot_finite),
        "one-hot teacher (-inf logits)": (det(23, [8, 10]) * 3, one_hot_inf),
        "both one-hot": (one_hot_finite.flip(0), one_hot_finite),
    }


@pytest.mark.parametrize("case", list(_extreme_cases()))
def test_losses_stay_finite_for_extreme_logits_and_one_hot_teachers(case):
    student_values, teacher = _extreme_cases()[case]
    for alpha in ALPHAS:
        student = student_values.clone().requires_grad_()
        divergence, surrogate = f_divergence(student, teacher, alpha)
        surrogate.sum().backward()
        assert torch.isfinite(divergence).all() and torch.isfinite(surrogate).all(), (case, alpha)
        assert torch.isfinite(student.grad).all(), (case, alpha)
    for loss_fn in (AdaptiveAlphaDivergence(), AdaptiveAlphaDivergence(-0.5, 2.0), SoftTargetCrossEntropy()):
        student = student_values.clone().requires_grad_()
        loss = loss_fn(student, teacher)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(student.grad).all(), (case, loss_fn)


def test_half_precision_logits_are_computed_in_full_precision():
    student, teacher = det(5, [4, 10]), det(6, [4, 10])
    full = AdaptiveAlphaDivergence()(student, teacher)
    half = AdaptiveAlphaDivergence()(student.to(torch.bfloat16), teacher.to(torch.bfloat16))
    assert half.dtype == torch.float64
    _close(half.item(), full.item(), rtol=5e-2)


# ---- the other losses and argument checks -----------------------------------------------------------

def test_label_smoothing_cross_entropy():
    logits, targets = det(9, [6, 7]), torch.tensor([0, 3, 6, 2, 2, 5])
    smoothing = 0.1
    soft = torch.full((6, 7), smoothing / 7)
    soft[torch.arange(6), targets] += 1 - smoothing
    expected = -(soft * F.log_softmax(logits, 1)).sum(1).mean()
    _close(LabelSmoothingCrossEntropy(smoothing)(logits, targets).item(), expected.item(), rtol=1e-6)
    _close(soft_target_cross_entropy(logits, logits).mean().item(),
           -(F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum(1).mean().item(), rtol=1e-6)


def test_bad_arguments_are_clear_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="alpha_min"):
        AdaptiveAlphaDivergence(1.0, -1.0)
    with pytest.raises(ValueError, match="iw_clip"):
        f_divergence(x, x, 0.5, iw_clip=0)
    with pytest.raises(ValueError, match="finite"):
        f_divergence(x, x, math.nan)
    with pytest.raises(ValueError, match=r"\(N, num_classes\)"):
        f_divergence(x, torch.zeros(2, 4), 0.5)
    with pytest.raises(ValueError, match="reduction"):
        SoftTargetCrossEntropy(reduction="avg")
    with pytest.raises(ValueError, match="smoothing"):
        LabelSmoothingCrossEntropy(1.0)
