"""The published AlphaNet models in timm's registry: ``timm.create_model("alphanet_a0", ...)``.

Imported by ``alphanet_zoo/__init__.py`` only when timm is installed; it registers one entry
point per published model (``alphanet_a0`` .. ``alphanet_a6``, ``alphanet_a5_base``) with a
``pretrained_cfg`` made from the model's record (`ModelRecord.timm_cfg`): input size, crop,
normalisation, layer names and the Hub repository of the registry. The factory is ours, not
timm's ``build_model_with_cfg``: it translates timm's arguments (``num_classes``, ``global_pool``,
``drop_rate``, ``drop_path_rate``, ``features_only``, ``out_indices``; ``in_chans`` must be 3) into
one call of `alphanet_zoo.load`, the package's one factory, which builds the model once, with the
registry's weights when ``pretrained=True``.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from timm.models import register_model

from .errors import InputError
from .feature_info import DEFAULT_OUT_INDICES
from .features import AlphaNetFeatures
from .model import AlphaNet
from .record import ModelRecord, Origin
from .registry import MODELS, list_models
from .weights import load

log = logging.getLogger("alphanet_zoo")

FEATURE_CLASSES = (None, "list", "getter")  # all give AlphaNetFeatures: a list of maps


def timm_name(name: str) -> str:
    """The timm model name of a registry name: ``alphanet_a5_base``."""
    return f"alphanet_{name}"


def pretrained_cfg(name: str) -> dict[str, Any]:
    """The ``pretrained_cfg`` timm registers for the published model ``name`` (its weights' record)."""
    info = MODELS[name]
    record = ModelRecord.create(info.arch, name=name, origin=Origin.EXTRACTED, license=info.weights.license,
                                source=info.weights.source)
    return record.timm_cfg()


def create_alphanet(name: str, pretrained: bool = False, *, pretrained_cfg: Any = None,
                    pretrained_cfg_overlay: dict | None = None, cache_dir: Any = None, num_classes: int = 1000,
                    global_pool: str = "avg", in_chans: int = 3, drop_rate: float = 0.0,
                    drop_path_rate: float = 0.0, features_only: bool = False,
                    out_indices: Sequence[int] = DEFAULT_OUT_INDICES, feature_cls: str | None = None,
                    feature_cfg: dict | None = None) -> AlphaNet | AlphaNetFeatures:
    """The published model ``name`` as ``timm.create_model`` gives it (in train mode, as timm's are)."""
    if in_chans != 3:
        raise InputError(f"AlphaNet takes RGB images: in_chans must be 3, got {in_chans}")
    if pretrained_cfg not in (None, "") or pretrained_cfg_overlay:
        raise InputError("AlphaNet models have one pretrained_cfg, made from their record; it takes no "
                         "pretrained tag, pretrained_cfg or overlay")
    feature_cfg = dict(feature_cfg or {})
    out_indices = feature_cfg.pop("out_indices", out_indices)
    feature_cls = feature_cfg.pop("feature_cls", feature_cls)
    if feature_cfg or feature_cls not in FEATURE_CLASSES:
        raise InputError(f"unsupported feature options: {dict(feature_cfg, feature_cls=feature_cls)}")
    if pretrained and cache_dir is not None:
        log.warning("cache_dir is ignored: alphanet_zoo keeps Hub downloads in the Hub cache (HF_HUB_CACHE)")
    model = load(MODELS[name].arch, pretrained=bool(pretrained), num_classes=num_classes, global_pool=global_pool,
                 drop_rate=drop_rate, drop_connect_rate=drop_path_rate, features_only=features_only,
                 out_indices=out_indices)
    return model.train()


def _entry_point(name: str) -> Callable[..., AlphaNet | AlphaNetFeatures]:
    def create(pretrained: bool = False, **kwargs: Any) -> AlphaNet | AlphaNetFeatures:
        return create_alphanet(name, pretrained, **kwargs)

    create.__name__ = create.__qualname__ = timm_name(name)
    create.__module__ = __name__
    create.__doc__ = f"AlphaNet-{name.upper()} ({MODELS[name].published_mflops} MFLOPs in the paper)."
    return create


#: Read by timm's ``register_model``: the pretrained_cfg of each entry point, by its name.
default_cfgs = {timm_name(name): pretrained_cfg(name) for name in list_models()}

for _name in list_models():
    _fn = _entry_point(_name)
    globals()[_fn.__name__] = _fn  # register_model lists the name in this module's __all__
    register_model(_fn)
