"""``nnunet-equivariant plan_and_preprocess``: nnUNetv2_plan_and_preprocess with the isotropic planner.

nnU-Net-facing: the flags ``nnUNetv2_plan_and_preprocess`` also has are spelled as it spells them, and
``-tr`` names the trainer the plans are sized for as ``nnUNetv2_train -tr`` does; ``--symmetry``,
``--irreps-ratio`` and ``--kernel-size`` override fields of that trainer's spec.
"""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    help_text = ("plan isotropic nnUNetPlansEquivariant (cubic kernels, sized for the trainer's network) and "
                 "preprocess 3d_fullres")
    p = subparsers.add_parser("plan_and_preprocess", help=help_text, description=help_text)
    p.add_argument("-d", nargs="+", type=int, required=True, help="dataset id(s)")
    p.add_argument("-gpu_memory_target", type=float, default=None,
                   help="memory (GB) one training step may use, for the largest network on the plans (default 8, "
                        "or the preset's)")
    p.add_argument("-preset", default=None, choices=("M", "L", "XL"),
                   help="nnU-Net's residual-encoder preset (as -pl nnUNetPlannerResEncM/L/XL) on the isotropic "
                        "grid: plans nnUNetPlansEquivariantResEnc{M,L,XL}, memory target 8 / 24 / 40 GB")
    p.add_argument("-np", type=int, default=4, help="processes for fingerprinting and preprocessing (default 4)")
    p.add_argument("--verify_dataset_integrity", action="store_true", help="run nnU-Net's dataset checks first")
    p.add_argument("--clean", action="store_true", help="re-extract an existing dataset fingerprint")
    p.add_argument("-overwrite_target_spacing", type=float, default=None, metavar="MM",
                   help="isotropic voxel size in mm (default: geometric mean of the median spacing)")
    p.add_argument("--no_pp", action="store_true", help="plan only, do not preprocess")
    p.add_argument("-tr", default="nnUNetTrainerE3nn", metavar="TRAINER",
                   help="size the plans for the network this trainer builds, e.g. nnUNetTrainerE3nnLean "
                        "(default nnUNetTrainerE3nn; a stock or mirror trainer: the PlainConvUNet alone)")
    p.add_argument("--symmetry", default=None, choices=("so3", "o3"),
                   help="override the trainer's group (its spec's symmetry; without --irreps-ratio its ratio "
                        "in that group's parities, e.g. 3x1e -> 3x1o for o3)")
    p.add_argument("--irreps-ratio", default=None,
                   help="override the trainer's irreps per unit, e.g. 4x0e+4x1e+4x2e")
    p.add_argument("--kernel-size", type=int, default=None, help="override the trainer's kernel taps")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from nnunet_equivariant.planning.plan_and_preprocess import plan_and_preprocess

    overrides = {name: value for name, value in (("symmetry", args.symmetry), ("irreps_ratio", args.irreps_ratio),
                                                 ("kernel_size", args.kernel_size)) if value is not None}
    for dataset_id in args.d:
        plans = plan_and_preprocess(dataset_id, args.gpu_memory_target, args.np, args.verify_dataset_integrity,
                                    args.clean, preprocess=not args.no_pp,
                                    target_spacing=args.overwrite_target_spacing, trainer_name=args.tr,
                                    spec_overrides=overrides, preset=args.preset)
        print(f"dataset {dataset_id}: plans {plans}; train with: nnUNetv2_train {dataset_id} 3d_fullres FOLD "
              f"-p {plans} -tr {args.tr}")
    return 0
