"""The start-up hook makes nnU-Net find our trainers with no configuration, for editable and wheel installs."""
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import nnunet_equivariant

REPO = Path(__file__).resolve().parents[1]
SHIMS = Path(nnunet_equivariant.__file__).resolve().parent / "trainer_shims"
PRINT_VAR = "import os; print(os.environ.get('nnUNet_extTrainer', ''))"


def _fresh_python(code: str, python: str = sys.executable, **env_overrides) -> str:
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    env.update(env_overrides)
    out = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, check=True, cwd="/")
    return out.stdout.strip().splitlines()[-1]


def test_hook_appends_the_shim_folder_and_keeps_user_entries(tmp_path):
    assert _fresh_python(PRINT_VAR) == str(SHIMS), "a fresh interpreter registers the shim folder"
    user = os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")])
    assert _fresh_python(PRINT_VAR, nnUNet_extTrainer=user) == user + os.pathsep + str(SHIMS), \
        "the user's entries are kept, ours goes last"
    again = user + os.pathsep + str(SHIMS)
    assert _fresh_python(PRINT_VAR, nnUNet_extTrainer=again) == again, "child processes do not grow the list"


def test_shim_folder_holds_only_one_line_shims():
    others = [p.name for p in SHIMS.iterdir() if p.suffix != ".py" and p.name != "__pycache__"]
    assert not others, f"nnU-Net searches {SHIMS.name}/ for trainers: nothing but shims belongs there, found {others}"
    for shim in SHIMS.glob("*.py"):
        lines = [ln for ln in shim.read_text().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("from nnunet_equivariant.training."), \
            f"{shim.name} is a one-line re-export from the package"
        assert lines[0].split(" import ")[1].split()[0] == shim.stem, f"{shim.name} exports its own name"
        assert "__" not in shim.stem, "nnU-Net's result folders use '__' as a separator"


def test_nnunet_finds_our_trainer_in_a_fresh_process():
    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find;"
            "c = find('nnUNetTrainerMirror'); print(c.__module__)")
    assert _fresh_python(code) == "nnunet_equivariant.training.mirror"


def test_regular_wheel_install_registers_its_own_shims(tmp_path):
    pytest.importorskip("hatchling")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("nnunet_equivariant-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"nnunet_equivariant_trainers.pth", "_nnunet_equivariant_startup.py"} <= names
    assert {f"nnunet_equivariant/trainer_shims/{p.name}" for p in SHIMS.glob("*.py")} <= names, "shims are shipped"

    # a fresh venv with the wheel; heavy dependencies are borrowed from this environment via a path line
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = _fresh_python("import sysconfig; print(sysconfig.get_paths()['purelib'])", python)
    Path(site, "zz_borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, str(wheel)],
                   check=True, capture_output=True)
    installed = Path(site) / "nnunet_equivariant" / "trainer_shims"
    assert _fresh_python(PRINT_VAR, python) == str(installed), "the wheel's hook registers the wheel's shims"
