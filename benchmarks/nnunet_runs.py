"""nnU-Net's own commands for the benchmarks: a private nnU-Net environment in a work folder, schedule shims
(a trainer subclass that only sets epochs and iterations), and a logged subprocess runner."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def nnunet_env(out: Path, device: str) -> dict:
    """``os.environ`` with ``nnUNet_raw`` / ``_preprocessed`` / ``_results`` inside ``out`` (created), no
    ``torch.compile``, in-process data augmentation on the CPU, ``out/trainers`` on ``nnUNet_extTrainer``
    and this repository on ``PYTHONPATH``."""
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (out / name).mkdir(parents=True, exist_ok=True)
        env[name] = str(out / name)
    env.setdefault("nnUNet_compile", "false")
    if device == "cpu":
        env.setdefault("nnUNet_n_proc_DA", "0")
        env.setdefault("nnUNet_def_n_proc", "1")
    ext = [p for p in env.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    env["nnUNet_extTrainer"] = os.pathsep.join([str(out / "trainers"), *ext])
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    return env


def schedule_trainer(folder: Path, base: str, epochs: int, iterations: int) -> str:
    """Write a shim ``<base>_offgrid<E>x<I>`` that only sets the schedule; return its name."""
    name = f"{base}_offgrid{epochs}x{iterations}"
    folder.mkdir(parents=True, exist_ok=True)
    # this plugin's trainers each have a one-line shim module of their own name; nnU-Net's stock trainer otherwise
    plugin = Path(__file__).resolve().parent.parent / "nnunet_equivariant" / "trainer_shims" / f"{base}.py"
    module = f"nnunet_equivariant.trainer_shims.{base}" if plugin.is_file() else "nnunetv2.training.nnUNetTrainer.nnUNetTrainer"
    # nnU-Net records the constructor's arguments by name: the signature must stay exactly nnU-Net's
    (folder / f"{name}.py").write_text(
        f"import torch\n\nfrom {module} import {base}\n\n\n"
        f"class {name}({base}):\n"
        f"    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,\n"
        f"                 device: torch.device = torch.device('cuda')):\n"
        f"        super().__init__(plans, configuration, fold, dataset_json, device)\n"
        f"        self.num_epochs = {epochs}\n"
        f"        self.num_iterations_per_epoch = {iterations}\n"
        f"        self.num_val_iterations_per_epoch = {max(1, iterations // 5)}\n")
    return name


def run_command(env: dict, *cmd, log: Path) -> float:
    """Run an nnU-Net console command (from this interpreter's environment when it is there), output
    appended to ``log``; return its wall-clock seconds. ``RuntimeError`` naming the log on failure."""
    exe = Path(sys.executable).parent / str(cmd[0])
    args = [str(exe) if exe.exists() else str(cmd[0]), *map(str, cmd[1:])]
    print(f"[bench] {' '.join(args)}", flush=True)
    start = time.time()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(args)}\n")
        f.flush()
        proc = subprocess.run(args, env=env, stdout=f, stderr=subprocess.STDOUT, check=False)
    seconds = time.time() - start
    print(f"[bench]   {seconds:.0f} s", flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed with exit code {proc.returncode}; see {log}")
    return seconds
