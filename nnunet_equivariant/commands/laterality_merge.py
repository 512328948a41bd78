"""``nnunet-equivariant laterality_merge``: laterality mode for reflection-invariant trainers
(docs/inference.md): a copy of a raw dataset with its left/right labels merged."""
from __future__ import annotations

import argparse
import os


def add_parser(subparsers) -> argparse.ArgumentParser:
    help_text = ("laterality mode: copy a raw dataset with its left/right labels merged (for reflection-invariant "
                 "trainers); 'predict' splits the predictions back by side")
    p = subparsers.add_parser("laterality_merge", help=help_text, description=help_text)
    p.add_argument("-d", "--dataset", required=True, help="source dataset (id, name or folder)")
    p.add_argument("-o", "--output-id", required=True, type=int, metavar="NEW_ID",
                   help="id of the merged dataset to write")
    p.add_argument("--name", help="name of the merged dataset (default: the source's + 'Merged')")
    p.add_argument("--raw", default=os.environ.get("nnUNet_raw"), help="nnUNet_raw (default: $nnUNet_raw)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing merged dataset")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from nnunet_equivariant.inference.laterality import write_merged_dataset

    if not args.raw:
        raise ValueError("no nnU-Net raw folder: set nnUNet_raw or pass --raw")
    target = write_merged_dataset(args.raw, args.dataset, args.output_id, name=args.name, overwrite=args.overwrite)
    print(f"{target}\nnext: nnUNetv2_plan_and_preprocess -d {args.output_id}, train on it, then "
          f"nnunet-equivariant predict (writes the original left/right labels)")
    return 0
