"""``nnunet-equivariant compare``: accuracy, pose robustness and cost of several trainers on one dataset."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    help_text = ("accuracy, pose robustness and cost of several trainers on one dataset: one report "
                 "(docs/compare.md)")
    p = subparsers.add_parser("compare", help=help_text, description=help_text)
    p.add_argument("-d", required=True, help="dataset id or name (DatasetXXX_Name)")
    p.add_argument("-tr", nargs="+", required=True, metavar="TRAINER",
                   help="trainers to compare; the first is the reference of the ratios")
    p.add_argument("-p", nargs="+", default=["nnUNetPlans"], metavar="PLANS",
                   help="plans identifier for all trainers, or one per trainer (default nnUNetPlans)")
    p.add_argument("-c", default="3d_fullres", help="configuration (default 3d_fullres)")
    p.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"], help="folds (default 0-4)")
    p.add_argument("-o", required=True, help="output folder (report.md, CSVs, PNGs)")
    p.add_argument("--train", action="store_true",
                   help="train folds without checkpoint_final.pth first (nnUNetv2_train's entry point; resumes)")
    p.add_argument("--planes", nargs="+", default=["axial"], choices=("axial", "coronal", "sagittal"),
                   help="planes to rotate the test cases in (default axial)")
    p.add_argument("--angles", nargs="+", type=float, default=None,
                   help="rotation angles in degrees within [-180, 180], including 0 (default 0 15 30 45 60 90)")
    p.add_argument("-device", choices=("cuda", "cpu", "mps"), default=None, help="default: cuda if available")
    p.add_argument("--cost-repeats", type=int, default=3, help="timed train steps per trainer (median; default 3)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from nnunet_equivariant.evaluation.compare import DEFAULT_ANGLES, compare

    result = compare(args.d, args.tr, args.o, plans=args.p, configuration=args.c, folds=args.f, train=args.train,
                     planes=args.planes, angles=DEFAULT_ANGLES if args.angles is None else args.angles,
                     device=args.device, overwrite=args.overwrite, cost_repeats=args.cost_repeats,
                     command_line=shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    failed = [f"{e.name} fold {f}" for e in result.entries for f in e.failures]
    if failed:
        print(f"[compare] failed to train: {', '.join(failed)} (see report.md)", file=sys.stderr)
    return 0
