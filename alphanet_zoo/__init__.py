"""alphanet_zoo: AlphaNet models, the weight-sharing supernet, extraction, FLOPs and more.

    >>> import alphanet_zoo
    >>> model = alphanet_zoo.AlphaNet("a0")          # a standalone subnet
    >>> supernet = alphanet_zoo.Supernet.from_checkpoint("alphanet_pretrained.pth.tar")
    >>> a5 = supernet.extract("a5")                   # its weights, sliced from the supernet
    >>> alphanet_zoo.count_flops("a5")                # 491.48 MFLOPs, the paper's convention
    >>> model = alphanet_zoo.load("a5", weights="weights/a5")   # a folder alphanet-extract wrote
    >>> features = alphanet_zoo.load("a0", features_only=True)   # feature maps at strides 4, 8, 16, 32
    >>> alphanet_zoo.finetune("random", "data", "runs/mine", arch="a0")   # class folders data/train, data/val

With timm installed, importing the package registers the published models with timm
(``timm.create_model("alphanet_a0")``; `alphanet_zoo.timm_models`), when timm is first imported
(`alphanet_zoo.timm_hook`), so a process that never uses timm does not load it.
"""
import importlib
import logging

logging.getLogger("alphanet_zoo").addHandler(logging.NullHandler())

from ._version import __version__  # noqa: E402, F401  (the package's version, defined in one place)
from .calibration import calibrate_bn  # noqa: E402
from .checkpoint import CheckpointError  # noqa: E402
from .config import SEARCH_SPACE, ArchConfig, SearchSpace, StageSpace  # noqa: E402
from .errors import AlphaNetError, InputError, OutputError  # noqa: E402
from .feature_info import FeatureInfo  # noqa: E402
from .features import AlphaNetFeatures  # noqa: E402
from .flops import count_flops, count_flops_fvcore, count_params  # noqa: E402
from .hub import WeightsIntegrityError, WeightsUnavailableError  # noqa: E402
from .model import AlphaNet  # noqa: E402
from .prediction import predict  # noqa: E402
from .preprocessing import Preprocessing, transforms  # noqa: E402
from .record import Calibration, Measurement, ModelRecord  # noqa: E402
from .registry import MODELS, ModelInfo, WeightsInfo, get_arch, list_models, model_info, resolve_arch  # noqa: E402
from .supernet import Supernet  # noqa: E402
from .weights import WeightsSpec, load  # noqa: E402

from .timm_hook import register_when_timm_loads  # noqa: E402

register_when_timm_loads()  # with timm installed, the published models are registered with it

__all__ = [
    "AlphaNet", "AlphaNetError", "AlphaNetFeatures", "ArchConfig", "Calibration", "CheckpointError", "FeatureInfo",
    "InputError", "MODELS", "Measurement", "ModelInfo", "ModelRecord", "OutputError", "Preprocessing", "SEARCH_SPACE",
    "SearchSpace", "StageSpace", "Supernet", "WeightsInfo", "WeightsIntegrityError", "WeightsSpec",
    "WeightsUnavailableError", "calibrate_bn", "count_flops", "count_flops_fvcore", "count_params", "get_arch",
    "list_models", "load", "model_info", "predict", "resolve_arch", "transforms", "finetune", "search_front",
    "predict_dataset",
]

#: Names served from the upper layers on first use, so that ``import alphanet_zoo`` loads no training code.
_LAZY_EXPORTS = {"finetune": "alphanet_zoo.train.finetune", "search_front": "alphanet_zoo.search.run",
                 "predict_dataset": "alphanet_zoo.eval.labelling"}


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
