"""The one data pipeline of every command: reading image folders, cropping, batching, counting.

    samples, layout = open_dataset("/data/imagenet/val")                  # ImageNet's layouts
    batches = labelled_batches(samples, EvalCrop(pre), pre.crop_size, batch_size=256, workers=8)
    evaluate(TorchClassifier(model), batches, resolution=pre.resolution).top1
    calibrate(model, calibration_batches("/data/imagenet/train", 64, 256, seed=0), model.arch.resolution)

`alphanet-extract`, `alphanet-eval`, `alphanet-search` and training validation read, crop,
calibrate and count through these functions, so the same flags give the same numbers in each.
"""
from .accuracy import EvalResult, Prediction, RunBatch, TorchClassifier, evaluate, run_batches
from .batches import (CalibrationBatches, CalibrationDraws, LabelledImages, TensorBatches, batch_indices,
                      calibration_batches, labelled_batches)
from .folders import (CLASS_FOLDERS, GROUND_TRUTH_FILE, SYNSET_FOLDERS, Sample, class_folder_samples, find_ground_truth,
                      is_imagenet_folder, labelled_samples, open_dataset, synset_folder_samples)
from .ground_truth import GroundTruthError, read_devkit_mapping, read_ground_truth
from .images import IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, BadImageError, DatasetError, is_image_file, load_image
from .inputs import ImageInputs, collect_images

__all__ = [
    "BadImageError", "CLASS_FOLDERS", "CalibrationBatches", "CalibrationDraws", "DatasetError", "EvalResult",
    "GROUND_TRUTH_FILE", "ImageInputs", "collect_images",
    "GroundTruthError", "IMAGE_EXTENSIONS", "LabelledImages", "MAX_IMAGE_PIXELS", "Prediction", "SYNSET_FOLDERS",
    "RunBatch", "Sample", "TensorBatches", "TorchClassifier", "batch_indices", "calibration_batches", "class_folder_samples", "run_batches",
    "evaluate", "find_ground_truth", "is_image_file", "is_imagenet_folder", "labelled_batches", "labelled_samples",
    "load_image", "open_dataset", "read_devkit_mapping", "read_ground_truth", "synset_folder_samples",
]
