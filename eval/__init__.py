"""Evaluation harness: ImageNet top-1/top-5, FLOPs, the paper's table (installed as ``alphanet_zoo.eval``).

The data pipeline it runs on is `alphanet_zoo.data` (the same one extraction, search and training
use); this package adds the ``alphanet-eval`` command (`alphanet_zoo.commands.eval`) and its report:

    >>> from alphanet_zoo.data import open_dataset, labelled_batches, evaluate, TorchClassifier
    >>> from alphanet_zoo.preprocessing import EvalCrop
    >>> samples, layout = open_dataset("/data/imagenet/val")       # synset folders or flat + ground truth
    >>> pre = model.pretrained_cfg.preprocessing
    >>> batches = labelled_batches(samples, EvalCrop(pre), pre.crop_size, batch_size=256, workers=8)
    >>> evaluate(TorchClassifier(model), batches, resolution=pre.resolution).top1
"""
from .report import RESULTS_FORMAT, format_table, model_result, plot_pareto, results_document

__all__ = ["RESULTS_FORMAT", "format_table", "model_result", "plot_pareto", "results_document"]
