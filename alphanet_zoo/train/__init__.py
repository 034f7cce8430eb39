"""Alpha-divergence supernet training with the sandwich rule.

    import random
    from alphanet_zoo import Supernet
    from alphanet_zoo.train import build_optimizer, sample_sandwich, sandwich_step, use_training_layout

    supernet = use_training_layout(Supernet(), "cpu")  # channels-last but the stem, as alphanet-train
    optimizer = build_optimizer(supernet, lr=0.1)       # no weight decay on BN parameters and biases
    archs = sample_sandwich(random.Random(0))           # largest, 2 random, smallest
    out = sandwich_step(supernet, images, targets, archs, optimizer)
    out["losses"], out["grad_norm"]

The ``alphanet-train`` command (`alphanet_zoo.commands.train`) runs the whole recipe under torchrun:
`Trainer` with a `TrainConfig` read from YAML (`load_config`).
"""
from .config import BUNDLED_CONFIGS, TrainConfig, load_config
from .schedule import WarmupCosineSchedule, scaled_lr, warmup_cosine
from .precision import use_training_layout
from .step import all_reduce_gradients, build_optimizer, no_weight_decay, sample_sandwich, sandwich_step

__all__ = [
    "BUNDLED_CONFIGS", "TrainConfig", "Trainer", "WarmupCosineSchedule", "all_reduce_gradients", "build_optimizer",
    "load_config", "no_weight_decay", "sample_sandwich", "sandwich_step", "scaled_lr", "use_training_layout",
    "warmup_cosine",
]


def __getattr__(name: str):
    # the trainer pulls in data loading (torchvision, PIL); import it only when asked for
    if name == "Trainer":
        from .trainer import Trainer

        return Trainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
