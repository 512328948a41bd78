"""``nnunet-equivariant export``: a trained network as a ``torch.export`` program (docs/inference.md)."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    help_text = ("export a trained model's network as a torch.export program (.pt2) with assembled kernels, "
                 "runnable with torch alone (no e3nn)")
    p = subparsers.add_parser("export", help=help_text, description=help_text)
    p.add_argument("model_folder", metavar="MODEL_FOLDER",
                   help="trained model folder (nnUNet_results/DatasetX/Trainer__Plans__configuration)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the .pt2 file to write")
    p.add_argument("-f", "--fold", default="0", help="fold to export (0-4 or all; default 0)")
    p.add_argument("--checkpoint", default="checkpoint_final.pth",
                   help="checkpoint name (default checkpoint_final.pth)")
    p.add_argument("-chk", dest="checkpoint", help=argparse.SUPPRESS)  # nnU-Net's spelling
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from nnunet_equivariant.inference.export import export_model

    report = export_model(args.model_folder, args.output, fold=args.fold, checkpoint_name=args.checkpoint,
                          overwrite=args.overwrite)
    print(report.summary())
    return 0
