"""Fine-tuning a standalone AlphaNet on class folders, on the supernet trainer's machinery.

    import alphanet_zoo

    summary = alphanet_zoo.finetune("random", "data/train", "runs/colours", arch="a0", val="data/val")
    model = alphanet_zoo.load(summary["folder"])       # the classes are the folder names

`finetune` loads any weights spec (a folder, ``hf-hub:``, a supernet plus ``arch``, ``random`` plus
``arch``), gives it a fresh classifier for the dataset's classes (labels from the folder names),
re-calibrates its BatchNorm statistics on the new images and trains it with label-smoothed cross
entropy, optionally distilled from a teacher (our adaptive alpha-divergence, or KL), with SGD and a
cosine schedule after a linear warm-up. `FineTuner` is a `Trainer`: the same data pipeline, seeded
augmentation, step checkpoints, exact resume (rerun the same call), SIGTERM/SIGINT handling and
JSON-lines log. The output folder becomes a ``save_pretrained`` folder (``config.json``,
``model.safetensors``, ``README.md``) whose record says ``origin: finetuned``, names the data and
the classes, and holds the validation top-1 measured at the end; ``checkpoint.pt`` and
``log.jsonl`` stay beside them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any, Callable, Sequence

import torch
from PIL import Image

from .._version import __version__
from ..calibration import calibrate
from ..config import MODEL_RESOLUTIONS, ArchConfig
from ..data import LabelledImages, batch_indices
from ..data.batches import CalibrationBatches
from ..errors import InputError
from .losses import AdaptiveAlphaDivergence, SoftTargetCrossEntropy
from ..model import AlphaNet
from ..pretrained import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from ..preprocessing import EvalCrop, resize_to_resolution
from ..record import Calibration, Measurement, ModelRecord, Origin
from ..registry import resolve_arch
from ..weights import RANDOM, WeightsLoader, WeightsSpec
from .config import LEGACY_PRECISION_KEYS, TrainConfig, apply_overrides, parse_override
from .data import eval_preprocessing, training_data
from .precision import use_training_layout
from .step import finetune_step
from .trainer import Trainer, _StopRequest, step_seed

DISTILL_LOSSES = ("alpha", "kl", "none")
FREEZE_CHOICES = ("features", "none")
#: The defaults reach >= 90 % validation top-1 from random weights on an easy two-class folder set.
DEFAULT_EPOCHS = 10
DEFAULT_LR = 0.02
DEFAULT_BATCH_SIZE = 32
MIN_AUTO_RESOLUTION = 32
#: `finetune`'s numeric settings: (low, high, whether low itself is excluded); the command's flags take the same
RANGES = {"epochs": (1, 100_000, False), "lr": (0, 100, True), "batch_size": (1, 65536, False),
          "warmup_epochs": (0, 100_000, False), "label_smoothing": (0, 0.999, False),
          "resolution": (*MODEL_RESOLUTIONS, False), "max_steps": (1, 10 ** 9, False)}
_INTEGERS = ("epochs", "batch_size", "resolution", "max_steps")
#: Config keys `finetune` sets from its own arguments: a key=value override of one would contradict them.
ARGUMENT_KEYS = {"output_dir": "out (--out)", "epochs": "epochs (--epochs)", "seed": "seed (--seed)",
                 "device": "device (--device)", "data.train": "data (--data)", "data.val": "val (--val)",
                 "data.batch_size": "batch_size (--batch-size)", "data.workers": "workers (--workers)",
                 "data.crop_size": "resolution (--resolution)", "optim.lr_per_256": "lr (--lr)",
                 "optim.warmup_epochs": "warmup_epochs (--warmup-epochs)",
                 "sandwich.label_smoothing": "label_smoothing (--label-smoothing)",
                 **{key: "precision (--precision)" for key in ("precision", *LEGACY_PRECISION_KEYS)}}
log = logging.getLogger("alphanet_zoo")


@dataclass(frozen=True)
class FinetuneSettings:
    """What a fine-tuning run starts from and how it learns, beside the `TrainConfig` (kept in its checkpoints)."""

    weights: str  # the weights spec fine-tuned
    data: str  # the training folder (recorded in the result)
    val: str  # the validation folder
    distill: str = "none"  # alpha | kl | none (without a teacher: none)
    teacher: str | None = None
    freeze: str = "none"  # features: train only the head; none: everything
    precision: str | None = None  # old code's way to set it: now TrainConfig.precision (None: the config's)
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps in all

    def check(self) -> "FinetuneSettings":
        if self.distill not in DISTILL_LOSSES:
            raise InputError(f"distill must be one of {', '.join(DISTILL_LOSSES)}, got {self.distill!r}")
        if self.freeze not in FREEZE_CHOICES:
            raise InputError(f"freeze must be one of {', '.join(FREEZE_CHOICES)}, got {self.freeze!r}")
        if self.distill != "none" and self.teacher is None:
            raise InputError(f"distill {self.distill!r} needs a teacher (--teacher SPEC)")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"max_steps must be positive, got {self.max_steps}")
        return self


def _head_modules(model: AlphaNet) -> list[torch.nn.Module]:
    """The modules `freeze="features"` leaves trainable: what `AlphaNet.forward_head` runs."""
    return [model.feature_mix, model.classifier]


def _feature_modules(model: AlphaNet) -> list[torch.nn.Module]:
    return [model.stem, model.stages, model.final_expand]


class FineTuner(Trainer):
    """Fine-tunes ``model`` (an `AlphaNet`) on ``config.data``; see the module's docstring.

    ``teacher`` (an `AlphaNet` for the same classes, or None) is distilled from as ``settings.distill``
    says. ``config.data.crop_size`` is the training and evaluation resolution.
    """

    what = "model"
    output_files = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)

    def __init__(self, config: TrainConfig, settings: FinetuneSettings, model: AlphaNet,
                 teacher: AlphaNet | None = None, *, resume: "bool | str | os.PathLike" = True,
                 progress: Callable[..., Any] | None = None) -> None:
        if settings.precision not in (None, config.precision):
            if config.precision != "auto":
                raise InputError(f"settings.precision {settings.precision} and config.precision {config.precision} "
                                 f"differ: set config.precision only")
            config = dataclasses.replace(config, precision=settings.precision)
        super().__init__(config, resume=resume, progress=progress)
        self.settings = settings.check()
        self.base, self.teacher = model, teacher
        self.calibration = None
        if (teacher is None) != (settings.distill == "none"):
            raise InputError(f"distill={settings.distill} needs a teacher: give --teacher, or set distill=none"
                             if teacher is None else
                             "a teacher was given but distill=none: set distill=alpha or distill=kl, or drop --teacher")

    # ---- the model ------------------------------------------------------------------------------
    def _make_model(self) -> torch.nn.Module:
        model, classes, crop = self.base, self.data.classes, self.config.data.crop_size
        if model.pretrained_cfg.labels is None or list(model.pretrained_cfg.labels) != classes:
            model.reset_classifier(len(classes), labels=classes)  # seeded: the trainer seeded torch just before
        if model.arch.resolution != crop:  # trained at crop, it is a model of that resolution from now on
            model.set_resolution(crop, eval_preprocessing(crop))
        if self.settings.freeze == "features":
            for module in _feature_modules(model):
                module.requires_grad_(False)
        if self.teacher is not None:
            labels = self.teacher.pretrained_cfg.labels
            if self.teacher.num_classes != len(classes) or (labels is not None and list(labels) != classes):
                raise InputError(f"the teacher has {self.teacher.num_classes} classes "
                                 f"({', '.join(list(labels or [])[:5])}), not the dataset's {len(classes)} "
                                 f"({', '.join(classes[:5])}): fine-tune the teacher on the same folders first")
            use_training_layout(self.teacher.to(self.ctx.device), self.ctx.device).eval().requires_grad_(False)
        return model

    def _train_mode(self) -> None:
        self.model.train()
        if self.settings.freeze == "features":  # frozen features keep their calibrated statistics
            for module in _feature_modules(self.model):
                module.eval()

    def _calibrate(self, stop: _StopRequest | None = None) -> None:
        """BatchNorm re-calibration on seeded crops of the training images (every process on all the
        batches: the same statistics everywhere)."""
        cfg, v = self.config, self.config.validation
        batches = CalibrationBatches(self.data.samples, v.calib_batches, v.calib_batch_size, cfg.seed,
                                     cfg.data.workers, cfg.data.crop_size, data=str(cfg.data.train))
        draws = batches.dataset()
        order = batch_indices(len(draws), v.calib_batch_size)
        calibrate(self.model, self._checked(self._calibration_crops(draws, order), len(order), stop), None)
        self.calibration = batches.describe()

    def _fresh_start(self) -> None:
        """Before the first step: statistics of the new images, not of the data the weights saw."""
        self._calibrate()
        self.log.write("calibrated", batches=self.config.validation.calib_batches,
                       batch_size=self.config.validation.calib_batch_size)

    # ---- training -------------------------------------------------------------------------------
    def _default_layout(self) -> tuple[int, int]:
        return (1, 0) if self.teacher is None else (2, 1)

    def _step(self, images: torch.Tensor, targets: torch.Tensor) -> dict:
        cfg, s = self.config, self.config.sandwich
        self._train_mode()
        torch.manual_seed(step_seed(cfg.seed, self.global_step, self.ctx.rank))
        teacher_logits, distill = None, None
        if self.teacher is not None:
            resolution = self.teacher.pretrained_cfg.preprocessing.resolution
            with torch.no_grad(), torch.autocast(images.device.type, dtype=self.amp_dtype,
                                                 enabled=self.amp_dtype is not None):
                teacher_logits = self.teacher(resize_to_resolution(images, resolution)
                                              if resolution != images.shape[-1] else images)
            distill = (AdaptiveAlphaDivergence(s.alpha_min, s.alpha_max, s.iw_clip)
                       if self.settings.distill == "alpha" else SoftTargetCrossEntropy())
        return finetune_step(self.model, images, targets, self.optimizer, teacher_logits=teacher_logits,
                             distill=distill, label_smoothing=s.label_smoothing,
                             grad_clip_value=cfg.optim.grad_clip_value, amp_dtype=self.amp_dtype,
                             grad_scaler=self.grad_scaler)

    def _reduce_step(self, result: dict, lr: float, stop: _StopRequest) -> tuple[list[float], bool]:
        row, stopping = super()._reduce_step(result, lr, stop)
        limit = self.settings.max_steps
        if limit is not None and self.global_step >= limit and not stopping:
            stop.requested = stop.requested or "max_steps"
            stopping = True
        return row, stopping

    def _state(self, log_offset: int) -> dict:
        state = super()._state(log_offset)
        state["finetune"] = dataclasses.asdict(self.settings)
        state["calibration"] = dataclasses.asdict(self.calibration) if self.calibration else None
        return state

    def _restore(self, state: dict, path: Path) -> None:
        super()._restore(state, path)
        if state.get("calibration"):
            self.calibration = Calibration(**state["calibration"])

    # ---- validation and the result --------------------------------------------------------------
    def validate(self, stop: _StopRequest | None = None) -> dict:
        """Top-1 / top-5 of the model on the validation folder with the evaluation crop of the
        training resolution (what ``alphanet-eval`` and ``predict`` do with the saved folder)."""
        cfg, ctx = self.config, self.ctx
        val = self.data.val_samples
        batches = batch_indices(len(val), cfg.validation.batch_size)
        mine = batches[ctx.rank::ctx.world_size]
        crop = EvalCrop(eval_preprocessing(cfg.data.crop_size))
        loader = self._loader(LabelledImages(val, crop, (3, cfg.data.crop_size, cfg.data.crop_size)),
                              batch_sampler=mine)
        # a few hundred steps leave running statistics behind the weights: re-estimate them first (the
        # official recipe for subnets); the saved model keeps them, and its record says so
        self._calibrate(stop)
        return {"model": self._score(self.model, loader, len(batches), stop, None, val)}

    def record(self) -> ModelRecord:
        """The fine-tuned model's record: origin finetuned, the data, the classes, the measured top-1."""
        base, s, crop = self.base.pretrained_cfg, self.settings, self.config.data.crop_size
        measured = []
        metrics = self.last_validation.get("model")
        if metrics and metrics["images"]:
            top5 = metrics["top5"] if self.num_classes > 5 else None
            measured.append(Measurement(top1=round(metrics["top1"], 4), top5=None if top5 is None else
                                        round(top5, 4), images=metrics["images"], data=s.val, calibrated=True,
                                        library_version=__version__))
        teacher = f", distilled ({s.distill}) from {s.teacher}" if s.teacher else ""
        start = f"{s.weights} weights" + (f" ({base.name})" if base.name else "")
        record = ModelRecord.create(self.model.arch, self.num_classes, name=base.name, origin=Origin.FINETUNED,
                                    source=f"{start} fine-tuned with alphanet_zoo on {s.data}{teacher}",
                                    labels=self.data.classes, measured=measured,
                                    calibration=self.calibration)
        license = None if base.origin is Origin.RANDOM else base.license
        return dataclasses.replace(record, preprocessing=eval_preprocessing(crop), license=license)

    def _save_final(self) -> None:
        self.model.pretrained_cfg = self.record()
        self.model.save_pretrained(self.out_dir)

    def _summary(self, stopped: str | None, resumed: bool) -> dict:
        summary = super()._summary(stopped, resumed)
        summary["folder"] = None if stopped else summary["output_dir"]
        metrics = summary["validation"].get("model") if summary["validation"] else None
        summary["top1"] = metrics["top1"] if metrics else None
        summary["classes"] = list(self.data.classes) if hasattr(self, "data") else None
        summary["resolution"] = self.config.data.crop_size
        summary["precision"] = self.precision.name if self.precision is not None else None
        return summary


