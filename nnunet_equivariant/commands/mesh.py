"""``nnunet-equivariant mesh <subcommand>``: the mesh-SDF pipeline (docs/meshes.md).

IntrA / ACDC meshes to an nnU-Net dataset and to per-vertex patch sets, nnU-Net's predictions back onto the
meshes, and the paper's patch-classifier study.
"""
from __future__ import annotations

import argparse
import os


def add_parser(subparsers) -> argparse.ArgumentParser:
    help_text = "mesh-SDF pipeline: IntrA/ACDC meshes to nnU-Net and patch sets, and back (docs/meshes.md)"
    p = subparsers.add_parser("mesh", help=help_text, description=help_text)
    sub = p.add_subparsers(dest="mesh_command", required=True, metavar="<subcommand>")

    s = sub.add_parser("standins", help="write small synthetic IntrA- or ACDC-like data in the real layouts")
    s.add_argument("kind", choices=("intra", "acdc"))
    s.add_argument("output", help="folder to create (the IntrA or ACDC root)")
    s.add_argument("--num-cases", type=int, default=10, help="IntrA segments or ACDC patients")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(run=run_standins)

    s = sub.add_parser("to_nnunet", help="convert to an nnU-Net raw dataset (SDF images, surface-band labels)")
    s.add_argument("kind", choices=("intra", "acdc"))
    s.add_argument("input", help="IntrA root (with annotated/, fileSplit/) or ACDC root (patientXXX folders)")
    s.add_argument("-d", "--dataset-id", type=int, required=True)
    s.add_argument("--name", help="dataset name (default IntrA / ACDCS)")
    s.add_argument("--raw", default=os.environ.get("nnUNet_raw"), help="nnUNet_raw (default: $nnUNet_raw)")
    s.add_argument("--preprocessed", default=os.environ.get("nnUNet_preprocessed"),
                   help="nnUNet_preprocessed, receives splits_final.json (default: $nnUNet_preprocessed)")
    s.add_argument("--spacing", type=float, help="voxel size (default: from --grid-size)")
    s.add_argument("--grid-size", type=int, default=128, help="voxels along the median case's longest side")
    s.add_argument("--band-width", type=float, default=1.5, help="labelled band half-width in voxels")
    s.add_argument("--smoothing", type=int, default=10, help="ACDC: Taubin smoothing iterations")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(run=run_to_nnunet)

    s = sub.add_parser("to_patches", help="write per-vertex SDF patch sets with the paper's 9 train:test splits")
    s.add_argument("kind", choices=("intra", "acdc"))
    s.add_argument("input")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--side", type=float, required=True, help="patch side a, in the meshes' units")
    s.add_argument("--n", type=int, default=16, help="points per patch side")
    s.add_argument("--seeds", type=int, nargs="+", default=[0], help="one set of 9 splits per seed")
    s.add_argument("--smoothing", type=int, default=10, help="ACDC: Taubin smoothing iterations")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(run=run_to_patches)

    s = sub.add_parser("from_nnunet", help="map nnU-Net probabilities to mesh vertices, write .ply/.vtu, score")
    s.add_argument("-i", "--predictions", required=True, help="nnUNetv2_predict output (--save_probabilities)")
    s.add_argument("-m", "--meshes", required=True, help="the converted dataset's meshesTr or meshesTs")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(run=run_from_nnunet)

    s = sub.add_parser("train_patches", help="train the paper's classifiers over splits and seeds (Table III)")
    s.add_argument("patches", help="a patch set written by 'mesh to_patches'")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--archs", nargs="+", help="K16S16 K4S4-K4S4 K8S1-K8S1-K2S1 (default: all)")
    s.add_argument("--symmetries", nargs="+", help="baseline f1 f2 f3 f12 f13 f23 f123 (default: all)")
    s.add_argument("--tasks", nargs="+", help="keep_architecture keep_parameters (default: both)")
    s.add_argument("--ratios", nargs="+", help="e.g. 20:80 50:50 (default: all stored)")
    s.add_argument("--seeds", type=int, nargs="+", help="default: all stored")
    s.add_argument("--epochs", type=int, default=10)
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--lr", type=float, default=1e-3)
    s.add_argument("--samples-per-epoch", type=int)
    s.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if available)")
    s.add_argument("--write-meshes", action="store_true", help="also write each run's labelled test meshes")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(run=run_train_patches)
    return p


def run_standins(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nnunet_equivariant.atomic import atomic_folder
    from nnunet_equivariant.meshes.standins import write_acdc_standin, write_intra_standin

    write = write_intra_standin if args.kind == "intra" else write_acdc_standin
    with atomic_folder(args.output, args.overwrite) as tmp:
        write(tmp, args.num_cases, seed=args.seed)
    print(Path(args.output).resolve())
    return 0


def run_to_nnunet(args: argparse.Namespace) -> int:
    from nnunet_equivariant.meshes.nnunet_dataset import write_nnunet_dataset
    from nnunet_equivariant.meshes.sources import mesh_source

    if not args.raw:
        raise ValueError("no nnU-Net raw folder: set nnUNet_raw or pass --raw")
    kwargs = {"smoothing_iterations": args.smoothing} if args.kind == "acdc" else {}
    report = write_nnunet_dataset(mesh_source(args.kind, args.input, **kwargs), args.raw, args.dataset_id,
                                  dataset_name=args.name, spacing=args.spacing, grid_size=args.grid_size,
                                  band_width=args.band_width, preprocessed_root=args.preprocessed,
                                  overwrite=args.overwrite)
    print(report.summary())
    return 0


def run_to_patches(args: argparse.Namespace) -> int:
    from nnunet_equivariant.meshes.patch_dataset import write_patch_dataset
    from nnunet_equivariant.meshes.sources import mesh_source

    kwargs = {"smoothing_iterations": args.smoothing} if args.kind == "acdc" else {}
    report = write_patch_dataset(mesh_source(args.kind, args.input, **kwargs), args.output, side=args.side,
                                 n=args.n, seeds=args.seeds, overwrite=args.overwrite)
    print(report.summary())
    return 0


def run_from_nnunet(args: argparse.Namespace) -> int:
    from nnunet_equivariant.meshes.backprojection import map_nnunet_predictions

    summary = map_nnunet_predictions(args.predictions, args.meshes, args.output, overwrite=args.overwrite)
    print(f"{summary['num_meshes']} meshes: vertex accuracy {summary['accuracy']:.4f}, "
          f"IoU {summary['iou']}, DSC {summary['dsc']} -> {args.output}")
    return 0


def run_train_patches(args: argparse.Namespace) -> int:
    import torch

    from nnunet_equivariant.meshes.patch_training import ARCHS, SYMMETRIES, TASKS, PatchTrainingConfig, train_patches

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    config = PatchTrainingConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                                 samples_per_epoch=args.samples_per_epoch, device=device)
    symmetries = SYMMETRIES if args.symmetries is None else [None if s == "baseline" else s for s in args.symmetries]
    rows = train_patches(args.patches, args.output, archs=args.archs or ARCHS, symmetries=symmetries,
                         tasks=args.tasks or TASKS, ratios=args.ratios, seeds=args.seeds, config=config,
                         write_meshes=args.write_meshes, overwrite=args.overwrite)
    print(f"{len(rows)} results -> {args.output}/results.csv, table.csv, accuracy.png")
    return 0
