"""BatchNorm re-calibration of an extracted subnet, as the official test script does it."""
from __future__ import annotations

import itertools
from typing import Iterable

import torch
from torch import nn

from .errors import InputError
from .preprocessing import model_input


def calibrate_bn(model: nn.Module, batches: Iterable, num_batches: int | None = None) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``batches``; return ``model`` in eval mode.

    Running statistics are reset and accumulated as a cumulative average (momentum None) over the
    first ``num_batches`` batches (all when None), forwarded without gradients with the BatchNorm
    layers in training mode and everything else (dropout, drop-connect) in eval mode. Each batch
    is a float input tensor or an ``(images, labels, ...)`` sequence. Momenta are restored afterwards.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise InputError("calibrate_bn: the model has no BatchNorm layers")
    if num_batches is not None and num_batches < 1:
        raise InputError(f"calibrate_bn: num_batches must be positive, got {num_batches}")
    momenta = [m.momentum for m in norms]
    param = next(model.parameters())
    model.eval()
    seen = 0
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for batch in itertools.islice(batches, num_batches):
                images = batch[0] if isinstance(batch, (list, tuple)) else batch
                if not isinstance(images, torch.Tensor):
                    raise InputError(f"calibrate_bn: a batch must be a tensor or (images, labels), "
                                     f"got {type(images).__name__}")
                model(images.to(device=param.device, dtype=param.dtype))
                seen += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    if seen == 0:
        raise InputError("calibrate_bn: no batches were given")
    return model


def calibrate(model: nn.Module, crops: Iterable[torch.Tensor], resolution: int | None) -> nn.Module:
    """`calibrate_bn` on batches of uint8 crops (`alphanet_zoo.data.CalibrationBatches`), each made
    the model's input by `model_input` (normalise, resize to ``resolution``; None: as they are).

    The one calibration path of extraction, evaluation, search and training validation: the same
    crops give bit-identical statistics in each.
    """
    device = next(model.parameters()).device
    return calibrate_bn(model, (model_input(x.to(device), resolution) for x in crops))
