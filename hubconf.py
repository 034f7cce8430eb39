"""torch.hub entry points: ``torch.hub.load("<owner>/alphanet_zoo", "alphanet_a5", pretrained=True)``.

Each entry is one call of `alphanet_zoo.load`, the package's one factory (the model is built once);
``supernet`` loads a supernet checkpoint.
"""
dependencies = ["torch", "torchvision", "safetensors", "huggingface_hub", "PIL"]

import alphanet_zoo  # noqa: E402


def _entry(name: str):
    def build(pretrained: bool = False, **kwargs):
        return alphanet_zoo.load(name, pretrained=pretrained, **kwargs)

    build.__name__ = f"alphanet_{name}"
    build.__doc__ = (f"AlphaNet-{name.upper()} ({alphanet_zoo.model_info(name).mflops:.0f} MFLOPs); "
                     f"kwargs as alphanet_zoo.load (weights=, revision=, num_classes=, features_only=, ...).")
    return build


for _name in alphanet_zoo.list_models():
    globals()[f"alphanet_{_name}"] = _entry(_name)


def supernet(checkpoint: str | None = None, **kwargs):
    """The AlphaNet supernet: from a checkpoint path (official layout or ours), else randomly initialised."""
    if checkpoint is None:
        return alphanet_zoo.Supernet(**kwargs)
    return alphanet_zoo.Supernet.from_checkpoint(checkpoint)
