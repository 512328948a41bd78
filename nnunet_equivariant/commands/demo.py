"""``nnunet-equivariant demo``: a steerable and a stock nnU-Net on a built-in dataset, Dice against angle."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    help_text = ("train a steerable and a stock nnU-Net on a built-in synthetic dataset and compare them: "
                 "Dice, Dice against rotation angle, cost (no download)")
    p = subparsers.add_parser("demo", help=help_text, description=help_text)
    p.add_argument("--output", default="nnunet_equivariant_demo", help="folder for everything the demo writes")
    p.add_argument("--quick", action="store_true", help="a smoke run of a few minutes (untrained models)")
    p.add_argument("--device", choices=("cuda", "cpu", "mps"), default=None, help="default: cuda if available")
    # the spelling of earlier releases, kept working but no longer shown
    p.add_argument("-device", dest="device", choices=("cuda", "cpu", "mps"), help=argparse.SUPPRESS)
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo output folder")
    p.add_argument("--trainers", nargs="+", default=None, metavar="TRAINER",
                   help="nnU-Net trainers to train and compare (default: nnUNetTrainerE3nn nnUNetTrainerNoRot); a "
                        "variant gets the epochs of the trainer it derives from, e.g. nnUNetTrainerE3nnLean those "
                        "of nnUNetTrainerE3nn")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from nnunet_equivariant.demo import DEMO_TRAINERS, run_demo

    run_demo(args.output, quick=args.quick, device=args.device, overwrite=args.overwrite,
             trainers=args.trainers or DEMO_TRAINERS)
    return 0
