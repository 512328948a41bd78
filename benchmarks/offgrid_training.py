"""Pose robustness off the grid on SynthSeg-style anatomy, trained in one pose through nnU-Net's commands.

1. Writes ``Dataset{id}_OffgridAnatomy`` (``nnunet_equivariant.synthetic_anatomy``): training subjects in
   the canonical pose; test subjects rendered in every pose (each ``--axes`` x ``--angles``) by evaluating
   the subject at rotated coordinates (no image interpolation; labels exact at every angle).
2. ``nnUNetv2_plan_and_preprocess`` with nnU-Net's default planner (3d_fullres).
3. ``nnUNetv2_train`` fold 0 of every trainer in ``--trainers`` with the same schedule (``--epochs`` x
   ``--iterations``): schedule shims ``<Trainer>_offgrid<E>x<I>`` (subclasses that only set the schedule)
   are written into ``<output>/trainers`` and added to ``nnUNet_extTrainer``.
4. ``nnUNetv2_predict`` of every test pose (one call per trainer; ``--disable_tta`` unless ``--tta``).
5. Dice per structure (mean over test subjects) against angle, in ``<output>/results/<E>x<I>_<test set>/``:
   ``dice_vs_angle.csv``, ``dice_vs_angle.md`` (the table, and the largest drop from 0 degrees per trainer and
   structure), ``dice_vs_angle.png`` and ``dice_per_case.csv``.

Runs on a GPU (``--device cuda``) or any CPU. The default schedule (12 epochs x 25 iterations) is what
docs/offgrid.md reports: on an idle 2-core CPU an epoch of ``nnUNetTrainerE3nn`` takes 70-80 s (stock 40 s),
the default trainers about 70 minutes in all. ``--continue-from E`` trains a longer schedule from the end of
the ``E``-epoch run (``nnUNetv2_train --c``). Every step is skipped when its output exists, so an interrupted
run resumes. Usage::

    python benchmarks/offgrid_training.py -o /tmp/offgrid_bench --device cpu
    python benchmarks/offgrid_training.py -o /tmp/offgrid_bench --device cpu --epochs 24 --continue-from 12 \\
        --trainers nnUNetTrainerE3nn
    python benchmarks/offgrid_training.py -o /data/offgrid_bench --device cuda --epochs 100 --iterations 50 \\
        --train 40 --test 10 --axes z x y

Needs an ``if __name__ == "__main__"`` guard (nnU-Net's preprocessing spawns workers).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np
from nnunet_runs import nnunet_env, run_command, schedule_trainer

DATASET_NAME = "OffgridAnatomy"
DEFAULT_TRAINERS = ("nnUNetTrainerE3nn", "nnUNetTrainerE3nnPaperBasis", "nnUNetTrainerE3nnAntialias",
                    "nnUNetTrainerE3nnLean", "nnUNetTrainerNoRot", "nnUNetTrainer")
AXES = {"x": 0, "y": 1, "z": 2}


def _rotation(axis: str, degrees: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler(axis, degrees, degrees=True).as_matrix()


def _write_nifti(array_xyz: np.ndarray, spacing, path: Path) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    sitk.WriteImage(img, str(path), useCompression=True)


def _read_nifti(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)


def _poses(axes, angles) -> list[tuple[str, float]]:
    """``("z", 0)`` once, then every (axis, angle != 0)."""
    return [(axes[0], 0.0)] + [(a, float(t)) for a in axes for t in angles if t != 0]


def _case(subject: int, axis: str, angle: float) -> str:
    return f"{DATASET_NAME}_{subject:03d}{axis}{int(round(angle)):03d}"


def write_dataset(raw: Path, dataset_id: int, n_train: int, n_test: int, shape, spacing, axes, angles,
                  seed: int) -> tuple[Path, Path]:
    """The training set (canonical pose) in nnU-Net's raw layout and the test poses beside it, in
    ``test_<n_test>subjects_<axes>`` (each written once: more test subjects or axes later make a new test
    folder and leave the training set, hence the trained models, as they are)."""
    from tqdm import tqdm

    from nnunet_equivariant.synthetic_anatomy import LABELS, render_subject, sample_subject

    dataset = raw / f"Dataset{dataset_id:03d}_{DATASET_NAME}"
    test = dataset.parent.parent / f"test_{n_test}subjects_{''.join(axes)}"
    jobs = [(i, a, t) for i in range(n_train, n_train + n_test) for a, t in _poses(axes, angles)]
    if (test / "done").is_file() and json.loads((test / "done").read_text())["poses"] != [list(j) for j in jobs]:
        raise FileExistsError(f"{test} holds other poses than --angles {angles}: remove it or use another --output")
    if (dataset / "dataset.json").is_file() and (test / "done").is_file():
        return dataset, test
    rng = np.random.default_rng(seed)  # subject i is the same for any number of test subjects
    subjects = [sample_subject(rng) for _ in range(n_train + n_test)]
    if not (dataset / "dataset.json").is_file():
        for sub in ("imagesTr", "labelsTr"):
            (dataset / sub).mkdir(parents=True, exist_ok=True)
        for i in tqdm(range(n_train), desc="training subjects"):
            image, label = render_subject(subjects[i], shape, spacing)
            _write_nifti(image, spacing, dataset / "imagesTr" / f"{DATASET_NAME}_{i:03d}_0000.nii.gz")
            _write_nifti(label, spacing, dataset / "labelsTr" / f"{DATASET_NAME}_{i:03d}.nii.gz")
        (dataset / "dataset.json").write_text(json.dumps({
            "channel_names": {"0": "synthetic"}, "labels": LABELS, "numTraining": n_train, "file_ending": ".nii.gz",
            "name": DATASET_NAME,
            "description": "SynthSeg-style anatomy in one pose (benchmarks/offgrid_training.py)"}, indent=2))
    elif json.loads((dataset / "dataset.json").read_text())["numTraining"] != n_train:
        raise FileExistsError(f"{dataset} has another number of training subjects than --train {n_train}")
    for sub in ("images", "labels"):
        (test / sub).mkdir(parents=True, exist_ok=True)
    for i, a, t in tqdm(jobs, desc="test poses"):
        image, label = render_subject(subjects[i], shape, spacing, _rotation(a, t))
        _write_nifti(image, spacing, test / "images" / f"{_case(i, a, t)}_0000.nii.gz")
        _write_nifti(label, spacing, test / "labels" / f"{_case(i, a, t)}.nii.gz")
    (test / "done").write_text(json.dumps({"poses": jobs}))
    return dataset, test


def dice_table(test: Path, predictions: Path, labels: dict) -> list[dict]:
    """Dice per case and structure (NaN when a structure is absent from both label and prediction)."""
    rows = []
    for label_file in sorted((test / "labels").glob("*.nii.gz")):
        case = label_file.name[:-len(".nii.gz")]
        prediction = predictions / label_file.name
        if not prediction.is_file():
            raise FileNotFoundError(f"no prediction {prediction} for test case {case}")
        ref, pred = _read_nifti(label_file), _read_nifti(prediction)
        subject, axis, angle = int(case[-7:-4]), case[-4], int(case[-3:])
        for name, value in labels.items():
            if value == 0:
                continue
            r, p = ref == value, pred == value
            denominator = r.sum() + p.sum()
            rows.append({"case": case, "subject": subject, "axis": axis, "angle": angle, "structure": name,
                         "dice": 2 * (r & p).sum() / denominator if denominator else float("nan")})
    return rows


def summarise(rows: list[dict], output: Path, title: str) -> None:
    """Mean Dice per trainer, axis, angle and structure: CSV, markdown table, PNG plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(output / "dice_per_case.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    trainers = list(dict.fromkeys(r["trainer"] for r in rows))
    structures = list(dict.fromkeys(r["structure"] for r in rows))
    angles = sorted({r["angle"] for r in rows})
    axes = list(dict.fromkeys(r["axis"] for r in rows if r["angle"] != 0))
    mean = {}
    for t in trainers:
        for s in structures:
            for a in axes:
                for angle in angles:
                    values = [r["dice"] for r in rows if r["trainer"] == t and r["structure"] == s
                              and r["angle"] == angle and (r["axis"] == a or angle == 0)]
                    mean[t, s, a, angle] = float(np.nanmean(values)) if values else float("nan")
    with open(output / "dice_vs_angle.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trainer", "structure", "axis", "angle", "mean_dice"])
        for (t, s, a, angle), v in mean.items():
            writer.writerow([t, s, a, angle, f"{v:.4f}"])
    lines = [f"# {title}", "", "| trainer | structure | axis | " + " | ".join(f"{a}°" for a in angles)
             + " | max drop |", "|---" * (len(angles) + 4) + "|"]
    for t in trainers:
        for s in structures:
            for a in axes:
                values = [mean[t, s, a, angle] for angle in angles]
                drop = values[0] - np.nanmin(values)
                lines.append(f"| {t} | {s} | {a} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {drop:.3f} |")
    (output / "dice_vs_angle.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    fig, axs = plt.subplots(len(axes), len(structures), figsize=(3.2 * len(structures), 2.8 * len(axes)),
                            squeeze=False, sharey=True)
    for i, a in enumerate(axes):
        for j, s in enumerate(structures):
            ax = axs[i, j]
            for t in trainers:
                ax.plot(angles, [mean[t, s, a, angle] for angle in angles], marker="o", label=t)
            ax.set_title(f"{s}, about {a}")
            ax.set_xlabel("angle (degrees)")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
        axs[i, 0].set_ylabel("mean Dice")
    axs[0, -1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(output / "dice_vs_angle.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", required=True, help="work folder (nnU-Net's folders live inside)")
    parser.add_argument("--trainers", nargs="+", default=list(DEFAULT_TRAINERS))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=25, help="iterations per epoch")
    parser.add_argument("--train", type=int, default=8, help="training subjects (canonical pose)")
    parser.add_argument("--test", type=int, default=3, help="test subjects (each rendered in every pose)")
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 32, 32])
    parser.add_argument("--axes", nargs="+", default=["z"], choices=sorted(AXES))
    parser.add_argument("--angles", type=float, nargs="+", default=[0, 15, 30, 45, 60, 90])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dataset-id", type=int, default=913)
    parser.add_argument("--tta", action="store_true", help="keep nnU-Net's test-time mirroring")
    parser.add_argument("--continue-from", type=int, metavar="EPOCHS",
                        help="start each trainer from its finished run of EPOCHS epochs (nnUNetv2_train --c; the "
                             "poly learning rate resumes at epoch EPOCHS of the longer schedule)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    out = Path(args.output).resolve()
    env = nnunet_env(out, args.device)
    log = out / "commands.log"
    spacing = (1.0, 1.0, 1.0)

    dataset, test = write_dataset(out / "nnUNet_raw", args.dataset_id, args.train, args.test, args.shape, spacing,
                                  args.axes, args.angles, args.seed)
    plans = out / "nnUNet_preprocessed" / dataset.name / "nnUNetPlans.json"
    if not plans.is_file():
        # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA): it must be >= 1 there
        run_command({**env, "nnUNet_n_proc_DA": "1"}, "nnUNetv2_plan_and_preprocess", "-d", args.dataset_id, "-c",
             "3d_fullres", "-np", "1", "--verify_dataset_integrity", log=log)
    rows = []
    for base in args.trainers:
        trainer = schedule_trainer(out / "trainers", base, args.epochs, args.iterations)
        model = out / "nnUNet_results" / dataset.name / f"{trainer}__nnUNetPlans__3d_fullres"
        if not (model / "fold_0" / "checkpoint_final.pth").is_file():
            resume = []
            if args.continue_from:  # a longer schedule that starts where the shorter run ended
                shorter = out / "nnUNet_results" / dataset.name / (
                    f"{schedule_trainer(out / 'trainers', base, args.continue_from, args.iterations)}"
                    "__nnUNetPlans__3d_fullres") / "fold_0" / "checkpoint_final.pth"
                if not shorter.is_file():
                    raise FileNotFoundError(f"--continue-from {args.continue_from}: no {shorter} to continue from")
                (model / "fold_0").mkdir(parents=True, exist_ok=True)
                # as checkpoint_latest: nnU-Net continues from it, and a failed run is not taken for a finished one
                shutil.copy2(shorter, model / "fold_0" / "checkpoint_latest.pth")
                resume = ["--c"]
            run_command(env, "nnUNetv2_train", args.dataset_id, "3d_fullres", "0", "-tr", trainer, "-device",
                        args.device, *resume, log=log)
        predictions = out / "predictions" / test.name / trainer
        if not (predictions / "done").is_file():
            run_command(env, "nnUNetv2_predict", "-i", test / "images", "-o", predictions, "-d", args.dataset_id,
                 "-c", "3d_fullres", "-tr", trainer, "-f", "0", "-device", args.device, "-npp", "0", "-nps", "0",
                 *([] if args.tta else ["--disable_tta"]), log=log)
            (predictions / "done").write_text("")
        labels = json.loads((dataset / "dataset.json").read_text())["labels"]
        rows += [{"trainer": base, **r} for r in dice_table(test, predictions, labels)]
    results = out / "results" / f"{args.epochs}x{args.iterations}_{test.name}"
    results.mkdir(parents=True, exist_ok=True)
    summarise(rows, results, f"{args.train} training subjects in one pose, {args.epochs} epochs x {args.iterations} "
                         f"iterations, {args.test} test subjects, {args.shape[0]}^3 at 1 mm, device {args.device}")


if __name__ == "__main__":
    main()
