"""``nnunet-equivariant demo``: the whole pose-robustness comparison on a built-in dataset, no download.

1. Writes a synthetic dataset where pose matters: rods (label 1) and discs (label 2) of equal intensity,
   all aligned with the x axis in training, rendered band-limited (``DEMO_GEOMETRY``,
   ``nnunet_equivariant.synthetic``).
2. Plans and preprocesses it with ``nnUNetPlannerEquivariant`` (``nnUNetPlansEquivariant``).
3. Trains fold 0 of ``nnUNetTrainerE3nn`` (steerable; rotations only within 45 degrees of its exact grid
   rotations, about one axis) and of
   ``nnUNetTrainerNoRot`` (stock nnU-Net without rotation augmentation), or of the ``trainers`` asked for
   (``--trainers``, e.g. ``nnUNetTrainerE3nnLean`` beside them), with a short schedule (see
   ``DemoSchedule``), through nnU-Net's own trainer, then nnU-Net's final validation of the fold.
4. Runs ``nnunet-equivariant compare`` (:mod:`nnunet_equivariant.evaluation.compare`) on the models
   (non-steerable first: the cost ratios are against the first): accuracy from nnU-Net's validation, Dice
   against rotation in the axial plane on the test cases, and cost; prints where the report and the plots
   are.

Everything lives under the output folder, including nnU-Net's ``nnUNet_raw``, ``nnUNet_preprocessed`` and
``nnUNet_results`` (set for this process), so it works in a fresh shell and the trained models can be used
with nnU-Net's commands afterwards. The schedule depends on the device: ``quick`` (a smoke run, minutes),
``cpu`` (about 4 minutes on 2 idle cores) or ``gpu`` (longer, better converged).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from nnunet_equivariant.synthetic import RodsAndDiscs, write_rods_and_discs_dataset

__all__ = ["DemoSchedule", "SCHEDULES", "run_demo", "DEMO_DATASET_ID", "DEMO_TRAINERS"]

DEMO_DATASET_ID = 990
DEMO_TRAINERS = ("nnUNetTrainerE3nn", "nnUNetTrainerNoRot")
# Shapes thick enough (rods 5 mm across, discs 4 mm thick at 1 mm voxels) to be seen by 5-voxel kernels
# after pooling, placed by their bounding boxes so a rod and a disc fit beside each other in 24^3, and
# rendered band-limited: smooth partial-volume edges (0.8 mm) and noise smoothed by 0.7 mm. Hard binary
# shapes in white noise look different on the grid after a rotation off the grid (their staircase edges
# and the noise change character), and a steerable network trained in one pose picks up such grid cues:
# its Dice then dips between the 90-degree rotations (docs/rotation_eval.md, "What the CPU demo shows").
DEMO_GEOMETRY = RodsAndDiscs(rod_length=16.0, rod_radius=2.5, disc_radius=6.0, disc_thickness=4.0,
                             edge_width=0.8, noise_smoothing=0.7, tight_placement=True)


@dataclass(frozen=True)
class DemoSchedule:
    """Dataset size, training length (epochs per trainer) and evaluation angles of one demo run.

    The steerable network gets more epochs: it has to find orientation-free shape features (rods against
    discs), while the baseline can use "long along x", which is what the demo exposes. On the CPU schedule
    ``nnUNetTrainerE3nn`` (Adam 5e-3, poly decay) separates rods from discs within the first epoch.
    ``epochs`` names ``nnUNetTrainerE3nn`` and ``nnUNetTrainerNoRot``; other trainers get the epochs of the
    class they derive from (:meth:`epochs_for`), so a variant is compared on its parent's schedule.
    """

    num_train: int
    num_test: int
    shape: tuple[int, int, int]
    epochs: dict
    iterations_per_epoch: int
    angles: tuple[float, ...]

    def epochs_for(self, trainer_class: type) -> int:
        """Epochs of ``trainer_class``: its own entry, else that of the nearest class in its MRO with one,
        else ``nnUNetTrainerNoRot``'s (stock nnU-Net's subclasses: the baseline's schedule)."""
        for cls in trainer_class.__mro__:
            if cls.__name__ in self.epochs:
                return self.epochs[cls.__name__]
        return self.epochs["nnUNetTrainerNoRot"]


SCHEDULES = {
    "quick": DemoSchedule(num_train=5, num_test=2, shape=(24, 24, 24), iterations_per_epoch=2,
                          epochs={"nnUNetTrainerE3nn": 1, "nnUNetTrainerNoRot": 1}, angles=(0, 45, 90)),
    "cpu": DemoSchedule(num_train=12, num_test=4, shape=(24, 24, 24), iterations_per_epoch=25,
                        epochs={"nnUNetTrainerE3nn": 12, "nnUNetTrainerNoRot": 5},
                        angles=(0, 15, 30, 45, 60, 75, 90)),
    "gpu": DemoSchedule(num_train=24, num_test=6, shape=(32, 32, 32), iterations_per_epoch=50,
                        epochs={"nnUNetTrainerE3nn": 100, "nnUNetTrainerNoRot": 50},
                        angles=(0, 15, 30, 45, 60, 75, 90, 120, 150, 180)),
}


