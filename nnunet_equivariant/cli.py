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


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
