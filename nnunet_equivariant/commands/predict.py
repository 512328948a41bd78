"""``nnunet-equivariant predict``: ``nnUNetv2_predict`` plus symmetry-aware rotation TTA (docs/inference.md).

nnU-Net-facing: every flag but ``--rotation_tta`` is handed, unparsed, to nnU-Net's own entry point, so they
are nnU-Net's (``nnUNetv2_predict``'s, or ``nnUNetv2_predict_from_modelfolder``'s with ``-m``), spelled as it
spells them; ``--rotation_tta`` follows that spelling (``--rotation-tta`` is accepted too).
"""
from __future__ import annotations

import argparse

from nnunet_equivariant.inference import ROTATION_TTA_MODES


def add_parser(subparsers) -> argparse.ArgumentParser:
    help_text = ("predict with nnU-Net (nnUNetv2_predict's flags, or nnUNetv2_predict_from_modelfolder's with -m) "
                 "plus symmetry-aware rotation test-time augmentation")
    p = subparsers.add_parser("predict", help=help_text, description=help_text,
                              usage="%(prog)s [--rotation_tta {none,grid}] NNUNETV2_PREDICT_FLAGS ...",
                              epilog="All other flags are nnUNetv2_predict's (see nnUNetv2_predict -h), or with "
                                     "-m MODEL_FOLDER nnUNetv2_predict_from_modelfolder's. Example: "
                                     "nnunet-equivariant predict -i IN -o OUT -d 1 -c 3d_fullres "
                                     "-tr nnUNetTrainerE3nn -f 0 --rotation_tta grid")
    p.add_argument("--rotation_tta", "--rotation-tta", choices=ROTATION_TTA_MODES, default="none",
                   help="none: nnU-Net's test-time mirroring only; grid: also the 90-degree grid rotations that "
                        "keep the patch shape and spacing, skipping passes the network's symmetry makes redundant "
                        "(stock nnU-Net 48 passes, SO(3)/O(3) steerable 2/1, as with mirroring alone)")
    _collect_unknown_arguments(p, "nnunet_args")
    p.set_defaults(run=run)
    return p


def _collect_unknown_arguments(p: argparse.ArgumentParser, dest: str) -> None:
    """Make the sub-parser ``p`` keep the arguments it does not know in ``dest`` (for nnU-Net's parser)
    instead of handing them up as errors (argparse's sub-parser action calls ``parser.parse_known_args``)."""
    parse_known = p.parse_known_args

    def parse_known_args(args=None, namespace=None):
        namespace, unknown = parse_known(args, namespace)
        setattr(namespace, dest, [*(getattr(namespace, dest, None) or []), *unknown])
        return namespace, []

    p.parse_known_args = parse_known_args  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    from nnunet_equivariant.inference.predict import predict

    return predict(args.nnunet_args, rotation_tta=args.rotation_tta)
