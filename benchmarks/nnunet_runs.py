"""nnU-Net's own commands for the benchmarks: a private nnU-Net environment in a work folder, schedule shims
(a trainer subclass that only sets epochs and iterations), and a logged subprocess runner.

A trainer may be named with fields of its ``E3nnSpec`` replaced or trainer attributes set, for variants that
have no trainer of their own: ``nnUNetTrainerE3nnConsistency[kernel_size=3,consistency_weight=0.5]`` (the
shim's class sets ``spec = replace(base.spec, kernel_size=3)``, its ``__init__`` ``self.consistency_weight =
0.5`` after nnU-Net's; its name: ``..._kernel_size3_consistency_weight0p5``), or
``nnUNetTrainerVanillaAdam[initial_lr=0.005]`` (any of nnU-Net's trainers)."""
from __future__ import annotations

import os
import re
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


def _base_module(base: str) -> str:
    """Module of a trainer: this plugin's trainers each have a one-line shim module of their own name;
    nnU-Net's own trainers (``nnUNetTrainer``, ``nnUNetTrainerVanillaAdam``, ...) are found as
    ``nnUNetv2_train`` finds them. ``ValueError`` naming the trainer if neither has it."""
    plugin = Path(__file__).resolve().parent.parent / "nnunet_equivariant" / "trainer_shims" / f"{base}.py"
    if plugin.is_file():
        return f"nnunet_equivariant.trainer_shims.{base}"
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    found = recursive_find_python_class(str(Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer"), base,
                                        "nnunetv2.training.nnUNetTrainer")
    if found is None:
        raise ValueError(f"trainer {base!r}: neither this plugin nor nnU-Net has it")
    return found.__module__


def parse_variant(trainer: str) -> tuple[str, dict]:
    """``"Base[field=value,...]"`` -> ``("Base", {field: value})`` (values: int, float or string); a plain
    trainer name -> ``(name, {})``. ``ValueError`` naming the trainer if the brackets do not parse."""
    match = re.fullmatch(r"(\w+)(?:\[([^\]]*)\])?", trainer)
    if match is None:
        raise ValueError(f"trainer {trainer!r}: expected NAME or NAME[field=value,...]")
    fields = {}
    for item in filter(None, (match.group(2) or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"trainer {trainer!r}: {item!r} is not field=value")
        for kind in (int, float, str):
            try:
                fields[key.strip()] = kind(value.strip())
                break
            except ValueError:
                continue
    return match.group(1), fields


def variant_name(trainer: str) -> str:
    """A Python name for ``trainer`` (see :func:`parse_variant`): the base, then ``_<field><value>`` each."""
    base, fields = parse_variant(trainer)
    return base + "".join(f"_{k}{re.sub(r'[^0-9A-Za-z]', 'p', str(v))}" for k, v in fields.items())


def _write_shim(folder: Path, name: str, trainer: str, body: str, bases: str = "", imports: str = "") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    base, fields = parse_variant(trainer)
    from dataclasses import fields as dataclass_fields

    from nnunet_equivariant.networks.e3nn_spec import E3nnSpec

    in_spec = {f.name for f in dataclass_fields(E3nnSpec)}
    # trainer attributes on the class (classmethods such as get_training_transforms read them there) and again
    # after nnU-Net's __init__ (which sets initial_lr and the schedule on the instance); spec on the class
    attributes = {k: v for k, v in fields.items() if k not in in_spec}
    body = "".join(f"        self.{k} = {v!r}\n" for k, v in attributes.items()) + body
    replaced = {k: v for k, v in fields.items() if k in in_spec}
    spec = "".join(f"    {k} = {v!r}\n" for k, v in attributes.items())
    if replaced:
        imports += "from dataclasses import replace\n"
        spec += f"    spec = replace({base}.spec, {', '.join(f'{k}={v!r}' for k, v in replaced.items())})\n"
    spec += "\n" if spec else ""
    # nnU-Net records the constructor's arguments by name: the signature must stay exactly nnU-Net's
    (folder / f"{name}.py").write_text(
        f"import random\n\nimport numpy as np\nimport torch\n\nfrom {_base_module(base)} import {base}\n{imports}\n\n"
        f"class {name}({bases}{base}):\n{spec}"
        f"    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,\n"
        f"                 device: torch.device = torch.device('cuda')):\n"
        f"        super().__init__(plans, configuration, fold, dataset_json, device)\n{body}")
    return name


def _seed_lines(seed: int | None) -> str:
    """Seeds torch, numpy and python before nnU-Net builds the network (``on_train_start``) and draws its
    augmentation (in-process on the CPU): the initial weights and the batches follow the seed."""
    if seed is None:
        return ""
    return f"        torch.manual_seed({seed})\n        np.random.seed({seed})\n        random.seed({seed})\n"


def schedule_trainer(folder: Path, base: str, epochs: int, iterations: int, seed: int | None = None) -> str:
    """Write a shim ``<base>_offgrid<E>x<I>[_seed<S>]`` that only sets the schedule (and seeds); return its name."""
    name = f"{variant_name(base)}_offgrid{epochs}x{iterations}" + ("" if seed is None else f"_seed{seed}")
    return _write_shim(folder, name, base,
                       f"        self.num_epochs = {epochs}\n"
                       f"        self.num_iterations_per_epoch = {iterations}\n"
                       f"        self.num_val_iterations_per_epoch = {max(1, iterations // 5)}\n" + _seed_lines(seed))


def budget_trainer(folder: Path, base: str, seconds: float, iterations: int, seed: int | None = None,
                   clock: str = "wall") -> str:
    """Write a shim ``<base>_budget<S>s[cpu][_seed<S>]`` that trains for ``seconds`` on ``clock`` ("wall" or
    "cpu") in epochs of ``iterations`` iterations (``WallClockBudgetMixin``: poly learning rate over the
    budget); return its name."""
    name = (f"{variant_name(base)}_budget{seconds:g}s".replace(".", "p") + ("cpu" if clock == "cpu" else "")
            + ("" if seed is None else f"_seed{seed}"))
    return _write_shim(folder, name, base,
                       f"        self.training_budget_s = {float(seconds)}\n"
                       f"        self.budget_clock = {clock!r}\n"
                       "        self.num_epochs = 10 ** 6  # only the loop's length: the budget ends training\n"
                       f"        self.num_iterations_per_epoch = {iterations}\n"
                       f"        self.num_val_iterations_per_epoch = {max(1, iterations // 5)}\n" + _seed_lines(seed),
                       bases="WallClockBudgetMixin, ",
                       imports="from nnunet_equivariant.training.budget import WallClockBudgetMixin\n")


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
