"""alphanet_zoo: AlphaNet models, the weight-sharing supernet, extraction, FLOPs and more.

    >>> import alphanet_zoo
    >>> model = alphanet_zoo.AlphaNet("a0")          # a standalone subnet
    >>> supernet = alphanet_zoo.Supernet.from_checkpoint("alphanet_pretrained.pth.tar")
    >>> a5 = supernet.extract("a5")                   # its weights, sliced from the supernet
    >>> alphanet_zoo.count_flops("a5")                # 491.48 MFLOPs, the paper's convention
    >>> model = alphanet_zoo.load("a5", pretrained=True)  # BN-calibrated weights from the Hub
"""
from .calibration import calibrate_bn
from .checkpoint import CheckpointError
from .config import SEARCH_SPACE, ArchConfig, SearchSpace, StageSpace
from .flops import count_flops, count_flops_fvcore
from .hub import WeightsIntegrityError, WeightsUnavailableError, load
from .model import AlphaNet
from .predict import predict
from .registry import MODELS, ModelInfo, WeightsInfo, get_arch, list_models, model_info, resolve_arch
from .supernet import Supernet
from .transforms import Preprocessing, transforms

__version__ = "0.1.0"

__all__ = [
    "AlphaNet", "ArchConfig", "CheckpointError", "MODELS", "ModelInfo", "Preprocessing", "SEARCH_SPACE",
    "SearchSpace", "StageSpace", "Supernet", "WeightsInfo", "WeightsIntegrityError", "WeightsUnavailableError",
    "calibrate_bn", "count_flops", "count_flops_fvcore", "get_arch", "list_models", "load", "model_info",
    "predict", "resolve_arch", "transforms",
]
