"""``nnunet-equivariant plan_and_preprocess``: nnUNetv2_plan_and_preprocess with the isotropic planner.

nnU-Net-facing: the flags ``nnUNetv2_plan_and_preprocess`` also has are spelled as it spells them; the
steerable network the plans are sized for (``--symmetry``, ``--irreps-ratio``, ``--kernel-size``) is ours.
"""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    help_text = ("plan isotropic nnUNetPlansEquivariant (5^3 kernels, sized for the steerable network) and "
                 "preprocess 3d_fullres")
    p = subparsers.add_parser("plan_and_preprocess", help=help_text, description=help_text)
    p.add_argument("-d", nargs="+", type=int, required=True, help="dataset id(s)")
    p.add_argument("-gpu_memory_target", type=float, default=8.0,
                   help="memory (GB) one training step may use, for the largest network on the plans (default 8)")
    p.add_argument("-np", type=int, default=4, help="processes for fingerprinting and preprocessing (default 4)")
    p.add_argument("--verify_dataset_integrity", action="store_true", help="run nnU-Net's dataset checks first")
    p.add_argument("--clean", action="store_true", help="re-extract an existing dataset fingerprint")
    p.add_argument("-overwrite_target_spacing", type=float, default=None, metavar="MM",
                   help="isotropic voxel size in mm (default: geometric mean of the median spacing)")
    p.add_argument("--no_pp", action="store_true", help="plan only, do not preprocess")
    p.add_argument("--symmetry", default="so3",
                   help="steerable network to size the plans for: its group, so3 or o3 (default so3)")
    p.add_argument("--irreps-ratio", default=None,
                   help="... its irreps per unit, as the trainer's irreps_ratio, e.g. 4x0e+4x1e+4x2e for "
                        "nnUNetTrainerE3nn_4x4x4 (default: the group's 8:4:2)")
    p.add_argument("--kernel-size", type=int, default=5, help="... its kernel taps (default 5)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from nnunet_equivariant.planning.plan_and_preprocess import plan_and_preprocess

    for dataset_id in args.d:
        plans = plan_and_preprocess(dataset_id, args.gpu_memory_target, args.np, args.verify_dataset_integrity,
                                    args.clean, preprocess=not args.no_pp,
                                    target_spacing=args.overwrite_target_spacing, symmetry=args.symmetry,
                                    irreps_ratio=args.irreps_ratio, kernel_size=args.kernel_size)
        print(f"dataset {dataset_id}: plans {plans}; train with: nnUNetv2_train {dataset_id} 3d_fullres FOLD "
              f"-p {plans} -tr TRAINER")
    return 0