def auto_resolution(model_resolution: int, samples: Sequence, probe: int = 64) -> int:
    """The model's resolution, or the median short side of (up to ``probe``) training images when that
    is smaller, rounded down to a multiple of 32 (at least 32): small images are not upsampled."""
    step = max(1, len(samples) // probe)
    sides = []
    for sample in list(samples)[::step][:probe]:
        with contextlib.suppress(Exception), Image.open(sample.path) as image:  # a bad file is reported later
            sides.append(min(image.size))
    if not sides:
        return model_resolution
    side = max(MIN_AUTO_RESOLUTION, int(median(sides)) // 32 * 32)
    return min(model_resolution, side)


def _load(spec: str, arch: "str | ArchConfig | None", seed: int, what: str) -> AlphaNet:
    parsed = WeightsSpec.parse(spec)
    resolved = resolve_arch(arch).validate() if arch is not None else None
    if parsed.kind == RANDOM and resolved is None:
        raise InputError(f"{what} random needs an architecture (arch=..., --arch)")
    with torch.random.fork_rng(devices=[]):  # random weights are a function of the seed
        torch.manual_seed(seed)
        return WeightsLoader(parsed).load(resolved, None)


def _split_data(data: str | os.PathLike, val: str | os.PathLike | None) -> tuple[Path, Path]:
    root = Path(data)
    if val is not None:
        return root, Path(val)
    if (root / "train").is_dir() and (root / "val").is_dir():
        return root / "train", root / "val"
    raise InputError(f"{root} has no train/ and val/ folders: give DIR with train/ and val/ class folders, or "
                     f"the training folder and the validation folder (--val)")


def _check_settings(**values: Any) -> None:
    """Each numeric setting a finite number (an integer where it counts) within its `RANGES` (None: unset)."""
    for name, value in values.items():
        if value is None:
            continue
        low, high, open_low = RANGES[name]
        integral = name in _INTEGERS
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not (number and (low < value if open_low else low <= value) and value <= high
                and (not integral or isinstance(value, int))):
            kind = "an integer" if integral else "a finite number"
            raise InputError(f"{name} must be {kind} in {'(' if open_low else '['}{low:g}, {high:g}], "
                             f"got {value!r}")


def _check_overrides(overrides: Sequence[str]) -> None:
    """No override may set what an argument of `finetune` sets (two values, one silently lost)."""
    for text in overrides:
        key = ".".join(parse_override(text)[0])
        if key in ARGUMENT_KEYS:
            raise InputError(f"override {text!r}: {key} is set by {ARGUMENT_KEYS[key]}; give it there, once")


def finetune(weights: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, *,
             arch: "str | ArchConfig | None" = None, val: str | os.PathLike | None = None,
             epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR, batch_size: int = DEFAULT_BATCH_SIZE,
             warmup_epochs: float = 1.0, label_smoothing: float = 0.1, freeze: str = "none",
             teacher: str | os.PathLike | None = None, teacher_arch: "str | ArchConfig | None" = None,
             distill: str | None = None, resolution: int | None = None, precision: str = "auto",
             seed: int = 0, workers: int = 0, device: str = "auto", max_steps: int | None = None,
             resume: "bool | str | os.PathLike" = True, overrides: Sequence[str] = (),
             progress: Callable[..., Any] | None = None) -> dict:
    """Fine-tune ``weights`` on the class folders ``data`` (``data/train`` and ``data/val``, or ``data``
    and ``val``); the result is the ``save_pretrained`` folder ``out``.

    ``lr`` is the peak rate at ``batch_size`` on one process (scaled linearly with more processes),
    reached after ``warmup_epochs`` and decayed on a cosine to 0 at ``epochs``. ``distill`` (alpha, kl,
    none; default alpha with a ``teacher``, else none) adds the distillation loss from ``teacher`` (a
    fine-tuned folder or any weights spec; ``teacher_arch`` where the spec needs one). ``resolution``
    None: the model's, or the training images' median short side when smaller (`auto_resolution`).
    ``precision`` auto | fp32 | bf16 | fp16 (`alphanet_zoo.train.precision`; auto: bf16 only where faster).
    ``overrides`` are `TrainConfig` keys (``optim.weight_decay=1e-4``). Rerun the same call to resume
    from ``out/checkpoint.pt`` (``resume=PATH``: from that checkpoint; False: refuse to continue one);
    ``max_steps`` stops (with a checkpoint) after that many steps.

    Returns the run's summary: ``folder`` (None when stopped), ``top1``, ``classes``, ``stopped``, ...
    """
    _check_settings(epochs=epochs, lr=lr, batch_size=batch_size, warmup_epochs=warmup_epochs,
                    label_smoothing=label_smoothing, resolution=resolution, max_steps=max_steps)
    _check_overrides(overrides)
    if teacher_arch is not None and teacher is None:
        raise InputError("teacher_arch (--teacher-arch) is the architecture of a teacher: give the teacher "
                         "(teacher=..., --teacher SPEC) or leave it out")
    train_dir, val_dir = _split_data(data, val)
    distill = distill or ("alpha" if teacher is not None else "none")
    settings = FinetuneSettings(weights=str(weights), data=str(train_dir), val=str(val_dir), distill=distill,
                                teacher=str(teacher) if teacher is not None else None, freeze=freeze,
                                max_steps=max_steps).check()
    train_data = training_data(train_dir)
    if len(train_data.classes) < 2:
        raise InputError(f"{train_dir} has one class folder ({train_data.classes[0]}): a classifier needs at least "
                         "two classes, one sub-folder of images each")
    config = TrainConfig.from_dict(apply_overrides({
        "output_dir": str(out), "epochs": epochs, "seed": seed, "device": device, "precision": precision,
        "log_every": 1,
        "checkpoint_every_steps": 50,
        "data": {"train": str(train_dir), "val": str(val_dir), "batch_size": batch_size, "workers": workers,
                 "auto_augment": None, "multi_resolution": False, "crop_scale": [0.25, 1.0]},
        "sandwich": {"label_smoothing": label_smoothing, "dropout": 0.0, "drop_connect": 0.0},
        "optim": {"lr_per_256": lr * 256 / batch_size, "warmup_epochs": min(warmup_epochs, epochs),
                  "weight_decay": 1e-5},
        "validation": {"every_epochs": 1, "calib_batches": 8, "calib_batch_size": 32, "batch_size": 64},
    }, overrides))
    model = _load(str(weights), arch, seed, "weights")
    teacher_model = _load(str(teacher), teacher_arch, seed, "teacher") if teacher is not None else None
    if resolution is None:
        resolution = auto_resolution(model.pretrained_cfg.preprocessing.resolution, train_data.samples)
    config.data.crop_size = int(resolution)
    tuner = FineTuner(config.check(), settings, model, teacher_model, resume=resume, progress=progress)
    return tuner.run()


__all__ = ["DEFAULT_EPOCHS", "DEFAULT_LR", "FineTuner", "FinetuneSettings", "auto_resolution", "finetune"]
