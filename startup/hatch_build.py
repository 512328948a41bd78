"""Hatch build hook: ship the start-up hook at the top of site-packages (wheel and editable)."""
from hatchling.builders.hooks.plugin.interface import BuildHookInterface

STARTUP_FILES = {
    "startup/nnunet_equivariant_trainers.pth": "nnunet_equivariant_trainers.pth",
    "startup/_nnunet_equivariant_startup.py": "_nnunet_equivariant_startup.py",
}


class StartupHook(BuildHookInterface):
    def initialize(self, version, build_data):
        key = "force_include_editable" if version == "editable" else "force_include"
        build_data[key].update({self.root + "/" + src: dst for src, dst in STARTUP_FILES.items()})
