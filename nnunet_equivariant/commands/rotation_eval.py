"""``nnunet-equivariant rotation_eval``: Dice against rotation angle (docs/rotation_eval.md).

nnU-Net-facing: the flags ``nnUNetv2_predict`` also has are spelled as it spells them (``-i``, ``-o``, ``-f``,
``-chk``, ``-device``, ``-step_size``, ``--disable_tta``).
"""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    help_text = "Dice against rotation angle: rotate test cases, predict with trained models, compare"
    p = subparsers.add_parser("rotation_eval", help=help_text, description=help_text)
    p.add_argument("-i", required=True, help="test images in nnU-Net raw layout (CASE_0000.nii.gz ...), or a raw "
                                             "dataset folder holding imagesTs and labelsTs")
    p.add_argument("-l", help="reference labels (CASE.nii.gz); default: labelsTs beside imagesTs")
    p.add_argument("-m", nargs="+", required=True, metavar="MODEL_FOLDER",
                   help="trained model folders (nnUNet_results/DatasetX/Trainer__Plans__configuration)")
    p.add_argument("-o", required=True, help="output folder (CSV, PNG, summary.md)")
    p.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"], help="folds to ensemble (default 0-4)")
    p.add_argument("--planes", nargs="+", default=["axial"], choices=("axial", "coronal", "sagittal"),
                   help="anatomical planes to rotate in (default axial)")
    p.add_argument("--angles", nargs="+", type=float, default=None,
                   help="rotation angles in degrees within [-180, 180] (default: rotation_eval's DEFAULT_ANGLES, "
                        "0 to 180)")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (default checkpoint_final.pth)")
    p.add_argument("-device", choices=("cuda", "cpu", "mps"), default=None, help="default: cuda if available")
    p.add_argument("-step_size", type=float, default=0.5, help="sliding-window step as nnUNetv2_predict's")
    p.add_argument("--disable_tta", action="store_true", help="no test-time mirroring")
    p.add_argument("--disable_gaussian", action="store_true",
                   help="weight sliding windows uniformly (exact equivariance checks; see docs/rotation_eval.md)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from nnunet_equivariant.evaluation.rotation_eval import DEFAULT_ANGLES, rotation_eval

    result = rotation_eval(
        args.i, args.l, args.m, args.o, folds=args.f, planes=args.planes,
        angles=DEFAULT_ANGLES if args.angles is None else args.angles,
        checkpoint=args.chk, device=args.device, step_size=args.step_size, use_mirroring=not args.disable_tta,
        use_gaussian=not args.disable_gaussian, overwrite=args.overwrite,
    )
    print(f"plot:    {result.plot}\nsummary: {result.summary}\ntable:   {result.csv}")
    return 0
