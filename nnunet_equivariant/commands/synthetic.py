"""``nnunet-equivariant synthetic``: the synthetic rods-and-discs dataset in nnU-Net raw format."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("synthetic", help="write the synthetic rods-and-discs dataset in nnU-Net raw format")
    p.add_argument("--raw", required=True, help="nnUNet_raw folder to write into")
    p.add_argument("--dataset-id", type=int, default=901)
    p.add_argument("--num-train", type=int, default=8)
    p.add_argument("--num-test", type=int, default=2)
    p.add_argument("--shape", type=int, nargs=3, default=(32, 32, 32))
    p.add_argument("--train-orientation", choices=("fixed", "random"), default="fixed")
    p.add_argument("--test-orientation", choices=("fixed", "random"), default="fixed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from nnunet_equivariant.synthetic import write_rods_and_discs_dataset

    folder = write_rods_and_discs_dataset(
        args.raw, args.dataset_id, num_train=args.num_train, num_test=args.num_test,
        shape=args.shape, train_orientation=args.train_orientation, test_orientation=args.test_orientation,
        seed=args.seed, overwrite=args.overwrite,
    )
    print(folder)
    return 0
