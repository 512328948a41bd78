"""Start-up hook of nnunet-equivariant, run by ``nnunet_equivariant_trainers.pth`` at interpreter start.

It appends the plugin's trainer-shim folder (``nnunet_equivariant/trainer_shims``) to ``nnUNet_extTrainer`` so
that ``nnUNetv2_train ... -tr nnUNetTrainerE3nn`` and ``nnUNetv2_predict ... -tr ...`` find our trainers
with no configuration. A user's own entries are kept (ours goes last) and the folder is added only once,
so child processes that inherit the variable do not grow it. The package itself is not imported here:
``importlib.util.find_spec`` only locates it, which keeps interpreter start-up cheap.
"""
import importlib.util
import os


def _register_trainer_folder() -> None:
    try:
        spec = importlib.util.find_spec("nnunet_equivariant")
    except (ImportError, ValueError):
        return
    if spec is None or not spec.submodule_search_locations:
        return
    folder = os.path.join(os.path.abspath(list(spec.submodule_search_locations)[0]), "trainer_shims")
    if not os.path.isdir(folder):
        return
    entries = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p.strip()]
    if os.path.normcase(folder) not in {os.path.normcase(os.path.abspath(p)) for p in entries}:
        entries.append(folder)
    os.environ["nnUNet_extTrainer"] = os.pathsep.join(entries)


_register_trainer_folder()
