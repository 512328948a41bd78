"""The ``nnunet-equivariant`` commands, one module each (see :mod:`nnunet_equivariant.cli`).

A command module imports only the standard library at import time and provides

- ``add_parser(subparsers) -> argparse.ArgumentParser``: adds its sub-parser (and, for a command with
  sub-commands, theirs) and sets ``run`` as the default of every parser that ends a command line
  (``parser.set_defaults(run=run)``);
- ``run(args: argparse.Namespace) -> int``: imports the library lazily, does the work, returns the exit code.

Register a new command with one line in ``nnunet_equivariant.cli.COMMANDS``.
"""
