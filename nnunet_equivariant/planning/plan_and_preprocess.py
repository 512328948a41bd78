"""Fingerprint, plan with ``nnUNetPlannerEquivariant`` and preprocess, through nnU-Net's own Python API.

nnU-Net's ``nnUNetv2_plan_and_preprocess -pl`` only finds planners inside nnunetv2, so this runs the same
three steps with our planner: ``extract_fingerprint_dataset``, ``plan_experiment_dataset`` and
``preprocess_dataset`` (3d_fullres). nnU-Net's worker pools are spawned: call it from a console script or
under ``if __name__ == "__main__":``.
"""
from __future__ import annotations

import dataclasses
import functools

from ..networks.e3nn_spec import E3nnSpec
from .planner import nnUNetPlannerEquivariant, plans_identifier

__all__ = ["overridden_spec", "plan_and_preprocess", "trainer_spec"]


def trainer_spec(trainer_name: str) -> E3nnSpec | None:
    """The ``E3nnSpec`` of the trainer called ``trainer_name``, found as ``nnUNetv2_train -tr`` finds it
    (nnU-Net's trainers, then ``nnUNet_extTrainer``); ``None`` for a trainer without a steerable network
    (stock, mirror). ``ValueError`` naming the trainer if nnU-Net cannot find it."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        trainer = recursive_find_trainer_class_by_name(trainer_name)
    except RuntimeError as error:
        raise ValueError(f"trainer {trainer_name!r} not found by nnU-Net's trainer lookup: {error}") from None
    spec = getattr(trainer, "spec", None)
    return spec if isinstance(spec, E3nnSpec) else None


def overridden_spec(spec: E3nnSpec | None, overrides: dict, trainer_name: str) -> E3nnSpec:
    """``spec`` with ``overrides`` (fields of ``E3nnSpec``) applied. A new ``symmetry`` without a new
    ``irreps_ratio`` keeps the ratio in that group's parities (``E3nnSpec.with_symmetry``: ``o3`` makes the
    default's ``3x1e`` vectors ``3x1o``). ``ValueError`` naming ``trainer_name`` if it has no steerable
    network (``spec`` ``None``)."""
    if spec is None:
        raise ValueError(f"{trainer_name} has no steerable network: the steerable options "
                         f"{sorted(overrides)} do not apply to it")
    overrides = dict(overrides)
    if "symmetry" in overrides and "irreps_ratio" not in overrides:
        spec = spec.with_symmetry(overrides.pop("symmetry"))
    return dataclasses.replace(spec, **overrides)


def plan_and_preprocess(dataset_id: int, gpu_memory_target_in_gb: float | None = None, num_processes: int = 4,
                        verify_dataset_integrity: bool = False, clean: bool = False, preprocess: bool = True,
                        target_spacing: float | None = None, trainer_name: str = "nnUNetTrainerE3nn",
                        spec_overrides: dict | None = None, preset: str | None = None) -> str:
    """Plan ``dataset_id`` as ``nnUNetPlansEquivariant`` (or with ``preset`` ``"M"``, ``"L"``, ``"XL"`` as
    nnU-Net's ResEnc preset on the isotropic grid, ``nnUNetPlansEquivariantResEnc{preset}``) and preprocess
    its ``3d_fullres`` data. ``gpu_memory_target_in_gb``: ``None`` for 8 GB or the preset's (8, 24, 40).

    ``clean`` re-extracts an existing fingerprint; ``preprocess=False`` only writes the plans;
    ``target_spacing`` (mm) replaces the planner's isotropic spacing rule. The plans are sized for the
    network of ``trainer_name`` (its ``E3nnSpec``; for a trainer without one, the ``PlainConvUNet`` alone)
    with ``spec_overrides`` (fields of ``E3nnSpec``; :func:`overridden_spec`) applied on top. Returns the plans
    identifier (for ``nnUNetv2_train ... -p``).
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset, plan_experiment_dataset, preprocess_dataset,
    )

    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if target_spacing is not None and not target_spacing > 0:
        raise ValueError(f"target_spacing must be a positive number of mm, got {target_spacing}")
    spec = trainer_spec(trainer_name)  # before the fingerprint, which takes a while
    if spec_overrides:
        spec = overridden_spec(spec, spec_overrides, trainer_name)
    plans_identifier(preset)  # ValueError for an unknown preset, before the fingerprint
    planner = functools.partial(nnUNetPlannerEquivariant, spec=spec, trainer_name=trainer_name, preset=preset)
    extract_fingerprint_dataset(dataset_id, num_processes=num_processes,
                                check_dataset_integrity=verify_dataset_integrity, clean=clean)
    _, identifier = plan_experiment_dataset(
        dataset_id, planner, gpu_memory_target_in_gb=gpu_memory_target_in_gb,
        overwrite_target_spacing=None if target_spacing is None else [float(target_spacing)] * 3)
    if preprocess:
        preprocess_dataset(dataset_id, identifier, configurations=("3d_fullres",), num_processes=(num_processes,))
    return identifier
