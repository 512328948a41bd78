"""The inference commands of ``nnunet-equivariant``: ``predict``, ``export`` and ``laterality_merge``.

``cli.py`` registers ``COMMANDS`` (name, help, add_arguments, run); heavy modules are imported in the
runners only, so building the parser stays instant.
"""
from __future__ import annotations

import argparse

from .predict import HELP as _PREDICT_HELP
from .predict import add_predict_arguments, run_predict

__all__ = ["COMMANDS"]

_EXPORT_HELP = ("export a trained model's network as a torch.export program (.pt2) with assembled kernels, "
                "runnable with torch alone (no e3nn)")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_folder", metavar="MODEL_FOLDER",
                   help="trained model folder (nnUNet_results/DatasetX/Trainer__Plans__configuration)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the .pt2 file to write")
    p.add_argument("-f", "--fold", default="0", help="fold to export (0-4 or all; default 0)")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (default checkpoint_final.pth)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run_export(args: argparse.Namespace) -> int:
    from .export import export_model

    report = export_model(args.model_folder, args.output, fold=args.fold, checkpoint_name=args.chk,
                          overwrite=args.overwrite)
    print(report.summary())
    return 0


_MERGE_HELP = ("laterality mode: copy a raw dataset with its left/right labels merged (for reflection-invariant "
               "trainers); 'predict' splits the predictions back by side")


def add_merge_arguments(p: argparse.ArgumentParser) -> None:
    import os

    p.add_argument("-d", required=True, help="source dataset (id, name or folder)")
    p.add_argument("-o", required=True, type=int, metavar="NEW_ID", help="id of the merged dataset to write")
    p.add_argument("--name", help="name of the merged dataset (default: the source's + 'Merged')")
    p.add_argument("--raw", default=os.environ.get("nnUNet_raw"), help="nnUNet_raw (default: $nnUNet_raw)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing merged dataset")


def run_merge(args: argparse.Namespace) -> int:
    from .laterality import write_merged_dataset

    if not args.raw:
        raise ValueError("no nnU-Net raw folder: set nnUNet_raw or pass --raw")
    target = write_merged_dataset(args.raw, args.d, args.o, name=args.name, overwrite=args.overwrite)
    print(f"{target}\nnext: nnUNetv2_plan_and_preprocess -d {args.o}, train on it, then "
          f"nnunet-equivariant predict (splits left/right)")
    return 0


COMMANDS = [
    ("predict", _PREDICT_HELP, add_predict_arguments, run_predict),
    ("export", _EXPORT_HELP, add_export_arguments, run_export),
    ("laterality_merge", _MERGE_HELP, add_merge_arguments, run_merge),
]
