"""``nnunet-equivariant predict``: ``nnUNetv2_predict`` plus symmetry-aware rotation TTA (docs/inference.md).

nnU-Net-facing: the flags are ``nnUNetv2_predict``'s, spelled and defaulted as it does, plus ``-m
MODEL_FOLDER`` and ``--c`` from ``nnUNetv2_predict_from_modelfolder`` (a model folder instead of ``-d -tr -p
-c``), so a line copied from nnU-Net's documentation works; ``--rotation_tta`` follows that spelling
(``--rotation-tta`` is accepted too). ``tests/test_nnunet_contract.py`` compares these flags with nnU-Net's
own parsers.
"""
from __future__ import annotations

import argparse
import os

from nnunet_equivariant.inference import DEVICES, ROTATION_TTA_MODES

#: ``--symmetric_tiling`` values -> ``inference.predict``'s ``symmetric_tiling``.
SYMMETRIC_TILING = {"auto": "auto", "on": True, "off": False}


def _default_processes(variable: str) -> int:
    """nnUNetv2_predict's default of ``-npp`` / ``-nps``: the environment variable if it is an integer, else 3."""
    try:
        return int(os.environ.get(variable) or 3)
    except ValueError:
        return 3


def add_parser(subparsers) -> argparse.ArgumentParser:
    help_text = ("predict with nnU-Net (nnUNetv2_predict's flags, or -m MODEL_FOLDER as "
                 "nnUNetv2_predict_from_modelfolder) plus symmetry-aware rotation test-time augmentation")
    p = subparsers.add_parser("predict", help=help_text, description=help_text,
                              epilog="Example: nnunet-equivariant predict -i IN -o OUT -d 1 -c 3d_fullres "
                                     "-tr nnUNetTrainerE3nn -f 0 --rotation_tta grid")
    p.add_argument("-i", type=str, required=True,
                   help="input folder (CASE_0000.nii.gz ...; the training dataset's file ending)")
    p.add_argument("-o", type=str, required=True, help="output folder, created if missing")
    model = p.add_argument_group("model", "either -d and -c (with -tr and -p), as nnUNetv2_predict, or -m")
    model.add_argument("-d", type=str, help="dataset name or id")
    model.add_argument("-p", type=str, default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    model.add_argument("-tr", type=str, default="nnUNetTrainer",
                       help="trainer used for training (default nnUNetTrainer)")
    model.add_argument("-c", type=str, help="configuration")
    model.add_argument("-m", type=str, help="trained model folder (Trainer__Plans__configuration), as "
                                            "nnUNetv2_predict_from_modelfolder")
    p.add_argument("-f", nargs="+", type=str, default=(0, 1, 2, 3, 4), help="folds to ensemble (default 0 1 2 3 4)")
    p.add_argument("-step_size", type=float, default=0.5, help="sliding-window step (default 0.5)")
    p.add_argument("--disable_tta", action="store_true", help="no test-time mirroring")
    p.add_argument("--verbose", action="store_true", help="nnU-Net's verbose output")
    p.add_argument("--save_probabilities", action="store_true", help="also write CASE.npz class probabilities")
    p.add_argument("--continue_prediction", "--c", action="store_true",
                   help="continue an aborted prediction (keep existing outputs)")
    p.add_argument("-chk", type=str, default="checkpoint_final.pth",
                   help="checkpoint name (default checkpoint_final.pth)")
    p.add_argument("-npp", type=int, default=_default_processes("nnUNet_npp"),
                   help="preprocessing processes (default $nnUNet_npp or 3; -npp 0 -nps 0: no worker processes)")
    p.add_argument("-nps", type=int, default=_default_processes("nnUNet_nps"),
                   help="segmentation export processes (default $nnUNet_nps or 3)")
    p.add_argument("-prev_stage_predictions", type=str, default=None, help="previous stage's predictions (cascades)")
    p.add_argument("-num_parts", type=int, default=1, help="number of separate predict calls sharing the cases")
    p.add_argument("-part_id", type=int, default=0, help="which of the -num_parts calls this is (from 0)")
    p.add_argument("-device", choices=DEVICES, default="cuda", help="cuda (default), cpu or mps")
    p.add_argument("--disable_progress_bar", action="store_true", help="no progress bar")
    p.add_argument("--not_on_device", action="store_true",
                   help="keep the whole case off the device (large cases; perform_everything_on_device=False)")
    p.add_argument("--rotation_tta", "--rotation-tta", choices=ROTATION_TTA_MODES, default="none",
                   help="none: nnU-Net's test-time mirroring only; grid: also the 90-degree grid rotations that "
                        "keep the patch shape and spacing, skipping passes the network's symmetry makes redundant "
                        "(stock nnU-Net 48 passes, SO(3)/O(3) steerable 2/1, as with mirroring alone)")
    p.add_argument("--symmetric_tiling", "--symmetric-tiling", nargs="?", choices=tuple(SYMMETRIC_TILING), const="on",
                   default="auto",
                   help="pad and tile each case mirror-symmetrically (an odd shortfall against the patch padded "
                        "on both sides, mirror-symmetric tile offsets, a mirror-symmetric Gaussian), so a grid "
                        "rotation of a case rotates a steerable network's prediction exactly; nnU-Net's tiling is "
                        "not symmetric for every case size. auto (default): for networks with a symmetry and "
                        "with --rotation_tta grid, nnU-Net's sliding window for a stock network; on (the flag "
                        "alone) or off: always or never")
    p.set_defaults(run=run)
    return p


def _set_threads(device: str) -> None:
    """Torch's threads as nnUNetv2_predict sets them: every core on the CPU, one thread with a GPU."""
    import multiprocessing

    import torch

    if device == "cpu":
        torch.set_num_threads(multiprocessing.cpu_count())
    elif device == "cuda":
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)


def run(args: argparse.Namespace) -> int:
    if args.m is not None and (args.d is not None or args.c is not None):
        raise ValueError("give either -m MODEL_FOLDER or -d DATASET -c CONFIGURATION, not both")
    if args.m is None and (args.d is None or args.c is None):
        raise ValueError("give the model: -d DATASET -c CONFIGURATION (with -tr and -p), or -m MODEL_FOLDER")
    from nnunet_equivariant.inference.predict import predict, trained_model_folder

    _set_threads(args.device)
    model_folder = args.m if args.m is not None else trained_model_folder(args.d, args.c, args.tr, args.p)
    predict(args.i, args.o, model_folder, folds=args.f, rotation_tta=args.rotation_tta,
            symmetric_tiling=SYMMETRIC_TILING[args.symmetric_tiling], step_size=args.step_size,
            use_mirroring=not args.disable_tta, checkpoint=args.chk, save_probabilities=args.save_probabilities,
            overwrite=not args.continue_prediction, num_processes_preprocessing=args.npp,
            num_processes_segmentation_export=args.nps, previous_stage_predictions=args.prev_stage_predictions,
            num_parts=args.num_parts, part_id=args.part_id, device=args.device,
            perform_everything_on_device=not args.not_on_device, verbose=args.verbose,
            progress_bar=not args.disable_progress_bar)
    return 0
