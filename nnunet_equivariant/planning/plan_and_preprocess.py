"""Fingerprint, plan with ``nnUNetPlannerEquivariant`` and preprocess, through nnU-Net's own Python API.

nnU-Net's ``nnUNetv2_plan_and_preprocess -pl`` only finds planners inside nnunetv2, so this runs the same
three steps with our planner: ``extract_fingerprint_dataset``, ``plan_experiment_dataset`` and
``preprocess_dataset`` (3d_fullres). nnU-Net's worker pools are spawned: call it from a console script or
under ``if __name__ == "__main__":``.
"""
from __future__ import annotations

import functools

from .planner import KERNEL_SIZE, check_steerable_symmetry, nnUNetPlannerEquivariant

__all__ = ["plan_and_preprocess"]


def plan_and_preprocess(dataset_id: int, gpu_memory_target_in_gb: float = 8.0, num_processes: int = 4,
                        verify_dataset_integrity: bool = False, clean: bool = False, preprocess: bool = True,
                        target_spacing: float | None = None, symmetry: str = "so3",
                        irreps_ratio: str | None = None, kernel_size: int = KERNEL_SIZE) -> str:
    """Plan ``dataset_id`` as ``nnUNetPlansEquivariant`` and preprocess its ``3d_fullres`` data.

    ``clean`` re-extracts an existing fingerprint; ``preprocess=False`` only writes the plans;
    ``target_spacing`` (mm) replaces the planner's isotropic spacing rule. ``symmetry``, ``irreps_ratio``
    and ``kernel_size`` name the steerable network the plans are sized for (default: ``nnUNetTrainerE3nn``'s;
    give a wider variant's, e.g. ``irreps_ratio="4x0e+4x1e+4x2e"``, to train that one).
    Returns the plans identifier (for ``nnUNetv2_train ... -p``).
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset, plan_experiment_dataset, preprocess_dataset,
    )

    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if target_spacing is not None and not target_spacing > 0:
        raise ValueError(f"target_spacing must be a positive number of mm, got {target_spacing}")
    check_steerable_symmetry(symmetry)  # before the fingerprint, which takes a while
    planner = functools.partial(nnUNetPlannerEquivariant, symmetry=symmetry, irreps_ratio=irreps_ratio,
                                kernel_size=kernel_size)
    extract_fingerprint_dataset(dataset_id, num_processes=num_processes,
                                check_dataset_integrity=verify_dataset_integrity, clean=clean)
    _, plans_identifier = plan_experiment_dataset(
        dataset_id, planner, gpu_memory_target_in_gb=gpu_memory_target_in_gb,
        overwrite_target_spacing=None if target_spacing is None else [float(target_spacing)] * 3)
    if preprocess:
        preprocess_dataset(dataset_id, plans_identifier, configurations=("3d_fullres",),
                           num_processes=(num_processes,))
    return plans_identifier
