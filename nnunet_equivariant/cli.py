"""``nnunet-equivariant <command>``: a thin argparse layer over the library.

Each command registers a sub-parser and hands its arguments to a library function; heavy modules are
imported only inside the handlers, so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

# (name, help, add_arguments, run). Commands append themselves below, one block each.
_COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int | None]]] = []


def command(name: str, help: str):
    """Register ``run(args)`` as sub-command ``name``; decorate ``add_arguments`` with ``.arguments``."""

    def decorator(run):
        entry = [name, help, lambda p: None, run]
        _COMMANDS.append(entry)  # type: ignore[arg-type]

        def arguments(add):
            entry[2] = add
            return add

        run.arguments = arguments
        return run

    return decorator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-equivariant",
        description="Symmetry-aware networks for nnU-Net v2: planning, rotation evaluation, demo, meshes.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, help_text, add_arguments, run in _COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"nnunet-equivariant {args.command}: error: {e}", file=sys.stderr)
        return 2


# --- commands -------------------------------------------------------------------------------------


@command("synthetic", "write the synthetic rods-and-discs dataset in nnU-Net raw format")
def _synthetic(args: argparse.Namespace) -> int:
    from nnunet_equivariant.synthetic import write_rods_and_discs_dataset

    folder = write_rods_and_discs_dataset(
        args.raw, args.dataset_id, num_train=args.num_train, num_test=args.num_test,
        shape=args.shape, train_orientation=args.train_orientation, test_orientation=args.test_orientation,
        seed=args.seed, overwrite=args.overwrite,
    )
    print(folder)
    return 0


@_synthetic.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("--raw", required=True, help="nnUNet_raw folder to write into")
    p.add_argument("--dataset-id", type=int, default=901)
    p.add_argument("--num-train", type=int, default=8)
    p.add_argument("--num-test", type=int, default=2)
    p.add_argument("--shape", type=int, nargs=3, default=(32, 32, 32))
    p.add_argument("--train-orientation", choices=("fixed", "random"), default="fixed")
    p.add_argument("--test-orientation", choices=("fixed", "random"), default="fixed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")


@command("rotation_eval", "Dice against rotation angle: rotate test cases, predict with trained models, compare")
def _rotation_eval(args: argparse.Namespace) -> int:
    from nnunet_equivariant.evaluation.rotation_eval import rotation_eval

    result = rotation_eval(
        args.i, args.l, args.m, args.o, folds=args.f, planes=args.planes, angles=args.angles,
        checkpoint=args.chk, device=args.device, step_size=args.step_size, use_mirroring=not args.disable_tta,
        use_gaussian=not args.disable_gaussian, overwrite=args.overwrite,
    )
    print(f"plot:    {result.plot}\nsummary: {result.summary}\ntable:   {result.csv}")
    return 0


@_rotation_eval.arguments
def _(p: argparse.ArgumentParser) -> None:
    from nnunet_equivariant.evaluation.rotation_eval import DEFAULT_ANGLES

    p.add_argument("-i", required=True, help="test images in nnU-Net raw layout (CASE_0000.nii.gz ...), or a raw "
                                             "dataset folder holding imagesTs and labelsTs")
    p.add_argument("-l", help="reference labels (CASE.nii.gz); default: labelsTs beside imagesTs")
    p.add_argument("-m", nargs="+", required=True, metavar="MODEL_FOLDER",
                   help="trained model folders (nnUNet_results/DatasetX/Trainer__Plans__configuration)")
    p.add_argument("-o", required=True, help="output folder (CSV, PNG, summary.md)")
    p.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"], help="folds to ensemble (default 0-4)")
    p.add_argument("--planes", nargs="+", default=["axial"], choices=("axial", "coronal", "sagittal"),
                   help="anatomical planes to rotate in (default axial)")
    p.add_argument("--angles", nargs="+", type=float, default=list(DEFAULT_ANGLES),
                   help="rotation angles in degrees within [-180, 180]")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (default checkpoint_final.pth)")
    p.add_argument("-device", choices=("cuda", "cpu", "mps"), default=None, help="default: cuda if available")
    p.add_argument("-step_size", type=float, default=0.5, help="sliding-window step as nnUNetv2_predict's")
    p.add_argument("--disable_tta", action="store_true", help="no test-time mirroring")
    p.add_argument("--disable_gaussian", action="store_true",
                   help="weight sliding windows uniformly (exact equivariance checks; see docs/rotation_eval.md)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
