"""The finder that registers alphanet_zoo's models with timm right after ``import timm``: one implementation.

A top-level module, outside the package, so that ``alphanet_zoo_timm.pth`` can put the finder on
``sys.meta_path`` at every interpreter start (`install_at_startup`) without importing alphanet_zoo or
torch: it imports nothing that the interpreter has not already loaded, and timm's own scripts
(``train.py --model alphanet_a0``) find our models with no wrapper. `alphanet_zoo.timm_hook` installs
the same finder when the package is imported. ``ALPHANET_ZOO_NO_TIMM_HOOK=1`` switches the start-up
hook off; importing alphanet_zoo still registers the models.
"""
import os
import sys

OFF_SWITCH = "ALPHANET_ZOO_NO_TIMM_HOOK"
REGISTRY_MODULE = "alphanet_zoo.timm_models"  # importing it registers the models with timm


class _RegisterAfterLoad:
    """timm's own loader, followed by the registration; every other attribute is the wrapped loader's."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        # a user who imported alphanet_zoo wants its errors; a process that only met the start-up hook
        # must still get a working timm when alphanet_zoo is broken
        strict = "alphanet_zoo" in sys.modules
        self.loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self.loader  # timm as if we had never been there
        import importlib

        try:
            importlib.import_module(REGISTRY_MODULE)
        except Exception:
            if strict:
                raise
            import logging

            logging.getLogger("alphanet_zoo").warning(
                "could not register the AlphaNet models with timm (%s=1 turns this start-up hook off)",
                OFF_SWITCH, exc_info=True)


class TimmFinder:
    """First on ``sys.meta_path``: finds timm as the other finders would, once, and wraps its loader."""

    def find_spec(self, name, path=None, target=None):
        if name != "timm":
            return None
        uninstall()  # one shot; the other finders find timm
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfterLoad(spec.loader)
        return spec


def installed() -> bool:
    """Whether the finder waits on ``sys.meta_path``."""
    return any(isinstance(finder, TimmFinder) for finder in sys.meta_path)


def install() -> bool:
    """Put the finder first on ``sys.meta_path`` unless timm is imported already or it is there; True if put."""
    if "timm" in sys.modules or installed():
        return False
    sys.meta_path.insert(0, TimmFinder())
    return True


def uninstall() -> None:
    """Take the finder off ``sys.meta_path``."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, TimmFinder)]


def install_at_startup() -> None:
    """What ``alphanet_zoo_timm.pth`` runs: `install`, unless ``ALPHANET_ZOO_NO_TIMM_HOOK`` is set (not "0")."""
    if os.environ.get(OFF_SWITCH, "0") in ("", "0"):
        install()
