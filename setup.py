"""setup.cfg is the metadata; this file only ships ``alphanet_zoo_timm.pth``, the timm start-up hook.

The ``.pth`` goes to the root of site-packages, where ``site`` runs it at every interpreter start:
through ``build_lib`` for a wheel, and for ``pip install -e`` into the folder that setuptools'
editable_wheel packs as the editable wheel (it keeps nothing of ``build_lib``: modules are served
from the source tree).
"""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "alphanet_zoo_timm.pth"


class BuildPyWithPth(build_py):
    """build_py, plus the start-up hook's ``.pth`` beside the top-level modules."""

    def run(self):
        super().run()
        target = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        self.copy_file(PTH, os.path.join(target, PTH), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else [*outputs, os.path.join(self.build_lib, PTH)]


setup(cmdclass={"build_py": BuildPyWithPth})
