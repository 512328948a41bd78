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


@command("mesh", "mesh-SDF pipeline: IntrA/ACDC meshes to nnU-Net and patch sets, and back (docs/meshes.md)")
def _mesh(args: argparse.Namespace) -> int:
    return int(args._mesh_run(args) or 0)


@_mesh.arguments
def _(p: argparse.ArgumentParser) -> None:
    import os

    sub = p.add_subparsers(dest="mesh_command", required=True, metavar="<subcommand>")

    s = sub.add_parser("standins", help="write small synthetic IntrA- or ACDC-like data in the real layouts")
    s.add_argument("kind", choices=("intra", "acdc"))
    s.add_argument("output", help="folder to create (the IntrA or ACDC root)")
    s.add_argument("--num-cases", type=int, default=10, help="IntrA segments or ACDC patients")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(_mesh_run=_mesh_standins)

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
    s.set_defaults(_mesh_run=_mesh_to_nnunet)

    s = sub.add_parser("to_patches", help="write per-vertex SDF patch sets with the paper's 9 train:test splits")
    s.add_argument("kind", choices=("intra", "acdc"))
    s.add_argument("input")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--side", type=float, required=True, help="patch side a, in the meshes' units")
    s.add_argument("--n", type=int, default=16, help="points per patch side")
    s.add_argument("--seeds", type=int, nargs="+", default=[0], help="one set of 9 splits per seed")
    s.add_argument("--smoothing", type=int, default=10, help="ACDC: Taubin smoothing iterations")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(_mesh_run=_mesh_to_patches)

    s = sub.add_parser("from_nnunet", help="map nnU-Net probabilities to mesh vertices, write .ply/.vtu, score")
    s.add_argument("-i", "--predictions", required=True, help="nnUNetv2_predict output (--save_probabilities)")
    s.add_argument("-m", "--meshes", required=True, help="the converted dataset's meshesTr or meshesTs")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(_mesh_run=_mesh_from_nnunet)

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
    s.set_defaults(_mesh_run=_mesh_train_patches)


def _mesh_standins(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nnunet_equivariant.atomic import atomic_folder
    from nnunet_equivariant.meshes.standins import write_acdc_standin, write_intra_standin

    write = write_intra_standin if args.kind == "intra" else write_acdc_standin
    with atomic_folder(args.output, args.overwrite) as tmp:
        write(tmp, args.num_cases, seed=args.seed)
    print(Path(args.output).resolve())
    return 0


def _mesh_to_nnunet(args: argparse.Namespace) -> int:
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


def _mesh_to_patches(args: argparse.Namespace) -> int:
    from nnunet_equivariant.meshes.patch_dataset import write_patch_dataset
    from nnunet_equivariant.meshes.sources import mesh_source

    kwargs = {"smoothing_iterations": args.smoothing} if args.kind == "acdc" else {}
    report = write_patch_dataset(mesh_source(args.kind, args.input, **kwargs), args.output, side=args.side,
                                 n=args.n, seeds=args.seeds, overwrite=args.overwrite)
    print(report.summary())
    return 0


def _mesh_from_nnunet(args: argparse.Namespace) -> int:
    from nnunet_equivariant.meshes.backprojection import map_nnunet_predictions

    summary = map_nnunet_predictions(args.predictions, args.meshes, args.output, overwrite=args.overwrite)
    print(f"{summary['num_meshes']} meshes: vertex accuracy {summary['accuracy']:.4f}, "
          f"IoU {summary['iou']}, DSC {summary['dsc']} -> {args.output}")
    return 0


def _mesh_train_patches(args: argparse.Namespace) -> int:
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


@command("plan_and_preprocess", "plan isotropic nnUNetPlansEquivariant (5^3 kernels, sized for the steerable "
                                "network) and preprocess 3d_fullres")
def _plan_and_preprocess(args: argparse.Namespace) -> int:
    from nnunet_equivariant.planning.plan_and_preprocess import plan_and_preprocess

    for dataset_id in args.d:
        plans = plan_and_preprocess(dataset_id, args.gpu_memory_target, args.np, args.verify_dataset_integrity,
                                    args.clean, preprocess=not args.no_pp,
                                    target_spacing=args.overwrite_target_spacing)
        print(f"dataset {dataset_id}: plans {plans}; train with: nnUNetv2_train {dataset_id} 3d_fullres FOLD "
              f"-p {plans} -tr TRAINER")
    return 0


@_plan_and_preprocess.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", nargs="+", type=int, required=True, help="dataset id(s)")
    p.add_argument("-gpu_memory_target", type=float, default=8.0,
                   help="memory (GB) one training step may use, for the largest network on the plans (default 8)")
    p.add_argument("-np", type=int, default=4, help="processes for fingerprinting and preprocessing (default 4)")
    p.add_argument("--verify_dataset_integrity", action="store_true", help="run nnU-Net's dataset checks first")
    p.add_argument("--clean", action="store_true", help="re-extract an existing dataset fingerprint")
    p.add_argument("-overwrite_target_spacing", type=float, default=None, metavar="MM",
                   help="isotropic voxel size in mm (default: geometric mean of the median spacing)")
    p.add_argument("--no_pp", action="store_true", help="plan only, do not preprocess")


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


@command("compare", "accuracy, pose robustness and cost of several trainers on one dataset: one report "
                    "(docs/compare.md)")
def _compare(args: argparse.Namespace) -> int:
    from nnunet_equivariant.evaluation.compare import run_from_args

    return run_from_args(args)


@_compare.arguments
def _(p: argparse.ArgumentParser) -> None:
    from nnunet_equivariant.evaluation.compare import add_arguments

    add_arguments(p)


@command("demo", "train a steerable and a stock nnU-Net on a built-in synthetic dataset and compare them: "
                 "Dice, Dice against rotation angle, cost (no download)")
def _demo(args: argparse.Namespace) -> int:
    from nnunet_equivariant.demo import run_demo

    run_demo(args.output, quick=args.quick, device=args.device, overwrite=args.overwrite)
    return 0


@_demo.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", default="nnunet_equivariant_demo", help="folder for everything the demo writes")
    p.add_argument("--quick", action="store_true", help="a smoke run of a few minutes (untrained models)")
    p.add_argument("-device", choices=("cuda", "cpu", "mps"), default=None, help="default: cuda if available")
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo output folder")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
