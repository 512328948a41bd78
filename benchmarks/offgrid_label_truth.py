"""How much of the off-grid drop is the benchmark's own truth: label maps sampled at the voxel centres.

Issue 17's benchmark (``offgrid_training.py --anatomy aseg``) labels each test voxel by the class at its
centre (``synthetic_anatomy.render_pose``), while the image is the classes blurred by the point-spread
function. A structure a few voxels across gets a different label map from the same subject depending on how
the grid cuts it, and that part of the truth no image shows. This script renders, for the test poses of an
``offgrid_training.py`` output folder, the *partial-volume* label maps (the class covering most of each
voxel: ``synthetic_anatomy.partial_volume_classes``) into ``<test folder>_partial_volume/labels`` and

- compares the two truths (Dice per structure between centre and partial-volume labels, against angle): if
  they agree less off the grid than on it, a predictor that follows the image loses that much Dice off the
  grid against the benchmark's truth whatever its symmetry;
- with ``--predictions NAME ...`` (folders under ``<output>/predictions/<test folder>``), scores each model
  against both truths: mean deviation from the grid mean (``offgrid_training.grid_angles``) per angle over
  the seven structures, and the amygdala's and accumbens' mean drop at 30-45 degrees.

Usage: ``python benchmarks/offgrid_label_truth.py /work/runs/aseg3mm_t96 --predictions
nnUNetTrainerE3nnCompact_budget900scpu_seed0 [--csv docs/x.csv]``; prints markdown tables. The subjects are
re-made from the folder's poses and the benchmark's seed 0 and templates (``--train`` training subjects come
first in its random stream).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np
from offgrid_training import _case, _read_nifti, _rotation, _write_nifti, aseg_anatomy, dice_table, grid_angles


def _test_folder(output: Path, name: str) -> Path:
    folders = sorted(p for p in output.glob(f"test_{name}_*subjects_*") if (p / "done").is_file())
    if len(folders) != 1:
        raise FileNotFoundError(f"{output} must hold one finished test folder test_{name}_*subjects_*/done "
                                f"(offgrid_training.py), found {[p.name for p in folders]}")
    return folders[0]


def write_partial_volume_truth(test: Path, name: str, subjects: list, classes_at, num_classes: int, spacing,
                               shape) -> Path:
    """Partial-volume label maps of every test case of ``test`` (an ``offgrid_training.py`` test folder of
    the anatomy ``name``; ``subjects`` all its subjects, training ones first, ``classes_at(subject, points)``
    their labels) in ``<test>_partial_volume/labels``, named as the centre labels; cases already written are
    kept, each file is written under a temporary name and renamed."""
    from tqdm import tqdm

    from nnunet_equivariant.synthetic_anatomy import partial_volume_classes

    out = test.parent / f"{test.name}_partial_volume" / "labels"
    out.mkdir(parents=True, exist_ok=True)
    for i, axis, angle in tqdm(json.loads((test / "done").read_text())["poses"], desc="partial-volume labels"):
        path = out / f"{_case(name, i, axis, angle)}.nii.gz"
        if path.is_file():
            continue
        centre = _read_nifti(test / "labels" / path.name)
        labels = partial_volume_classes(lambda points: classes_at(subjects[i], points), shape, spacing,
                                        _rotation(axis, angle), num_classes)
        if labels.shape != centre.shape:
            raise ValueError(f"{test / 'labels' / path.name} has shape {centre.shape}, --shape gives {labels.shape}")
        temporary = path.with_name(f".{path.name}")
        _write_nifti(labels, spacing, temporary)
        os.replace(temporary, path)
    return out.parent


def deviations(rows: list[dict], spacing=None, shape=None) -> dict:
    """Mean Dice per structure and angle over test subjects and the three axes (0 degrees counted for each
    axis), minus each structure's mean at the grid angles about that axis (every multiple tested of
    ``offgrid_training.grid_angles``' period for ``spacing`` and ``shape``, as its goal; ``None``: cubic, 90
    degrees): ``{structure: {angle: deviation}}``."""
    per = {}
    for r in rows:
        if np.isnan(r["dice"]):
            continue
        axes = "xyz" if r["angle"] == 0 else r["axis"]
        for axis in axes:
            per.setdefault((r["structure"], axis, r["angle"]), []).append(r["dice"])
    mean = {key: float(np.mean(v)) for key, v in per.items()}
    out = {}
    for structure in dict.fromkeys(s for s, _, _ in mean):
        angles = sorted({a for s, _, a in mean if s == structure})
        grid = {axis: np.mean([mean[(structure, axis, a)] for a in angles
                               if a % grid_angles(axis, spacing, shape)[1] == 0 and (structure, axis, a) in mean])
                for axis in "xyz"}
        out[structure] = {a: float(np.mean([mean[(structure, axis, a)] - grid[axis] for axis in "xyz"
                                             if (structure, axis, a) in mean])) for a in angles}
    return out


def truth_agreement(test: Path, truth: Path, labels: dict) -> list[dict]:
    """Dice between the centre labels (``test``) and the partial-volume labels (``truth``) per case and
    structure: :func:`offgrid_training.dice_table` with the second as the prediction."""
    return dice_table(test, truth / "labels", labels)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="an offgrid_training.py --anatomy aseg output folder")
    parser.add_argument("--train", type=int, default=16, help="its --train (training subjects)")
    parser.add_argument("--spacing", type=float, nargs=3, default=[3.0, 3.0, 3.0])
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 32, 32])
    parser.add_argument("--train-templates", nargs="+", default=["MNI152NLin2009cAsym"])
    parser.add_argument("--test-templates", nargs="+", default=["MNI152NLin6Asym"])
    parser.add_argument("--predictions", nargs="*", default=[], help="prediction folder names to score")
    parser.add_argument("--csv", type=Path, help="write the deviations per truth, model, structure and angle")
    args = parser.parse_args(argv)

    from nnunet_equivariant.real_anatomy import LABELS, subject_classes

    spacing = tuple(args.spacing)
    anatomy = aseg_anatomy(spacing, args.train_templates, args.test_templates)
    test = _test_folder(args.output, anatomy.name)
    poses = json.loads((test / "done").read_text())["poses"]
    if min(i for i, _, _ in poses) != args.train:
        raise ValueError(f"{test}'s first test subject is {min(i for i, _, _ in poses)}, not --train {args.train}")
    subjects = anatomy.subjects(args.train, len({i for i, _, _ in poses}), 0)  # the benchmark's seed
    truth = write_partial_volume_truth(test, anatomy.name, subjects, subject_classes, len(LABELS), spacing,
                                       tuple(args.shape))
    labels = anatomy.labels
    agreement = truth_agreement(test, truth, labels)
    grid = {"spacing": spacing, "shape": tuple(args.shape)}
    table = [("centre labels against partial-volume labels", "agreement", deviations(agreement, **grid))]
    predictions = args.output / "predictions" / test.name
    for name in args.predictions:
        for which, folder in (("centre", test), ("partial volume", truth)):
            table.append((name, which, deviations(dice_table(folder, predictions / name, labels), **grid)))

    angles = sorted({a for _, _, d in table for s in d.values() for a in s
                     if any(a % grid_angles(axis, **grid)[1] for axis in "xyz")})  # off the grid about some axis
    print(f"\nMean deviation from the grid mean over the {len(table[0][2])} structures, "
          f"and drop at 30-45 degrees of the amygdala / accumbens ({test.name}):\n")
    print("| model | truth | " + " | ".join(f"{a:g}" for a in angles) + " | amygdala / accumbens at 30-45 |")
    print("|---|---|" + "---|" * (len(angles) + 1))
    for name, which, d in table:
        mean = [np.mean([d[s][a] for s in d if a in d[s]]) for a in angles]
        small = [-np.mean([d[s][a] for a in (30, 45) if a in d[s]]) if s in d else float("nan")
                 for s in ("amygdala", "accumbens")]
        print(f"| {name} | {which} | " + " | ".join(f"{m:+.3f}" for m in mean) + f" | {small[0]:.3f} / {small[1]:.3f} |")
    at_0 = {s: np.nanmean([r["dice"] for r in agreement if r["structure"] == s and r["angle"] == 0]) for s in table[0][2]}
    print("\nThe two truths per structure: Dice at 0 degrees, deviation from the grid mean per angle:\n")
    print("| structure | Dice at 0 | " + " | ".join(f"{a:g}" for a in angles) + " |")
    print("|---|---|" + "---|" * len(angles))
    for s, per in table[0][2].items():
        print(f"| {s} | {at_0[s]:.3f} | " + " | ".join(f"{per[a]:+.3f}" for a in angles) + " |")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["model", "truth", "structure", "angle", "deviation"])
            for name, which, d in table:
                for s, per in d.items():
                    writer.writerows([name, which, s, a, round(v, 5)] for a, v in per.items())


if __name__ == "__main__":
    main()
