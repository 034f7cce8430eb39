"""Evaluation harness: ImageNet top-1/top-5, FLOPs, the paper's table (installed as ``alphanet_zoo.eval``).

    >>> from alphanet_zoo.eval import open_dataset, eval_loader, evaluate, TorchClassifier
    >>> samples, layout = open_dataset("/data/imagenet/val")       # synset folders or flat + ground truth
    >>> loader = eval_loader(samples, alphanet_zoo.transforms(model), model.arch.resolution, workers=8)
    >>> evaluate(TorchClassifier(model), loader).top1

The command is ``alphanet-eval`` (`alphanet_zoo.eval.cli`).
"""
from .data import (IMAGE_EXTENSIONS, BadImageError, CalibrationBatches, CalibrationTransform, DatasetError,
                   ImageDataset, Sample, calibration_batches, eval_loader, load_image, open_dataset)
from .evaluate import EvalResult, Prediction, TorchClassifier, evaluate
from .ground_truth import GroundTruthError, read_devkit_mapping, read_ground_truth

__all__ = [
    "IMAGE_EXTENSIONS", "BadImageError", "CalibrationBatches", "CalibrationTransform", "DatasetError",
    "EvalResult", "GroundTruthError", "ImageDataset", "Prediction", "Sample", "TorchClassifier",
    "calibration_batches", "eval_loader", "evaluate", "load_image", "open_dataset", "read_devkit_mapping",
    "read_ground_truth",
]
