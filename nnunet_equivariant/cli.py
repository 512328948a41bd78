"""``nnunet-equivariant <command>``: a thin argparse layer over the library.

Each command lives in its own module under :mod:`nnunet_equivariant.commands`, which adds its sub-parser
(``add_parser(subparsers)``) and names the ``run(args)`` function that parser dispatches to; heavy modules
are imported only inside ``run``, so ``--help`` is quick. A new command is one line in ``COMMANDS``.

Flag style, one rule for all commands:

- commands that stand in for an nnU-Net command (``plan_and_preprocess`` for
  ``nnUNetv2_plan_and_preprocess``, ``rotation_eval`` for ``nnUNetv2_predict``) spell every flag that
  nnU-Net's command also has exactly as nnU-Net does (``-d``, ``-np``, ``-gpu_memory_target``, ``-i``,
  ``-o``, ``-f``, ``-chk``, ``-device``, ``-step_size``, ``--disable_tta``, ``--verify_dataset_integrity``),
  so a line copied from nnU-Net's documentation works;
- every other flag is a GNU long option with hyphens (``--dataset-id``, ``--num-cases``, ``--overwrite``),
  with the usual one-letter short forms (``-d``, ``-i``, ``-o``, ``-m``).

Errors a user can fix (bad value, missing or existing file) end with exit code 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# One line per command, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "nnunet_equivariant.commands.demo",
    "nnunet_equivariant.commands.synthetic",
    "nnunet_equivariant.commands.plan_and_preprocess",
    "nnunet_equivariant.commands.rotation_eval",
    "nnunet_equivariant.commands.compare",
    "nnunet_equivariant.commands.mesh",
    "nnunet_equivariant.commands.predict",
    "nnunet_equivariant.commands.export",
    "nnunet_equivariant.commands.laterality_merge",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-equivariant",
        description="Symmetry-aware networks for nnU-Net v2: planning, rotation evaluation, demo, meshes.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for module in COMMANDS:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"nnunet-equivariant {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