def run_demo(output: str | os.PathLike = "nnunet_equivariant_demo", quick: bool = False, device: str | None = None,
             overwrite: bool = False, schedule: DemoSchedule | None = None,
             trainers: Sequence[str] = DEMO_TRAINERS):
    """Run the demo into ``output`` and return compare's ``CompareResult`` (report, CSV paths).

    ``schedule``: default ``SCHEDULES["quick"]`` with ``quick``, else ``"gpu"`` or ``"cpu"`` by device.
    ``trainers``: nnU-Net trainer names (at least one; ``ValueError`` naming one nnU-Net cannot find, before
    anything is written)."""
    import torch

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if schedule is None:
        schedule = SCHEDULES["quick" if quick else "gpu" if device.type == "cuda" else "cpu"]
    classes = _trainer_classes(trainers)
    output = Path(output).resolve()
    if output.exists() and any(output.iterdir()):
        if not overwrite:
            raise FileExistsError(f"demo output folder {output} is not empty; pass --overwrite to replace it")
        shutil.rmtree(output)
    _set_nnunet_environment(output, device)

    from nnunet_equivariant.evaluation.compare import compare
    from nnunet_equivariant.planning.plan_and_preprocess import plan_and_preprocess

    print(f"[demo] 1/4 writing the synthetic dataset ({schedule.num_train} training, {schedule.num_test} test cases)")
    write_rods_and_discs_dataset(output / "nnUNet_raw", DEMO_DATASET_ID, name="RodsDiscsDemo",
                                 num_train=schedule.num_train, num_test=schedule.num_test, shape=schedule.shape,
                                 train_orientation="fixed", test_orientation="fixed", seed=1, geometry=DEMO_GEOMETRY)
    print("[demo] 2/4 planning and preprocessing with nnUNetPlannerEquivariant")
    plans = plan_and_preprocess(DEMO_DATASET_ID, num_processes=min(4, os.cpu_count() or 1))
    for i, (trainer, cls) in enumerate(classes.items()):
        print(f"[demo] 3/4 training {trainer} ({i + 1}/{len(classes)}): {schedule.epochs_for(cls)} epochs of "
              f"{schedule.iterations_per_epoch} iterations on {device.type}")
        _train(trainer, plans, schedule.epochs_for(cls), schedule, device)
    print("[demo] 4/4 compare: validation Dice, Dice against rotation angle in the axial plane, cost")
    from nnunet_equivariant.training.e3nn import nnUNetTrainerE3nn

    ordered = sorted(classes, key=lambda t: issubclass(classes[t], nnUNetTrainerE3nn))  # stock first: ratios
    flags = "".join([" --quick" if quick else "", f" --trainers {' '.join(classes)}"
                     if tuple(classes) != DEMO_TRAINERS else ""])
    result = compare(DEMO_DATASET_ID, ordered, output / "compare", plans=[plans], folds=[0],
                     planes=["axial"], angles=schedule.angles, device=str(device),
                     cost_repeats=1 if schedule is SCHEDULES["quick"] else 3,
                     command_line=f"nnunet-equivariant demo{flags} --output {output}")
    print(f"[demo] done.\n  report:  {result.report}\n  plot:    {result.output / 'dice_vs_angle.png'}\n"
          f"  table:   {result.csv}")
    return result


def _set_nnunet_environment(output: Path, device) -> None:
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (output / name).mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(output / name)
    if device.type == "cpu":  # no worker start-up or compilation on a small CPU
        os.environ.setdefault("nnUNet_n_proc_DA", "0")
        os.environ.setdefault("nnUNet_compile", "false")


def _trainer_classes(trainers: Sequence[str]) -> dict[str, type]:
    """Name -> class of each trainer (duplicates dropped), found as ``nnUNetv2_train`` finds it."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    if isinstance(trainers, str) or not trainers:
        raise ValueError(f"trainers: a list of one or more nnU-Net trainer names, got {trainers!r}")
    classes = {}
    for name in dict.fromkeys(trainers):
        try:
            classes[name] = recursive_find_trainer_class_by_name(name)
        except RuntimeError as e:
            raise ValueError(f"trainers: nnU-Net finds no trainer class {name!r}") from e
    return classes


def _train(trainer_name: str, plans: str, epochs: int, schedule: DemoSchedule, device) -> Path:
    """Fold 0 of ``trainer_name``, ``epochs`` epochs of the demo's schedule; returns the model folder."""
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    trainer = get_trainer_from_args(str(DEMO_DATASET_ID), "3d_fullres", 0, trainer_name, plans, device=device)
    trainer.num_epochs = epochs
    trainer.num_iterations_per_epoch = schedule.iterations_per_epoch
    trainer.num_val_iterations_per_epoch = max(1, schedule.iterations_per_epoch // 5)
    trainer.run_training()
    trainer.perform_actual_validation(False)  # nnU-Net's validation/summary.json: compare's accuracy
    return Path(trainer.output_folder_base)
